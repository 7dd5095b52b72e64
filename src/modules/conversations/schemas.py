"""Bodies of the /conversations routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from modules.conversations.models import Conversation, Message

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ConversationRead(msgspec.Struct):
    id: uuid.UUID
    title: str
    model: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, conversation: Conversation) -> ConversationRead:
        return msgspec.convert(conversation, cls, from_attributes=True)


class MessageRead(msgspec.Struct):
    id: uuid.UUID
    role: str
    content: str
    created_at: datetime
    prompt_tokens: int | None
    completion_tokens: int | None
    generation_seconds: float | None
    time_to_first_token: float | None
    # An answer's ending; "cancelled": stopped by its client, kept with what it had said.
    finish_reason: str | None = None
    # An assistant's tool calls (OpenAI's shape), and the call a "tool" message answers.
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @classmethod
    def from_model(cls, message: Message) -> MessageRead:
        return msgspec.convert(message, cls, from_attributes=True)


class ConversationDetail(ConversationRead):
    system_prompt: str | None = None  # one the user sent; a profile's stays the admin's
    profile: str | None = None
    messages: list[MessageRead] = msgspec.field(default_factory=list)


class ConversationPage(msgspec.Struct):
    items: list[ConversationRead]
    total: int
    limit: int
    offset: int


class ConversationUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
