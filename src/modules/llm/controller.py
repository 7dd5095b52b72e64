"""/llm routes: generation, whole or streamed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from modules.auth.security import requires_admin
from modules.cache import CachedAnswer, ResponseCache
from modules.llm.chat import ChatMessage
from modules.llm.engine import Failed, Finished, FinishReason, GenerationHandle, TokenDelta
from modules.llm.registry import ModelRegistry
from modules.llm.schemas import (
    GenerateRequest,
    GenerateResponse,
    GenerationSettings,
    Usage,
    merge_settings,
)
from modules.llm.service import (
    InvalidGenerationRequest,
    PreparedGeneration,
    timings_of,
)
from modules.llm.turns import ConversationTurns, Turn
from modules.profiles.service import ProfileService
from modules.ratelimit import RateLimiter
from modules.users.models import User


async def cancel_on_disconnect(request: Request[Any, Any, Any], handle: GenerationHandle) -> None:
    """The body is read already, so the next ASGI message can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


@contextlib.asynccontextmanager
async def watching_disconnect(
    request: Request[Any, Any, Any], handle: GenerationHandle
) -> AsyncIterator[None]:
    watcher = asyncio.create_task(cancel_on_disconnect(request, handle))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class EventStream(ServerSentEvent):
    """SSE that keeps `text/event-stream` even from a handler that may also answer JSON.

    Litestar 2.25 lets the handler's media type override the response's own here."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


def _sse(event: str, payload: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(payload).decode())


class LLMController(Controller):
    path = "/llm"
    tags = ("llm",)

    @post("/generate", status_code=200)
    async def generate(
        self,
        request: Request[User, Any, Any],
        data: JSONBody[GenerateRequest],
        model_registry: NamedDependency[ModelRegistry],
        conversation_turns: NamedDependency[ConversationTurns],
        response_cache: NamedDependency[ResponseCache],
        profile_service: NamedDependency[ProfileService],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> GenerateResponse | EventStream:
        """Sanitize the messages, then generate with the loaded model.

        The turn is stored in a conversation (`conversation_id`, new when absent) and the
        next turn is built from its history. An identical earlier request is answered from
        the response cache (`use_cache`, default true; `cache_hit` says so). With
        `"stream": true` the answer is Server-Sent Events: `start`, `token` events with text
        deltas, then `done` with usage and timings, or `error`."""
        started = time.monotonic()
        user_id = str(request.user.id)
        generation_service = model_registry.get(data.model)
        conversation_turns.generation = generation_service
        await rate_limiter.check_request(user_id, request.user.role)
        data = await _with_profile(data, profile_service)

        async def prepare(
            history: Sequence[ChatMessage], stored_system: str | None
        ) -> PreparedGeneration:
            return await generation_service.prepare(
                data, history=history, stored_system=stored_system
            )

        turn = await conversation_turns.begin(data.conversation_id, prepare, start=False)
        model = generation_service.model_name
        key = (
            response_cache.key(
                model,
                [(m.role, m.content) for m in turn.prepared.messages],
                asdict(turn.prepared.params),
                str(request.user.id),
            )
            if data.use_cache
            else None
        )
        cached = await response_cache.get(key) if key else None
        scope_state = request.scope.setdefault("state", {})
        scope_state["cache_hit"] = cached is not None
        if generation_service.settings.log_prompts:
            scope_state["prompt"] = [m.content for m in turn.prepared.new_messages]
        if cached is not None:
            finished = _finished_from_cache(cached)
            await conversation_turns.store(turn, cached.text, finished)
            if data.stream:
                return EventStream(_replay(turn, model, cached.text, finished))
            return _response(turn, model, cached.text, finished, started, cache_hit=True)

        handle = conversation_turns.start(turn)
        if data.stream:
            return EventStream(
                self._stream(
                    turn,
                    handle,
                    conversation_turns,
                    model,
                    response_cache,
                    key,
                    lambda tokens: rate_limiter.add_tokens(user_id, tokens),
                )
            )

        async with watching_disconnect(request, handle):
            result = await generation_service.collect(handle)
        scope_state["tokens"] = result.finished.prompt_tokens + result.finished.completion_tokens
        await rate_limiter.add_tokens(user_id, result.finished.completion_tokens)
        if result.finished.finish_reason != "cancelled":
            await conversation_turns.store(turn, result.text, result.finished)
        if key and result.finished.finish_reason in ("stop", "length"):
            await response_cache.put(
                key,
                result.text,
                result.finished.finish_reason,
                (result.finished.prompt_tokens, result.finished.completion_tokens),
            )
        return _response(turn, model, result.text, result.finished, started, cache_hit=False)

    @post("/cache/clear", status_code=200, guards=[requires_admin])
    async def clear_cache(self, response_cache: NamedDependency[ResponseCache]) -> dict[str, Any]:
        """Empty the response cache (admin)."""
        await response_cache.clear()
        return {"cleared": True, "backend": response_cache.backend}

    @staticmethod
    async def _stream(
        turn: Turn,
        handle: GenerationHandle,
        turns: ConversationTurns,
        model: str,
        cache: ResponseCache,
        key: str | None,
        charge: Callable[[int], Awaitable[None]],
    ) -> AsyncIterator[ServerSentEventMessage]:
        yield _sse("start", _start_payload(turn, model, cache_hit=False))
        parts: list[str] = []
        async for event in handle.events():
            if isinstance(event, TokenDelta):
                parts.append(event.text)
                yield _sse("token", {"text": event.text})
            elif isinstance(event, Finished):
                await charge(event.completion_tokens)
                text = "".join(parts)
                if event.finish_reason != "cancelled":
                    await turns.store_detached(turn, text, event)
                if key and event.finish_reason in ("stop", "length"):
                    usage = (event.prompt_tokens, event.completion_tokens)
                    await cache.put(key, text, event.finish_reason, usage)
                yield _sse("done", _done_payload(turn, model, event, cache_hit=False))
            elif isinstance(event, Failed):
                yield _sse("error", {"status": 500, "detail": f"generation failed: {event.error}"})


async def _with_profile(data: GenerateRequest, profiles: ProfileService) -> GenerateRequest:
    """Apply a profile: request settings override the profile's, which override the
    server's defaults; a request's own `system` overrides the profile's prompt."""
    if data.profile and data.character_name and data.profile != data.character_name:
        raise InvalidGenerationRequest(
            "'profile' and 'character_name' name different profiles; send one",
            field="profile",
            status_code=400,
        )
    name = data.profile or data.character_name
    if not name:
        return data
    profile = await profiles.by_name(name)
    base = msgspec.convert(profile.settings or {}, GenerationSettings)
    return msgspec.structs.replace(
        data,
        system=data.system or profile.system_prompt,
        settings=merge_settings(base, data.settings),
    )


