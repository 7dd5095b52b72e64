"""/llm routes: generation, whole or streamed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.security.jwt import Token

from modules.llm.engine import Failed, Finished, GenerationHandle, TokenDelta
from modules.llm.schemas import GenerateRequest, GenerateResponse
from modules.llm.service import GenerationService, timings_of
from modules.users.models import User


async def _cancel_on_disconnect(request: Request[Any, Any, Any], handle: GenerationHandle) -> None:
    """The body is read already, so the next ASGI message can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


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
        request: Request[User, Token, Any],
        data: JSONBody[GenerateRequest],
        generation_service: NamedDependency[GenerationService],
    ) -> GenerateResponse | EventStream:
        """Sanitize the messages, then generate with the loaded model.

        With `"stream": true` the answer is Server-Sent Events: `token` events with text
        deltas, then one `done` event with usage and timings (or an `error` event)."""
        started = time.monotonic()
        prepared = await generation_service.prepare(data)
        handle = generation_service.start(prepared, owner=str(request.user.id))
        model = generation_service.model_name

        if data.stream:
            return EventStream(self._stream(handle, generation_service, prepared, model))

        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
        try:
            result = await generation_service.collect(handle)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return GenerateResponse(
            response=result.text,
            model=model,
            finish_reason=result.finished.finish_reason,
            generation_time=round(time.monotonic() - started, 4),
            usage=result.usage,
            timings=timings_of(result.finished),
            sanitization=prepared.sanitization,
        )

    @staticmethod
    async def _stream(
        handle: GenerationHandle,
        service: GenerationService,
        prepared: Any,
        model: str,
    ) -> AsyncIterator[ServerSentEventMessage]:
        yield _sse("start", {"model": model, "sanitization": prepared.sanitization})
        async for event in service.stream(handle):
            if isinstance(event, TokenDelta):
                yield _sse("token", {"text": event.text})
            elif isinstance(event, Finished):
                yield _sse(
                    "done",
                    {
                        "model": model,
                        "finish_reason": event.finish_reason,
                        "usage": {
                            "prompt_tokens": event.prompt_tokens,
                            "completion_tokens": event.completion_tokens,
                            "total_tokens": event.prompt_tokens + event.completion_tokens,
                        },
                        "timings": timings_of(event),
                    },
                )
            elif isinstance(event, Failed):
                yield _sse("error", {"status": 500, "detail": f"generation failed: {event.error}"})
