"""The users table."""

from __future__ import annotations

from advanced_alchemy.base import UUIDAuditBase
from sqlalchemy import Boolean, String, true
from sqlalchemy.orm import Mapped, mapped_column

ROLE_USER = "user"
ROLE_ADMIN = "admin"
ROLES = (ROLE_USER, ROLE_ADMIN)


class User(UUIDAuditBase):
    """An account. `email` is stored lower-cased, so uniqueness is case-insensitive."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=ROLE_USER, server_default=ROLE_USER)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN
