"""The embedding service: the one place inputs are embedded, whichever API asks.

In order: admission (requests in flight, the request limit, the token budgets), the
request's limits (inputs, characters), the model (the one asked for, no fallback: vectors
of two models are not comparable) and its capability, every text input sanitized and
every input measured in tokens (each refused by its index: `input[i]`), the tokens set
aside, the vectors, then the charge of what the model read; the place is released however
it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modules.config import Settings
from modules.llm.inference import Backend, Finished, ModelRegistry
from modules.llm.inference.embeddings import (
    EmbeddingInput,
    EmbeddingOptions,
    EmbeddingRequest,
    Embeddings,
)
from modules.llm.turns.admission import Admission, Ticket
from modules.llm.turns.options import InvalidTurnRequest
from modules.llm.turns.preparation import PromptPreparer
from modules.sanitizer import SanitizationError


@dataclass(frozen=True, slots=True)
class EmbeddingQuery:
    """What a front end asks: texts or token ids, in order."""

    inputs: tuple[EmbeddingInput, ...]
    model: str | None = None
    options: EmbeddingOptions = field(default_factory=EmbeddingOptions)


@dataclass(frozen=True, slots=True)
class EmbeddingAnswer:
    model: str
    embeddings: Embeddings
    sanitized: tuple[int, ...]  # the inputs the sanitizer changed


@dataclass(frozen=True, slots=True)
class EmbeddingService:
    """Request-scoped: one caller's embeddings."""

    settings: Settings
    registry: ModelRegistry
    preparer: PromptPreparer
    admission: Admission
    owner: str
    log: dict[str, Any]  # fields for this request's log line

    async def embed(self, query: EmbeddingQuery) -> EmbeddingAnswer:
        ticket = await self.admission.admit()  # over a limit: 429 before any work
        try:
            return await self._embed(query, ticket)
        finally:
            await ticket.release()

    async def _embed(self, query: EmbeddingQuery, ticket: Ticket) -> EmbeddingAnswer:
        self._check_size(query.inputs)
        backend = self.registry.get(query.model)  # an unknown name: 404
        if not backend.capabilities.embeddings:
            has = ", ".join(backend.capabilities.names())
            raise InvalidTurnRequest(
                f"model {backend.alias!r} does not support embeddings (it supports: {has})",
                field="model",
                status_code=400,
            )
        async with self.preparer.lane.slot(self.owner):
            request, sanitized = await asyncio.to_thread(self._prepare, backend, query)
        limit = self.settings.llm_embedding_max_tokens
        if request.total_tokens > limit:
            raise InvalidTurnRequest(
                f"the inputs hold {request.total_tokens} tokens; the limit is {limit} "
                "(LLM_EMBEDDING_MAX_TOKENS)",
                field="input",
                status_code=400,
            )
        await ticket.reading(request.total_tokens)
        timeout = self.settings.llm_request_timeout_seconds
        try:
            embeddings = await backend.embed(request, within_seconds=timeout)
        except asyncio.CancelledError:
            # The client left: what the model may have read already is charged.
            await ticket.charge(Finished("cancelled", request.total_tokens, 0))
            raise
        await ticket.charge(Finished("stop", embeddings.prompt_tokens, 0))
        self.log["tokens"] = embeddings.prompt_tokens
        return EmbeddingAnswer(backend.alias, embeddings, sanitized)

    def _check_size(self, inputs: Sequence[EmbeddingInput]) -> None:
        settings = self.settings
        if not inputs:
            raise InvalidTurnRequest("input is empty", field="input", status_code=400)
        if len(inputs) > settings.llm_embedding_max_inputs:
            raise InvalidTurnRequest(
                f"{len(inputs)} inputs; the limit is {settings.llm_embedding_max_inputs} "
                "(LLM_EMBEDDING_MAX_INPUTS)",
                field="input",
                status_code=400,
            )
        chars = sum(len(item) for item in inputs if isinstance(item, str))
        if chars > settings.sanitizer_max_request_chars:
            raise InvalidTurnRequest(
                f"the inputs hold {chars} characters; the limit is "
                f"{settings.sanitizer_max_request_chars} (SANITIZER_MAX_REQUEST_CHARS)",
                field="input",
                status_code=400,
            )

    def _prepare(
        self, backend: Backend, query: EmbeddingQuery
    ) -> tuple[EmbeddingRequest, tuple[int, ...]]:
        """Blocking (cleaning, tokenizing): every text cleaned, every input measured."""
        sanitizer = self.preparer.sanitizer_for(backend)
        cleaned: list[EmbeddingInput] = []
        changed: list[int] = []
        for index, item in enumerate(query.inputs):
            if not isinstance(item, str):
                cleaned.append(item)
                continue
            where = f"input[{index}]"
            try:
                clean = sanitizer.clean(item, field_name=where)
            except SanitizationError as exc:
                raise InvalidTurnRequest(str(exc), field=where, status_code=400) from exc
            cleaned.append(clean.text)
            if clean.changed:
                changed.append(index)
        return backend.embedding_request(cleaned, query.options), tuple(changed)
