"""/v1: OpenAI-compatible chat completions, completions and models. Each route only
translates formats; the turn service does the turn."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEventMessage

from modules.llm.api.openai.errors import OpenAIError
from modules.llm.api.openai.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    CompletionRequest,
    ErrorBody,
    ModelCard,
    ModelCards,
    TextChoice,
    TextCompletion,
)
from modules.llm.api.openai.translate import chat_turn, completion_turn, finish_reason
from modules.llm.api.schemas import Usage
from modules.llm.api.streaming import (
    STREAM_FAILED,
    event_stream,
    request_id_of,
    sse,
    whole_answer,
)
from modules.llm.inference import Finished, ModelRegistry, TokenDelta
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

# Builds one chunk from (text delta, finish reason or None); `usage` is added by the stream.
ChunkOf = Callable[[str | None, str | None], ChatCompletionChunk | TextCompletion]


async def _openai_stream(
    turn: Turn, chunk_of: ChunkOf, include_usage: bool, request_id: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for event in turn.events():
            if isinstance(event, Finished):
                yield sse(chunk_of(None, finish_reason(event)))
                if include_usage:
                    final = chunk_of(None, None)
                    final.choices = []
                    final.usage = Usage.of(event)
                    yield sse(final)
            elif isinstance(event, TokenDelta):
                yield sse(chunk_of(event.text, None))
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
        """The loaded models, as OpenAI's model list."""
        return ModelCards(
            data=[
                ModelCard(id=model.alias, created=model.created)
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
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if data.stream:
            first = True

            def chunk_of(text: str | None, finish: str | None) -> ChatCompletionChunk:
                nonlocal first
                delta = {"content": text} if text is not None else {}
                if first:
                    delta = {"role": "assistant", **delta}
                    first = False
                return ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=turn.model,
                    conversation_id=turn.conversation_id,
                    choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
                )

            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return event_stream(
                ChatCompletion,
                _openai_stream(turn, chunk_of, include_usage, request_id_of(request)),
                _error_event,
                headers={"X-Conversation-Id": str(turn.conversation_id)},
            )
        completion = await whole_answer(request, turn)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=turn.model,
            conversation_id=turn.conversation_id,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(content=completion.text),
                    finish_reason=finish_reason(completion.finished),
                )
            ],
            usage=Usage.of(completion.finished),
        )

    @post("/completions", status_code=200, responses=ERRORS)
    async def completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CompletionRequest],
        turn_service: NamedDependency[TurnService],
    ) -> TextCompletion:
        """OpenAI text completions: the prompt continued as is, without a chat template."""
        turn = await turn_service.start(completion_turn(data))
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk_of(text: str | None, finish: str | None) -> TextCompletion:
            return TextCompletion(
                id=completion_id,
                created=created,
                model=turn.model,
                choices=[TextChoice(index=0, text=text or "", finish_reason=finish)],
            )

        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return event_stream(
                TextCompletion,
                _openai_stream(turn, chunk_of, include_usage, request_id_of(request)),
                _error_event,
            )
        completion = await whole_answer(request, turn)
        whole = chunk_of(completion.text, finish_reason(completion.finished))
        whole.usage = Usage.of(completion.finished)
        return whole
