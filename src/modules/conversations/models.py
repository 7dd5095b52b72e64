"""Conversations and their messages."""

from __future__ import annotations

import uuid
from typing import Any

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import GUID
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Conversation(UUIDAuditBase):
    __tablename__ = "conversations"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    # A profile's conversation names it; its (admin-only) system prompt is not copied here.
    profile: Mapped[str | None] = mapped_column(String(100), default=None)
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        order_by="Message.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="noload",
    )


class Message(UUIDAuditBase):
    """One turn's message; `content` is what the model saw (sanitized) or said."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_position"),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    generation_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    time_to_first_token: Mapped[float | None] = mapped_column(Float, default=None)
    # An answer's ending: stop, length, timeout, or cancelled (stopped by its client and
    # kept with what it had said).
    finish_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    # An assistant's tool calls, in OpenAI's shape ({id, type, function: {name,
    # arguments}}), and for a "tool" message the call it answers.
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    tool_call_id: Mapped[str | None] = mapped_column(String(64), default=None)
    conversation: Mapped[Conversation] = relationship(back_populates="messages", lazy="noload")
