"""A started turn: what the front end shows at once, and its events as they come.

The generation's events are pumped by a task of the turn's own, which settles the turn
(charge, store, cache) when the backend says it finished. So a turn is settled however its
client goes: it reads to the end, drops the connection, or times out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from modules.llm.inference import (
    AnswerBuilder,
    Completion,
    Event,
    Failed,
    Finished,
    Generation,
    QueueTimeoutError,
    TokenDelta,
    ToolCallDelta,
)
from modules.llm.turns.preparation import PreparedPrompt

logger = structlog.get_logger(__name__)
Settle = Callable[[Completion], Awaitable[None]]
Release = Callable[[], Awaitable[None]]
# Strong references: the event loop keeps only weak ones to running tasks.
_pumps: set[asyncio.Task[None]] = set()


class Turn:
    def __init__(
        self,
        *,
        model: str,
        conversation_id: uuid.UUID | None,
        prepared: PreparedPrompt,
        source: Generation | Completion,
        settle: Settle,
        release: Release,
        timeout: float,
    ) -> None:
        self.model = model
        self.conversation_id = conversation_id
        self.sanitization = prepared.sanitization
        self.history_turns_dropped = prepared.history_turns_dropped
        self.cache_hit = isinstance(source, Completion)
        self._generation = None if isinstance(source, Completion) else source
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(self._pump(source, settle, release, timeout))
        _pumps.add(task)
        task.add_done_callback(_pumps.discard)

    def cancel(self) -> None:
        """Stop generating; what was generated is still charged."""
        if self._generation is not None:
            self._generation.cancel()

    async def events(self) -> AsyncIterator[TokenDelta | ToolCallDelta | Finished]:
        """Text deltas, then Finished (after the turn is settled); raises the backend's error."""
        try:
            while True:
                event = await self._queue.get()
                if isinstance(event, Failed):
                    raise event.error
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self.cancel()  # the consumer left early: stop the model (a no-op when done)

    async def result(self) -> Completion:
        answers = AnswerBuilder()
        async for event in self.events():
            if isinstance(event, Finished):
                return Completion(answers.text(), event, answers.choices(event))
            answers.add(event)
        raise RuntimeError("the turn ended without a result")

    async def _pump(
        self, source: Generation | Completion, settle: Settle, release: Release, limit: float
    ) -> None:
        answers = AnswerBuilder()
        try:
            async with asyncio.timeout(limit):
                async for event in _events_of(source):
                    if isinstance(event, Finished):
                        await settle(Completion(answers.text(), event, answers.choices(event)))
                    elif isinstance(event, TokenDelta | ToolCallDelta):
                        answers.add(event)
                    self._queue.put_nowait(event)
                    if isinstance(event, Finished | Failed):
                        return
        except TimeoutError:
            self.cancel()
            self._queue.put_nowait(Failed(QueueTimeoutError("the model did not finish in time")))
        except Exception as exc:  # e.g. the database went away while storing the turn
            logger.warning("turn failed", error=type(exc).__name__)
            self._queue.put_nowait(Failed(exc))
        finally:
            await release()


async def _events_of(source: Generation | Completion) -> AsyncIterator[Event]:
    if isinstance(source, Completion):  # from the response cache: one plain text answer
        if source.text:
            yield TokenDelta(source.text)
        yield source.finished
        return
    async for event in source.events():
        yield event
