"""/llm/generate: a turn in this service's own shape, whole or as Server-Sent Events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEventMessage

from modules.auth import requires_admin
from modules.cache import ResponseCache
from modules.llm.api.schemas import (
    CacheCleared,
    GenerateRequest,
    GenerateResponse,
    StreamDone,
    StreamStart,
    Timings,
    Usage,
)
from modules.llm.api.streaming import (
    STREAM_FAILED,
    event_stream,
    request_id_of,
    sse,
    whole_answer,
)
from modules.llm.inference import Finished, SamplingParams, TokenDelta
from modules.llm.turns import InputMessage, InvalidTurnRequest, Turn, TurnRequest, TurnService


def to_turn_request(data: GenerateRequest) -> TurnRequest:
    if (data.prompt is None) == (data.messages is None):
        raise InvalidTurnRequest(
            "exactly one of 'prompt' or 'messages' is required", field="prompt", status_code=400
        )
    if data.profile and data.character_name and data.profile != data.character_name:
        raise InvalidTurnRequest(
            "'profile' and 'character_name' name different profiles; send one",
            field="profile",
            status_code=400,
        )
    _refuse_openai_only(data)
    messages = (
        [InputMessage("user", data.prompt, "prompt")]
        if data.prompt is not None
        else [
            InputMessage(m.role, m.content, f"messages[{i}].content")
            for i, m in enumerate(data.messages or [])
        ]
    )
    return TurnRequest(
        messages=messages,
        system=data.system,
        settings=data.settings,
        model=data.model,
        conversation_id=data.conversation_id,
        use_cache=data.use_cache,
        profile=data.profile or data.character_name,
        memory=data.memory,
    )


# Settings whose answers this route has no shape for: /v1/chat/completions has them.
_OPENAI_ONLY = ("tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "n")


def _refuse_openai_only(data: GenerateRequest) -> None:
    defaults = SamplingParams()
    for name in _OPENAI_ONLY:
        if getattr(data.settings, name) != getattr(defaults, name):
            raise InvalidTurnRequest(
                f"settings.{name} is served by /v1/chat/completions; this route answers "
                "one text (settings.response_format asks it for JSON)",
                field=f"settings.{name}",
                status_code=400,
            )


class LLMController(Controller):
    path = "/llm"
    tags = ("llm",)

    @post("/generate", status_code=200)
    async def generate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[GenerateRequest],
        turn_service: NamedDependency[TurnService],
    ) -> GenerateResponse:
        """Sanitize the messages, then generate with the chosen (or default) model.

        The turn is stored in a conversation (`conversation_id`, new when absent) and the
        next turn is built from its history. An identical earlier request is answered from
        the response cache (`use_cache`, default true; `cache_hit` says so). With
        `"stream": true` the answer is Server-Sent Events: `start` (StreamStart), `token`
        events with text deltas, then `done` (StreamDone), or `error`."""
        started = time.monotonic()
        turn = await turn_service.start(to_turn_request(data))
        if data.stream:
            return event_stream(
                GenerateResponse, _events(turn, request_id_of(request)), _error_event
            )
        completion = await whole_answer(request, turn)
        finished = completion.finished
        assert turn.conversation_id is not None
        return GenerateResponse(
            response=completion.text,
            model=turn.model,
            conversation_id=turn.conversation_id,
            history_turns_dropped=turn.history_turns_dropped,
            cache_hit=turn.cache_hit,
            finish_reason=finished.finish_reason,
            generation_time=round(time.monotonic() - started, 4),
            usage=Usage.of(finished),
            timings=Timings.of(finished),
            sanitization=turn.sanitization,
        )

    @post("/cache/clear", status_code=200, guards=[requires_admin])
    async def clear_cache(self, response_cache: NamedDependency[ResponseCache]) -> CacheCleared:
        """Empty the response cache (admin)."""
        await response_cache.clear()
        return CacheCleared(cleared=True, backend=response_cache.backend)


def _done(turn: Turn, finished: Finished) -> StreamDone:
    return StreamDone(
        model=turn.model,
        conversation_id=turn.conversation_id,
        finish_reason=finished.finish_reason,
        cache_hit=turn.cache_hit,
        usage=Usage.of(finished),
        timings=Timings.of(finished),
    )


async def _events(turn: Turn, request_id: str | None) -> AsyncIterator[ServerSentEventMessage]:
    yield sse(
        StreamStart(
            model=turn.model,
            conversation_id=turn.conversation_id,
            history_turns_dropped=turn.history_turns_dropped,
            cache_hit=turn.cache_hit,
            sanitization=turn.sanitization,
        ),
        "start",
    )
    try:
        async for event in turn.events():
            if isinstance(event, Finished):
                yield sse(_done(turn, event), "done")
            elif isinstance(event, TokenDelta):
                yield sse({"text": event.text}, "token")
    except Exception:  # logged by the turn; the client gets a stable message, no internals
        yield _error_event(STREAM_FAILED, request_id)


def _error_event(detail: str, request_id: str | None) -> ServerSentEventMessage:
    return sse({"status": 503, "detail": detail, "request_id": request_id}, "error")
