"""A queued generation job and the handle its caller holds."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modules.llm.inference.events import Event, drain
from modules.llm.inference.sampling import SamplingParams


class Outbox:
    """Events on their way from the engine thread to the callers' event loops, sent once
    per engine step: one wake-up of a loop per step, not one per token of every stream.
    Only the engine thread uses it (and `stop()`, once that thread is gone)."""

    def __init__(self) -> None:
        self._events: list[tuple[GenerationJob, Event]] = []

    def put(self, job: GenerationJob, event: Event) -> None:
        self._events.append((job, event))

    def flush(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationJob, Event]]] = {}
        for job, event in events:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, batch in by_loop.items():
            # The caller's loop may already be gone (shutdown): nothing left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, batch)


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
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted_at: float = field(default_factory=time.monotonic)

    def emit(self, event: Event) -> None:
        self.outbox.put(self, event)


class GenerationHandle:
    """What a caller holds: iterate the events; `cancel()` stops the generation."""

    def __init__(self, job: GenerationJob) -> None:
        self._job = job

    @property
    def id(self) -> str:
        return self._job.id

    def cancel(self) -> None:
        self._job.cancelled.set()

    def events(self) -> AsyncIterator[Event]:
        return drain(self._job.events, self.cancel)
