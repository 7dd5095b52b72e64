"""/llm routes: generation, whole or streamed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from modules.llm.chat import ChatMessage
from modules.llm.engine import Failed, Finished, GenerationHandle, TokenDelta
from modules.llm.schemas import GenerateRequest, GenerateResponse
from modules.llm.service import GenerationService, PreparedGeneration, timings_of
from modules.llm.turns import ConversationTurns, Turn
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


def _usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "cached_tokens": finished.cached_tokens,
    }


class LLMController(Controller):
    path = "/llm"
    tags = ("llm",)

    @post("/generate", status_code=200)
    async def generate(
        self,
        request: Request[User, Any, Any],
        data: JSONBody[GenerateRequest],
        generation_service: NamedDependency[GenerationService],
        conversation_turns: NamedDependency[ConversationTurns],
    ) -> GenerateResponse | EventStream:
        """Sanitize the messages, then generate with the loaded model.

        The turn is stored in a conversation (`conversation_id`, new when absent) and the
        next turn is built from its history. With `"stream": true` the answer is
        Server-Sent Events: `start`, `token` events with text deltas, then `done` with usage
        and timings, or `error`."""
        started = time.monotonic()

        async def prepare(
            history: Sequence[ChatMessage], stored_system: str | None
        ) -> PreparedGeneration:
            return await generation_service.prepare(
                data, history=history, stored_system=stored_system
            )

        turn = await conversation_turns.begin(data.conversation_id, prepare)
        model = generation_service.model_name
        if data.stream:
            return EventStream(self._stream(turn, conversation_turns, model))

        async with watching_disconnect(request, turn.handle):
            result = await generation_service.collect(turn.handle)
        if result.finished.finish_reason != "cancelled":
            await conversation_turns.store(turn, result.text, result.finished)
        return GenerateResponse(
            response=result.text,
            model=model,
            conversation_id=turn.conversation_id,
            history_turns_dropped=turn.prepared.history_turns_dropped,
            finish_reason=result.finished.finish_reason,
            generation_time=round(time.monotonic() - started, 4),
            usage=result.usage,
            timings=timings_of(result.finished),
            sanitization=turn.prepared.sanitization,
        )

    @staticmethod
    async def _stream(
        turn: Turn, turns: ConversationTurns, model: str
    ) -> AsyncIterator[ServerSentEventMessage]:
        yield _sse(
            "start",
            {
                "model": model,
                "conversation_id": str(turn.conversation_id),
                "history_turns_dropped": turn.prepared.history_turns_dropped,
                "sanitization": turn.prepared.sanitization,
            },
        )
        parts: list[str] = []
        async for event in turn.handle.events():
            if isinstance(event, TokenDelta):
                parts.append(event.text)
                yield _sse("token", {"text": event.text})
            elif isinstance(event, Finished):
                if event.finish_reason != "cancelled":
                    await turns.store_detached(turn, "".join(parts), event)
                yield _sse(
                    "done",
                    {
                        "model": model,
                        "conversation_id": str(turn.conversation_id),
                        "finish_reason": event.finish_reason,
                        "usage": _usage(event),
                        "timings": timings_of(event),
                    },
                )
            elif isinstance(event, Failed):
                yield _sse("error", {"status": 500, "detail": f"generation failed: {event.error}"})
