"""A chat turn with memory: load the owner's history, generate, store both sides."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from modules.conversations import (
    Conversation,
    ConversationService,
    NewMessage,
    title_from,
)
from modules.llm.chat import ChatMessage
from modules.llm.engine import EngineUnavailableError, Finished, GenerationHandle
from modules.llm.service import GenerationService, PreparedGeneration

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
Prepare = Callable[[Sequence[ChatMessage], str | None], Awaitable[PreparedGeneration]]


@dataclass
class Turn:
    conversation_id: uuid.UUID
    prepared: PreparedGeneration
    handle: GenerationHandle | None = None


class ConversationTurns:
    """Request-scoped: one user's turns on the request's database session."""

    def __init__(
        self,
        generation: GenerationService | None,
        conversations: ConversationService,
        session_factory: SessionFactory,
        owner_id: uuid.UUID,
    ) -> None:
        self.generation = generation
        self.conversations = conversations
        self.session_factory = session_factory
        self.owner_id = owner_id

    async def begin(
        self, conversation_id: uuid.UUID | None, prepare: Prepare, *, start: bool = True
    ) -> Turn:
        """Build the prompt from the stored history (404 for someone else's id), make the
        conversation if there is none yet, and (unless `start=False`) queue the generation."""
        if self.generation is None:
            raise EngineUnavailableError("the model is not loaded")
        conversation: Conversation | None = None
        history: list[ChatMessage] = []
        if conversation_id is not None:
            conversation = await self.conversations.get_owned(self.owner_id, conversation_id)
            history = [
                ChatMessage(m.role, m.content)
                for m in await self.conversations.messages(conversation.id)
            ]
        prepared = await prepare(history, conversation.system_prompt if conversation else None)
        if conversation is None:
            first_user = next(
                (m.content for m in prepared.new_messages if m.role == "user"), "New conversation"
            )
            conversation = await self.conversations.create(
                self.owner_id,
                title=title_from(first_user),
                model=self.generation.model_name,
                system_prompt=prepared.system,
            )
            await self.conversations.session.commit()
        turn = Turn(conversation.id, prepared)
        if start:
            self.start(turn)
        return turn

    def start(self, turn: Turn) -> GenerationHandle:
        assert self.generation is not None
        turn.handle = self.generation.start(turn.prepared, owner=str(self.owner_id))
        return turn.handle

    @staticmethod
    def _messages(turn: Turn, text: str, finished: Finished) -> list[NewMessage]:
        new = [NewMessage(m.role, m.content) for m in turn.prepared.new_messages]
        if new:
            new[-1] = NewMessage(
                new[-1].role, new[-1].content, prompt_tokens=finished.prompt_tokens
            )
        new.append(
            NewMessage(
                "assistant",
                text,
                completion_tokens=finished.completion_tokens,
                generation_seconds=round(finished.generation_seconds, 4),
                time_to_first_token=round(finished.time_to_first_token, 4),
            )
        )
        return new

    async def store(self, turn: Turn, text: str, finished: Finished) -> None:
        """Store the turn on the request's session (whole answers)."""
        await self.conversations.append(turn.conversation_id, self._messages(turn, text, finished))

    async def store_detached(self, turn: Turn, text: str, finished: Finished) -> None:
        """Store the turn on a fresh session: a stream outlives its request's session."""
        async with self.session_factory() as session:
            await ConversationService(session).append(
                turn.conversation_id, self._messages(turn, text, finished)
            )
