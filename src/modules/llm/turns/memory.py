"""Memory on the turn side: stored messages embedded in the background of a turn's
settlement, searched by meaning, and recalled into a turn (`memory: k`).

The embedding model is MEMORY_EMBEDDING_MODEL, or the default model where it can embed;
otherwise memory is off. Vectors of two models are not comparable: a search reads only the
vectors of the model that embeds now.

What is charged: a search's query goes through admission like a /v1/embeddings input
(request limit, token budgets). The background embedding of stored messages and the
embedding of a turn's own question to recall with are not charged: they read text the
turn already paid for, at most MEMORY_MAX_CHARS of each message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from modules.config import Settings
from modules.llm.inference import Backend, BackendUnavailableError, ModelRegistry
from modules.llm.inference.embeddings import EmbeddingOptions, Vector
from modules.llm.turns.embeddings import EmbeddingQuery, EmbeddingService
from modules.llm.turns.options import InvalidTurnRequest
from modules.llm.turns.preparation import PromptPreparer
from modules.memory import MemoryHit, MemoryIndex, NewEmbedding, SearchResult
from modules.sanitizer import SanitizationError

logger = structlog.get_logger(__name__)
# Stored turns waiting to be embedded; beyond, a turn's messages are not embedded (logged).
MAX_PENDING = 256
# Background embeddings running at once: the chat turns keep the model's attention.
CONCURRENT_EMBEDS = 2


@dataclass(frozen=True, slots=True)
class StoredText:
    message_id: uuid.UUID
    role: str
    text: str


class Memory:
    """App-wide: the embedding model, the background embedding of stored turns, recall."""

    def __init__(self, settings: Settings, sessions: Any, preparer: PromptPreparer) -> None:
        self.settings = settings
        self.sessions = sessions
        self.preparer = preparer
        self.index = MemoryIndex(settings.memory_search)
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate: asyncio.Semaphore | None = None
        self.failures = 0

    def model(self, registry: ModelRegistry) -> Backend | None:
        """The backend that embeds memory, or None: memory is off."""
        if not self.settings.memory_enabled:
            return None
        alias = self.settings.memory_embedding_model or registry.default_alias
        try:
            backend = registry.get(alias)
        except (LookupError, BackendUnavailableError):  # unknown, or not loaded (yet)
            return None
        return backend if backend.capabilities.embeddings else None

    def remember(
        self,
        registry: ModelRegistry,
        owner_id: uuid.UUID,
        conversation_id: uuid.UUID,
        messages: Sequence[StoredText],
    ) -> None:
        """Embed and store the messages in the background; a failure is logged, never the
        turn's."""
        backend = self.model(registry)
        texts = [m for m in messages if m.text.strip() and m.role in ("user", "assistant")]
        if backend is None or not texts:
            return
        if len(self._tasks) >= MAX_PENDING:
            logger.warning("memory: too many turns waiting to be embedded; skipped one")
            return
        task = asyncio.get_running_loop().create_task(
            self._embed_and_store(backend, owner_id, conversation_id, texts)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Turns whose embedding has not finished yet."""
        return len(self._tasks)

    async def drain(self, within_seconds: float = 30) -> None:
        """Wait for the background embeddings (shutdown, tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within_seconds)

    async def _embed_and_store(
        self,
        backend: Backend,
        owner_id: uuid.UUID,
        conversation_id: uuid.UUID,
        messages: Sequence[StoredText],
    ) -> None:
        if self._gate is None:
            self._gate = asyncio.Semaphore(CONCURRENT_EMBEDS)
        try:
            async with self._gate:
                vectors = await self.embed_texts(backend, [m.text for m in messages])
            rows = [
                NewEmbedding(m.message_id, owner_id, conversation_id, backend.alias, vector)
                for m, vector in zip(messages, vectors, strict=True)
                if vector is not None
            ]
            async with self.sessions() as session:
                await self.index.store(session, rows)
                await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the turn is stored and answered: memory just lacks it
            self.failures += 1
            logger.warning("memory: could not embed a turn", error=type(exc).__name__)

    async def embed_texts(self, backend: Backend, texts: Sequence[str]) -> list[Vector | None]:
        """Each text cleaned and cut to MEMORY_MAX_CHARS, then embedded; None for one the
        sanitizer or the model refuses (too long, empty after cleaning)."""
        cleaned = await asyncio.to_thread(self._clean, backend, texts)
        usable = [index for index, text in enumerate(cleaned) if text]
        inputs = [text for text in cleaned if text]
        vectors: list[Vector | None] = [None] * len(texts)
        if not usable:
            return vectors
        timeout = self.settings.llm_request_timeout_seconds
        try:
            request = await asyncio.to_thread(backend.embedding_request, inputs, EmbeddingOptions())
        except ValueError:  # one input refused (its length): each on its own
            for index, text in zip(usable, inputs, strict=True):
                try:
                    one = await asyncio.to_thread(
                        backend.embedding_request, [text], EmbeddingOptions()
                    )
                except ValueError:
                    continue
                vectors[index] = (await backend.embed(one, within_seconds=timeout)).vectors[0]
            return vectors
        embeddings = await backend.embed(request, within_seconds=timeout)
        for index, vector in zip(usable, embeddings.vectors, strict=True):
            vectors[index] = vector
        return vectors

    def _clean(self, backend: Backend, texts: Sequence[str]) -> list[str | None]:
        sanitizer = self.preparer.sanitizer_for(backend)
        limit = self.settings.memory_max_chars
        cleaned: list[str | None] = []
        for text in texts:
            try:
                cleaned.append(sanitizer.clean(text[:limit]).text or None)
            except SanitizationError:
                cleaned.append(None)
        return cleaned

    async def recall(
        self,
        registry: ModelRegistry,
        owner_id: uuid.UUID,
        text: str,
        k: int,
        exclude_conversation: uuid.UUID | None,
    ) -> list[MemoryHit]:
        """The owner's `k` stored messages nearest to `text`, from conversations other
        than `exclude_conversation`, most similar first; none where memory is off."""
        backend = self.model(registry)
        if backend is None:
            raise InvalidTurnRequest(
                "memory is off on this server (MEMORY_ENABLED, MEMORY_EMBEDDING_MODEL)",
                field="memory",
                status_code=400,
            )
        vector = (await self.embed_texts(backend, [text]))[0]
        if vector is None:
            return []
        async with self.sessions() as session:
            return await self.index.nearest(
                session,
                owner_id,
                backend.alias,
                vector,
                k,
                exclude_conversation=exclude_conversation,
            )


@dataclass(frozen=True, slots=True)
class MemorySearcher:
    """Request-scoped: one caller's searches (`modules.memory.MemorySearch`)."""

    memory: Memory
    registry: ModelRegistry
    embeddings: EmbeddingService
    owner_id: uuid.UUID

    async def search(self, query: str, limit: int) -> SearchResult:
        backend = self.memory.model(self.registry)
        if backend is None:
            raise InvalidTurnRequest(
                "memory search is off on this server (MEMORY_ENABLED, MEMORY_EMBEDDING_MODEL)",
                field="q",
                status_code=400,
            )
        if not query.strip():
            raise InvalidTurnRequest("q is empty", field="q", status_code=400)
        text = query[: self.memory.settings.memory_max_chars]
        try:  # admitted and charged like an embeddings request
            answer = await self.embeddings.embed(EmbeddingQuery((text,), model=backend.alias))
        except InvalidTurnRequest as exc:
            raise InvalidTurnRequest(exc.detail, field="q", status_code=exc.status_code) from exc
        async with self.memory.sessions() as session:
            hits = await self.memory.index.nearest(
                session, self.owner_id, backend.alias, answer.embeddings.vectors[0], limit
            )
        return SearchResult(backend.alias, hits)
