"""Conversation storage on advanced-alchemy repositories, always filtered by owner: another
user's id is simply not found. Nothing here commits: the caller's unit of work does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import CursorResult, Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modules.conversations.models import Conversation, Message

# The tables themselves, for the Core statements that store turns (see `_insert_messages`).
CONVERSATIONS = cast(Table, Conversation.__table__)
MESSAGES = cast(Table, Message.__table__)


class ConversationNotFoundError(LookupError):
    def __init__(self, conversation_id: uuid.UUID) -> None:
        super().__init__(f"no conversation with id {conversation_id}")


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: str
    content: str
    # Handed out here, so that the turn knows its messages' ids (memory embeds them).
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generation_seconds: float | None = None
    time_to_first_token: float | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation stored with its first turn: its id is handed out when the turn starts,
    the row is written when the turn is stored."""

    owner_id: uuid.UUID
    title: str
    model: str
    system_prompt: str | None
    profile: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class ConversationRepository(SQLAlchemyAsyncRepository[Conversation]):
    model_type = Conversation


class MessageRepository(SQLAlchemyAsyncRepository[Message]):
    model_type = Message


class ConversationService(SQLAlchemyAsyncRepositoryService[Conversation, ConversationRepository]):
    repository_type = ConversationRepository

    @property
    def _messages(self) -> MessageRepository:
        return MessageRepository(session=self.repository.session)

    async def get_owned(self, owner_id: uuid.UUID, conversation_id: uuid.UUID) -> Conversation:
        conversation = await self.get_one_or_none(
            Conversation.id == conversation_id, Conversation.owner_id == owner_id
        )
        if conversation is None:
            raise ConversationNotFoundError(conversation_id)
        return conversation

    async def list_owned(
        self, owner_id: uuid.UUID, limit: int, offset: int
    ) -> tuple[Sequence[Conversation], int]:
        """Most recently used first."""
        return await self.get_many_and_count(
            Conversation.owner_id == owner_id,
            OrderBy("updated_at", "desc"),
            OrderBy("id", "asc"),
            LimitOffset(limit=limit, offset=offset),
        )

    async def messages(self, conversation_id: uuid.UUID) -> Sequence[Message]:
        return await self._messages.get_many(
            Message.conversation_id == conversation_id, OrderBy("position", "asc")
        )

    async def rename(
        self, owner_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation:
        conversation = await self.get_owned(owner_id, conversation_id)
        conversation.title = title
        return await self.update(conversation)

    async def remove(self, owner_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """Its messages go with it (ON DELETE CASCADE)."""
        conversation = await self.get_owned(owner_id, conversation_id)
        await self.delete(conversation.id)


provide_conversation_service = create_service_provider(ConversationService)


# Storing a turn: plain functions on the turn's own session, with Core statements on the
# tables rather than the ORM's unit of work. A turn's rows are written here and never read
# back, and this runs after every turn: the unit of work and a service object per turn cost
# the event loop more than the rest of the turn's storage. Column defaults (ids, timestamps)
# still apply.


async def store_first_turn(
    session: AsyncSession, conversation: NewConversation, messages: Sequence[NewMessage]
) -> None:
    """Store a new conversation with its first turn: two statements."""
    await session.execute(
        insert(CONVERSATIONS).values(
            id=conversation.id,
            owner_id=conversation.owner_id,
            title=conversation.title,
            model=conversation.model,
            system_prompt=conversation.system_prompt,
            profile=conversation.profile,
        )
    )
    await _insert_messages(session, conversation.id, 0, messages)


async def store_turn(
    session: AsyncSession, conversation_id: uuid.UUID, messages: Sequence[NewMessage]
) -> None:
    """Store a turn's messages after the ones already there, in one block. The
    conversation's row is locked first (PostgreSQL; SQLite has one writer at a time), so
    concurrent turns take their positions one after the other. Three statements."""
    # Touching the conversation (so "newest first" means most recently used) also locks its
    # row until the commit: one statement for both.
    touched = cast(
        "CursorResult[Any]",
        await session.execute(
            update(CONVERSATIONS)
            .where(CONVERSATIONS.c.id == conversation_id)
            .values(updated_at=datetime.now(UTC))
        ),
    )
    if touched.rowcount == 0:  # deleted while the turn ran
        raise ConversationNotFoundError(conversation_id)
    last = await session.scalar(
        select(func.max(MESSAGES.c.position)).where(MESSAGES.c.conversation_id == conversation_id)
    )
    await _insert_messages(session, conversation_id, 0 if last is None else int(last) + 1, messages)


async def _insert_messages(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    first: int,
    messages: Sequence[NewMessage],
) -> None:
    if not messages:
        return
    await session.execute(
        insert(MESSAGES),
        [
            {
                "id": message.id,
                "conversation_id": conversation_id,
                "position": first + offset,
                "role": message.role,
                "content": message.content,
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "generation_seconds": message.generation_seconds,
                "time_to_first_token": message.time_to_first_token,
                "finish_reason": message.finish_reason,
                "tool_calls": message.tool_calls,
                "tool_call_id": message.tool_call_id,
            }
            for offset, message in enumerate(messages)
        ],
    )
