"""A queued generation job and the handle its caller holds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modules.llm.inference.events import Event, TokenDelta, drain
from modules.llm.inference.sampling import SamplingParams


class Outbox:
    """Events on their way from the engine thread to the callers' event loops, sent at most
    once per engine step: one wake-up of a loop per step, not one per token of every stream.

    While streams run, text is sent at most every `interval` seconds (`flush_due`): each
    hand-off costs the event loop a wake-up and every stream an SSE write and its client a
    read, which on a small machine take the cores the decode needs. A stream's first text
    and every ending (finished, failed) go at the next step whatever the interval, so time
    to first token and the end of an answer are not delayed. Only the engine thread uses
    it (and `stop()`, once that thread is gone)."""

    def __init__(self, interval: float = 0.0) -> None:
        self.interval = interval
        self._events: list[tuple[GenerationJob, Event]] = []
        self._urgent = False
        self._sent_at = -math.inf

    def put(self, job: GenerationJob, event: Event) -> None:
        if not isinstance(event, TokenDelta) or not job.answered:
            self._urgent = True
            job.answered = True
        self._events.append((job, event))

    def flush_due(self) -> None:
        """Send what waits if something must go now or `interval` has passed."""
        if self._events and (self._urgent or time.monotonic() - self._sent_at >= self.interval):
            self.flush()

    def flush(self) -> None:
        """Send what waits, now."""
        if not self._events:
            return
        self._urgent = False
        self._sent_at = time.monotonic()
        events, self._events = self._events, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationJob, Event]]] = {}
        # A stream's texts of one hand-off become one delta per choice: one SSE write, one
        # client read. Where the last delta of a job's choice is in its loop's batch:
        open_text: dict[tuple[GenerationJob, int], int] = {}
        for job, event in events:
            batch = by_loop.setdefault(job.loop, [])
            if isinstance(event, TokenDelta):
                key = (job, event.choice)
                at = open_text.get(key)
                if at is not None:
                    batch[at] = (job, _joined(batch[at][1], event))
                    continue
                open_text[key] = len(batch)
            else:  # nothing after it joins what came before it
                for choice in range(job.params.n):
                    open_text.pop((job, choice), None)
            batch.append((job, event))
        for loop, batch in by_loop.items():
            # The caller's loop may already be gone (shutdown): nothing left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, batch)


def _joined(earlier: Event, later: TokenDelta) -> TokenDelta:
    assert isinstance(earlier, TokenDelta)
    return TokenDelta(earlier.text + later.text, later.choice, earlier.logprobs + later.logprobs)


def _deliver(batch: list[tuple[GenerationJob, Event]]) -> None:
    for job, event in batch:
        job.events.put_nowait(event)


@dataclass(eq=False)
class GenerationJob:
    """One request's work and its channel back to the caller's event loop."""

    prompt_tokens: list[int]
    params: SamplingParams
    owner: str
    deadline: float
    loop: asyncio.AbstractEventLoop
    outbox: Outbox
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Leading tokens anyone may share (the server's own system prompt), or 0.
    shared_prefix: int = 0
    answered: bool = False  # an event was put in the outbox (engine thread only)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted_at: float = field(default_factory=time.monotonic)

    def emit(self, event: Event) -> None:
        self.outbox.put(self, event)


class GenerationHandle:
    """What a caller holds: iterate the events; `cancel()` stops the generation."""

    def __init__(self, job: GenerationJob) -> None:
        self._job = job

    def cancel(self) -> None:
        self._job.cancelled.set()

    def events(self) -> AsyncIterator[Event]:
        return drain(self._job.events, self.cancel)