def _finished_from_cache(cached: CachedAnswer) -> Finished:
    reason: FinishReason = "length" if cached.finish_reason == "length" else "stop"
    return Finished(
        finish_reason=reason,
        prompt_tokens=cached.prompt_tokens,
        completion_tokens=cached.completion_tokens,
        queue_seconds=0.0,
        prompt_seconds=0.0,
        generation_seconds=0.0,
        time_to_first_token=0.0,
    )


def _start_payload(turn: Turn, model: str, *, cache_hit: bool) -> dict[str, Any]:
    return {
        "model": model,
        "conversation_id": str(turn.conversation_id),
        "history_turns_dropped": turn.prepared.history_turns_dropped,
        "cache_hit": cache_hit,
        "sanitization": turn.prepared.sanitization,
    }


def _done_payload(turn: Turn, model: str, finished: Finished, *, cache_hit: bool) -> dict[str, Any]:
    return {
        "model": model,
        "conversation_id": str(turn.conversation_id),
        "finish_reason": finished.finish_reason,
        "cache_hit": cache_hit,
        "usage": Usage.of(finished),
        "timings": timings_of(finished),
    }


async def _replay(
    turn: Turn, model: str, text: str, finished: Finished
) -> AsyncIterator[ServerSentEventMessage]:
    yield _sse("start", _start_payload(turn, model, cache_hit=True))
    if text:
        yield _sse("token", {"text": text})
    yield _sse("done", _done_payload(turn, model, finished, cache_hit=True))


def _response(
    turn: Turn, model: str, text: str, finished: Finished, started: float, *, cache_hit: bool
) -> GenerateResponse:
    return GenerateResponse(
        response=text,
        model=model,
        conversation_id=turn.conversation_id,
        history_turns_dropped=turn.prepared.history_turns_dropped,
        cache_hit=cache_hit,
        finish_reason=finished.finish_reason,
        generation_time=round(time.monotonic() - started, 4),
        usage=Usage.of(finished),
        timings=timings_of(finished),
        sanitization=turn.prepared.sanitization,
    )
