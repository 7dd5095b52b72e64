"""HTTP plumbing shared by the front ends: SSE responses, whole answers that stop the
model when their client disconnects, and the drain that ends both when the server's
shutdown grace period is over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

import msgspec
from litestar import Litestar, Request
from litestar.response import ServerSentEvent, ServerSentEventMessage

from modules.llm.inference import BackendUnavailableError, Completion
from modules.llm.turns import Turn

T = TypeVar("T")

RESTARTING = "the server is restarting; retry in a moment"
# A front end's last event of a stream that failed: (detail, request id) in its own shape.
ErrorEvent = Callable[[str, str | None], ServerSentEventMessage]


class ServerRestarting(Exception):
    """The drain interrupted a wait for the model."""


class Drain:
    """The end of the server's shutdown grace period, told to whatever still waits for a
    model: a stream ends with an `error` event saying the server is restarting (and a
    proper end of its body), a whole answer is a 503. Without it the server cancels them
    mid-body, and clients see a broken connection.

    A task registers once (`watching`) and marks each wait (`with wait:`); `start()`
    cancels the tasks that are waiting, and the wait turns that cancellation, and only
    that one, into ServerRestarting. No task or future per event: a stream's tokens pay
    two attribute writes. A task that is sending (a slow reader) is not interrupted; it
    stops at its next wait. One drain per app, in its state (`Drain.of`)."""

    def __init__(self) -> None:
        self.started = False
        self._watching: set[Wait] = set()

    @classmethod
    def of(cls, app: Litestar) -> Drain:
        drain = app.state.get(_DRAIN_KEY)
        if not isinstance(drain, Drain):
            drain = app.state[_DRAIN_KEY] = cls()
        return drain

    def start(self) -> None:
        self.started = True
        for wait in list(self._watching):
            wait.interrupt()

    @contextlib.contextmanager
    def watching(self) -> Iterator[Wait]:
        """The current task's waits for the model, for as long as the block runs."""
        task = asyncio.current_task()
        assert task is not None
        wait = Wait(self, task)
        self._watching.add(wait)
        try:
            yield wait
        finally:
            self._watching.discard(wait)


_DRAIN_KEY = "shutdown_drain"


class Wait:
    """`with wait:` around one wait for the model; raises ServerRestarting when the drain
    interrupts it, or when the drain has started before it."""

    __slots__ = ("_drain", "_interrupted", "_task", "_waiting")

    def __init__(self, drain: Drain, task: asyncio.Task[Any]) -> None:
        self._drain = drain
        self._task = task
        self._waiting = False
        self._interrupted = False

    def interrupt(self) -> None:
        if self._waiting and not self._interrupted:
            self._interrupted = True
            self._task.cancel("the server is restarting")

    def __enter__(self) -> None:
        if self._drain.started:
            raise ServerRestarting
        self._waiting = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._waiting = False
        if not self._interrupted:
            return
        self._interrupted = False
        # Take back our cancellation; another one (the client left) still goes on.
        if self._task.uncancel() == 0 and exc_type in (None, asyncio.CancelledError):
            raise ServerRestarting from None


class EventStream(ServerSentEvent):
    """SSE that keeps `text/event-stream` even from a handler that may also answer JSON
    (Litestar 2.25 lets the handler's media type override the response's own here), and
    that the app's drain ends cleanly, with the front end's own error event."""

    def __init__(
        self,
        events: AsyncIterator[ServerSentEventMessage],
        error_event: ErrorEvent,
        headers: dict[str, str] | None,
    ) -> None:
        self._events = events
        self._error_event = error_event
        self._request: Request[Any, Any, Any] | None = None
        super().__init__(self._until_drained(), headers=headers)

    def to_asgi_response(
        self, app: Litestar | None, request: Request[Any, Any, Any], **kwargs: Any
    ) -> Any:
        self._request = request
        kwargs["media_type"] = None
        return super().to_asgi_response(app, request, **kwargs)

    async def _until_drained(self) -> AsyncIterator[ServerSentEventMessage]:
        request = self._request
        assert request is not None  # the app answers (to_asgi_response) before it iterates
        events = self._events
        with Drain.of(request.app).watching() as wait:
            try:
                while True:
                    try:
                        with wait:
                            event = await anext(events)
                    except StopAsyncIteration:
                        return
                    yield event
            except ServerRestarting:
                yield self._error_event(RESTARTING, request_id_of(request))
            finally:
                # Interrupted between events, the stream still holds its turn: stop it.
                if isinstance(events, AsyncGenerator):
                    await events.aclose()


def event_stream(
    declared: type[T],
    events: AsyncIterator[ServerSentEventMessage],
    error_event: ErrorEvent,
    headers: dict[str, str] | None = None,
) -> T:
    """A Server-Sent Events answer from a route whose declared type is its JSON answer.
    Litestar sends any Response as it is, and the OpenAPI schema keeps one exact JSON shape
    (a union with the stream would be a `oneOf` that every JSON answer matches twice).
    `error_event` ends a stream that the server's drain interrupts."""
    return cast(T, EventStream(events, error_event, headers))


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
    """Wait for the whole answer; a client that hangs up cancels the generation, and the
    server's drain answers 503."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, turn))
    try:
        with Drain.of(request.app).watching() as wait:
            try:
                with wait:
                    return await turn.result()
            except ServerRestarting:
                turn.cancel()
                raise BackendUnavailableError(RESTARTING) from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


STREAM_FAILED = "the generation failed; retry later"


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    state = request.scope.get("state") or {}
    request_id = state.get("request_id")
    return str(request_id) if request_id else None
