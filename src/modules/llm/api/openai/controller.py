"""/v1: OpenAI-compatible chat completions, completions and models. Each route only
translates formats; the turn service does the turn."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEventMessage

from modules.llm.api.openai.answers import (
    AnswerIds,
    ChatChunks,
    TextChunks,
    chat_completion,
    text_completion,
)
from modules.llm.api.openai.errors import OpenAIError
from modules.llm.api.openai.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ModelCard,
    ModelCards,
    TextCompletion,
)
from modules.llm.api.openai.translate import chat_turn, completion_turn
from modules.llm.api.streaming import (
    STREAM_FAILED,
    event_stream,
    request_id_of,
    sse,
    whole_answer,
)
from modules.llm.inference import Finished, ModelRegistry
from modules.llm.turns import Turn, TurnService

# /v1 answers errors in OpenAI's shape, not as problem details.
ERRORS = {
    status: ResponseSpec(data_container=ErrorBody, description=description)
    for status, description in (
        (400, "Invalid request (OpenAI error shape)"),
        (401, "Missing or invalid credentials"),
        (404, "Unknown model or conversation"),
        (429, "Rate limit or quota exceeded"),
        (503, "The model or the database is unavailable"),
    )
}

Chunks = ChatChunks | TextChunks


async def _openai_stream(
    turn: Turn, chunks: Chunks, include_usage: bool, request_id: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for event in turn.events():
            if isinstance(event, Finished):
                for chunk in chunks.finished(event):
                    yield sse(chunk)
                if include_usage:
                    yield sse(chunks.usage(event))
            else:
                yield sse(chunks.of(event))
    except Exception:  # logged by the turn; the client gets a stable message, no internals
        yield _error_event(STREAM_FAILED, request_id)
        return
    yield ServerSentEventMessage(data="[DONE]")


def _error_event(detail: str, request_id: str | None) -> ServerSentEventMessage:
    """OpenAI's error object as a data line (and no [DONE])."""
    error = OpenAIError(detail, status=503, error_type="server_error", request_id=request_id)
    return sse(error.body())


class OpenAIController(Controller):
    path = "/v1"
    tags = ("openai",)

    @get("/models")
    async def models(self, model_registry: NamedDependency[ModelRegistry]) -> ModelCards:
        """The loaded models, as OpenAI's model list; each card also lists what the model
        can be asked for (`capabilities`: chat, completion, embeddings, ...)."""
        return ModelCards(
            data=[
                ModelCard(
                    id=model.alias,
                    created=model.created,
                    capabilities=list(model.description.capabilities.names())
                    if model.description is not None
                    else [],
                )
                for model in model_registry.describe_all()
                if model.state == "loaded"
            ]
        )

    @post("/chat/completions", status_code=200, responses=ERRORS)
    async def chat_completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatCompletionRequest],
        turn_service: NamedDependency[TurnService],
    ) -> ChatCompletion:
        """OpenAI chat completions, whole or streamed. Extensions (the openai SDK sends them
        with `extra_body`): `conversation_id` continues a stored conversation, `profile`
        applies an admin-managed profile, `use_cache` (default true) allows the cache."""
        turn = await turn_service.start(chat_turn(data))
        ids = AnswerIds(
            f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), turn.model, turn.conversation_id
        )
        logprobs = bool(data.logprobs)
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return event_stream(
                ChatCompletion,
                _openai_stream(
                    turn, ChatChunks(ids, logprobs), include_usage, request_id_of(request)
                ),
                _error_event,
                headers={"X-Conversation-Id": str(turn.conversation_id)},
            )
        completion = await whole_answer(request, turn)
        return chat_completion(ids, completion, logprobs=logprobs)

    @post("/completions", status_code=200, responses=ERRORS)
    async def completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CompletionRequest],
        turn_service: NamedDependency[TurnService],
    ) -> TextCompletion:
        """OpenAI text completions: the prompt continued as is, without a chat template."""
        turn = await turn_service.start(completion_turn(data))
        ids = AnswerIds(f"cmpl-{uuid.uuid4().hex}", int(time.time()), turn.model)
        logprobs = data.logprobs is not None
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return event_stream(
                TextCompletion,
                _openai_stream(
                    turn, TextChunks(ids, logprobs), include_usage, request_id_of(request)
                ),
                _error_event,
            )
        completion = await whole_answer(request, turn)
        return text_completion(ids, completion, logprobs=logprobs)
