"""Profiles: a named system prompt plus default generation settings (a character, a role)."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.base import UUIDAuditBase
from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class Profile(UUIDAuditBase):
    __tablename__ = "profiles"

    name: Mapped[str] = mapped_column(String(100), unique=True, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
