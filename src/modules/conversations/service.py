"""Conversation storage, always filtered by owner: another user's id is simply not found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modules.conversations.models import Conversation, Message


class ConversationNotFoundError(LookupError):
    def __init__(self, conversation_id: uuid.UUID) -> None:
        super().__init__(f"no conversation with id {conversation_id}")


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: str
    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generation_seconds: float | None = None
    time_to_first_token: float | None = None


def title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class ConversationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_owned(self, owner_id: uuid.UUID, conversation_id: uuid.UUID) -> Conversation:
        conversation = await self.session.scalar(
            select(Conversation).where(
                Conversation.id == conversation_id, Conversation.owner_id == owner_id
            )
        )
        if conversation is None:
            raise ConversationNotFoundError(conversation_id)
        return conversation

    async def messages(self, conversation_id: uuid.UUID) -> list[Message]:
        result = await self.session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.position)
        )
        return list(result)

    async def create(
        self, owner_id: uuid.UUID, title: str, model: str, system_prompt: str | None
    ) -> Conversation:
        conversation = Conversation(
            owner_id=owner_id,
            title=title or "New conversation",
            model=model,
            system_prompt=system_prompt,
        )
        self.session.add(conversation)
        await self.session.flush()
        return conversation

    async def list_owned(
        self, owner_id: uuid.UUID, limit: int, offset: int
    ) -> tuple[list[Conversation], int]:
        total = await self.session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.owner_id == owner_id)
        )
        result = await self.session.scalars(
            select(Conversation)
            .where(Conversation.owner_id == owner_id)
            .order_by(Conversation.updated_at.desc(), Conversation.id)
            .limit(limit)
            .offset(offset)
        )
        return list(result), int(total or 0)

    async def rename(
        self, owner_id: uuid.UUID, conversation_id: uuid.UUID, title: str
    ) -> Conversation:
        conversation = await self.get_owned(owner_id, conversation_id)
        conversation.title = title
        await self.session.commit()
        return conversation

    async def delete(self, owner_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        conversation = await self.get_owned(owner_id, conversation_id)
        await self.session.execute(
            delete(Message).where(Message.conversation_id == conversation.id)
        )
        await self.session.delete(conversation)
        await self.session.commit()

    async def append(self, conversation_id: uuid.UUID, new: Sequence[NewMessage]) -> None:
        """Store a turn's messages after the ones already there, then commit."""
        last = await self.session.scalar(
            select(func.max(Message.position)).where(Message.conversation_id == conversation_id)
        )
        position = -1 if last is None else int(last)
        for message in new:
            position += 1
            self.session.add(
                Message(
                    conversation_id=conversation_id,
                    position=position,
                    role=message.role,
                    content=message.content,
                    prompt_tokens=message.prompt_tokens,
                    completion_tokens=message.completion_tokens,
                    generation_seconds=message.generation_seconds,
                    time_to_first_token=message.time_to_first_token,
                )
            )
        # Touch the conversation so "newest first" means most recently used.
        await self.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(updated_at=datetime.now(UTC))
        )
        await self.session.commit()
