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


@dataclass(eq=False)
class GenerationJob:
    """One request's work and its channel back to the caller's event loop."""

    prompt_tokens: list[int]
    params: SamplingParams
    owner: str
    deadline: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Leading tokens anyone may share (the server's own system prompt), or 0.
    shared_prefix: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted_at: float = field(default_factory=time.monotonic)

    def emit(self, event: Event) -> None:
        # The caller's loop may already be gone (shutdown): nothing left to tell.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


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
