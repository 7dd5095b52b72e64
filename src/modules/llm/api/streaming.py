"""HTTP plumbing shared by the front ends: SSE responses, and whole answers that stop the
model when their client disconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

import msgspec
from litestar import Request
from litestar.response import ServerSentEvent, ServerSentEventMessage

from modules.llm.inference import Completion
from modules.llm.turns import Turn

T = TypeVar("T")


class EventStream(ServerSentEvent):
    """SSE that keeps `text/event-stream` even from a handler that may also answer JSON.

    Litestar 2.25 lets the handler's media type override the response's own here."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


def event_stream(
    declared: type[T],
    events: AsyncIterator[ServerSentEventMessage],
    headers: dict[str, str] | None = None,
) -> T:
    """A Server-Sent Events answer from a route whose declared type is its JSON answer.
    Litestar sends any Response as it is, and the OpenAPI schema keeps one exact JSON shape
    (a union with the stream would be a `oneOf` that every JSON answer matches twice)."""
    return cast(T, EventStream(events, headers=headers))


def sse(payload: Any, event: str | None = None) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(payload).decode())


async def _cancel_on_disconnect(request: Request[Any, Any, Any], turn: Turn) -> None:
    # The body is read already, so the next ASGI message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            turn.cancel()
            return


async def whole_answer(request: Request[Any, Any, Any], turn: Turn) -> Completion:
    """Wait for the whole answer; a client that hangs up cancels the generation."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, turn))
    try:
        return await turn.result()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


STREAM_FAILED = "the generation failed; retry later"


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    state = request.scope.get("state") or {}
    request_id = state.get("request_id")
    return str(request_id) if request_id else None
