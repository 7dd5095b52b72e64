"""Stored Responses API answers: what `GET /v1/responses/{id}` returns and what
`previous_response_id` continues."""

from __future__ import annotations

import uuid
from typing import Any

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import GUID
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column


class StoredResponse(UUIDAuditBase):
    """One answered response. Its public id is `resp_` and this row's id in hex; the turn it
    answered is the last turn of `conversation_id` when it was stored."""

    __tablename__ = "responses"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The conversation goes, its responses go with it: nothing left to continue.
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    # The response object as it was answered (output items, usage, the request's echoed
    # fields): returned as is.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
