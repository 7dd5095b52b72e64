"""The inference engine: one model, one worker thread, an ordered bounded queue.

Requests are submitted from the event loop and run one after another on a dedicated thread
(inference never runs on the loop). Each job streams events back to its caller's loop; a job
whose caller went away, or whose deadline passed, stops at the next token.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from modules.llm.model import LoadedModel

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "timeout", "cancelled"]


class QueueFullError(Exception):
    """Every queue place is taken; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the model is busy: the request queue is full")
        self.retry_after = retry_after


class EngineUnavailableError(Exception):
    """The engine is not running (still loading, failed to load, or shutting down)."""


class QueueTimeoutError(Exception):
    """The request's deadline passed before the model could start on it."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float
    max_tokens: int
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class TokenDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    queue_seconds: float
    prompt_seconds: float
    generation_seconds: float
    time_to_first_token: float


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


Event = TokenDelta | Finished | Failed


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

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self._job.events.get()
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            # However the consumer stops (disconnect, timeout, error), the model stops too.
            self.cancel()


@dataclass
class EngineStats:
    completed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


_STOP = object()


class LLMEngine:
    """Runs generation jobs on one loaded model, in order, on a worker thread."""

    def __init__(self, model: LoadedModel, *, queue_size: int) -> None:
        self.model = model
        self.queue_size = queue_size
        self._queue: queue.Queue[GenerationJob | object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._running = False
        self._busy = False
        self._last_owner: str | None = None
        self._recent_durations: deque[float] = deque(maxlen=20)
        self.stats = EngineStats()

    # Life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._work, name="llm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is queued or running, then stop the thread."""
        self._running = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, GenerationJob):
                item.cancelled.set()
                item.emit(Failed(EngineUnavailableError("the service is shutting down")))
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        self.model.close()

    @property
    def is_running(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def busy(self) -> bool:
        return self._busy

    def retry_after_seconds(self) -> int:
        average = (
            sum(self._recent_durations) / len(self._recent_durations)
            if self._recent_durations
            else 2.0
        )
        return max(1, round(average * (self.queue_depth + 1)))

    # Submission ---------------------------------------------------------------------------

    def submit(
        self, prompt_tokens: list[int], params: SamplingParams, *, owner: str, timeout: float
    ) -> GenerationHandle:
        """Queue a job; raises QueueFullError at once when there is no place."""
        if not self.is_running:
            raise EngineUnavailableError("the model is not loaded")
        job = GenerationJob(
            prompt_tokens=prompt_tokens,
            params=params,
            owner=owner,
            deadline=time.monotonic() + timeout,
            loop=asyncio.get_running_loop(),
        )
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats.rejected += 1
            raise QueueFullError(self.retry_after_seconds()) from None
        return GenerationHandle(job)

    # Worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or not self._running:
                return
            assert isinstance(item, GenerationJob)
            job = item
            if job.cancelled.is_set():
                self.stats.cancelled += 1
                continue
            if time.monotonic() > job.deadline:
                self.stats.timed_out += 1
                job.emit(Failed(QueueTimeoutError("timed out waiting for the model")))
                continue
            self._busy = True
            started = time.monotonic()
            try:
                self._generate(job)
            except Exception as exc:  # one request's failure must not kill the engine
                logger.exception("generation %s failed", job.id)
                self.stats.failed += 1
                job.emit(Failed(exc))
                self._last_owner = None  # the KV cache state is unknown now
            finally:
                self._busy = False
                self._recent_durations.append(time.monotonic() - started)

    def _generate(self, job: GenerationJob) -> None:
        llama = self.model.llama
        params = job.params
        queue_seconds = time.monotonic() - job.submitted_at
        if self._last_owner != job.owner:
            # The KV cache holds someone else's prompt: never let it speed this one up.
            llama.reset()  # type: ignore[no-untyped-call]
        self._last_owner = job.owner
        if params.seed is not None:
            llama.set_seed(params.seed)

        max_tokens = min(params.max_tokens, self.model.n_ctx - len(job.prompt_tokens))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        emitted = 0
        completion_tokens = 0
        finish_reason: FinishReason = "length"
        started = time.monotonic()
        first_token_at: float | None = None
        longest_stop = max((len(s) for s in params.stop), default=0)

        generator = llama.generate(
            job.prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )
        try:
            for token in generator:
                if first_token_at is None:
                    first_token_at = time.monotonic()
                if job.cancelled.is_set():
                    finish_reason = "cancelled"
                    break
                if time.monotonic() > job.deadline:
                    finish_reason = "timeout"
                    break
                if self.model.is_end_of_generation(token):
                    finish_reason = "stop"
                    break
                completion_tokens += 1
                text += decoder.decode(self.model.token_bytes(token))
                stop_at = _find_stop(text, params.stop, emitted, longest_stop)
                if stop_at is not None:
                    text = text[:stop_at]
                    finish_reason = "stop"
                    break
                # Hold back a tail that could still grow into a stop string.
                safe_end = len(text) - _partial_stop_suffix(text, params.stop)
                if safe_end > emitted:
                    job.emit(TokenDelta(text[emitted:safe_end]))
                    emitted = safe_end
                if completion_tokens >= max_tokens:
                    finish_reason = "length"
                    break
        finally:
            generator.close()

        text += decoder.decode(b"", final=True)
        if len(text) > emitted:
            job.emit(TokenDelta(text[emitted:]))
        now = time.monotonic()
        if finish_reason == "cancelled":
            self.stats.cancelled += 1
        elif finish_reason == "timeout":
            self.stats.timed_out += 1
        else:
            self.stats.completed += 1
        self.stats.prompt_tokens += len(job.prompt_tokens)
        self.stats.completion_tokens += completion_tokens
        first = first_token_at or now
        job.emit(
            Finished(
                finish_reason=finish_reason,
                prompt_tokens=len(job.prompt_tokens),
                completion_tokens=completion_tokens,
                queue_seconds=queue_seconds,
                prompt_seconds=first - started,
                generation_seconds=now - first,
                time_to_first_token=first - job.submitted_at,
            )
        )


def _find_stop(text: str, stops: tuple[str, ...], emitted: int, longest: int) -> int | None:
    if not stops:
        return None
    # Only the new tail can hold a new match.
    window_start = max(0, emitted - longest)
    found = [i for s in stops if (i := text.find(s, window_start)) != -1]
    return min(found) if found else None


def _partial_stop_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
