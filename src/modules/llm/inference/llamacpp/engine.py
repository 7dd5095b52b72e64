"""The inference engine: continuous batching over one llama.cpp context.

One worker thread owns the model. The context holds `parallel` sequence slots; requests
beyond the slots wait in an ordered, bounded queue. The engine admits waiting jobs into
free slots and runs steps while any slot works; two parts do the rest:

* `Placement` (placement.py): which slot a job takes and what of its prompt the slot's KV
  cache already holds: the slot's own cache, a saved sequence state, the shared prefix.
* `BatchStep` (step.py): one step of continuous batching (batch, decode, sampling, events)
  and the endings of the jobs in the slots.

A job asking for n choices takes n slots at once; it waits, in order, until that many are
free (the jobs behind it wait too, so it is never starved by smaller ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
import time
from collections import deque

import structlog

from modules.llm.inference.errors import (
    BackendUnavailableError,
    QueueFullError,
    QueueTimeoutError,
    UnsupportedRequestError,
)
from modules.llm.inference.events import Failed, Finished, FinishReason
from modules.llm.inference.llamacpp.jobs import GenerationHandle, GenerationJob, Outbox
from modules.llm.inference.llamacpp.model import LoadedModel
from modules.llm.inference.llamacpp.placement import Placement
from modules.llm.inference.llamacpp.sampler import GrammarCache, build_sampler
from modules.llm.inference.llamacpp.slots import ActiveJob, Choices
from modules.llm.inference.llamacpp.step import BatchStep, DecodeError
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.stats import GenerationStats

logger = structlog.get_logger(__name__)

_WAKE = object()
# The longest an idle engine waits for the rest of a burst (see _gather_burst).
GATHER_LIMIT_SECONDS = 0.03
# A step that has completed a prompt reads no further prompt once it holds this many prompt
# tokens (see BatchStep): short prompts (a conversation's next turn) still share a step.
PREFILL_GROUP_TOKENS = 16


class LLMEngine:
    """Serves generation jobs on one model with `parallel` slots in one context."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        queue_size: int,
        prefill_chunk: int = 256,
        state_cache_bytes: int = 256 * 1024 * 1024,
        gather_seconds: float = 0.0,
        prefill_group_tokens: int = PREFILL_GROUP_TOKENS,
        stream_interval: float = 0.0,
    ) -> None:
        """`gather_seconds`: how long an idle engine waits for more of a burst before its
        first step (see `_gather_burst`); 0 starts at once. `stream_interval`: the least
        time between two hand-offs of streamed text to the event loop (see `Outbox`)."""
        self.model = model
        self.queue_size = queue_size
        self.parallel = model.n_seq
        self.gather_seconds = gather_seconds
        self.stats = GenerationStats()
        self._queue: queue.Queue[GenerationJob | object] = queue.Queue()
        self._waiting: deque[GenerationJob] = deque()
        self._waiting_lock = threading.Lock()
        self._admitting = 0
        self._outbox = Outbox(stream_interval)
        self.placement = Placement(model, self.stats, state_cache_bytes)
        self.grammars = GrammarCache(model.vocab)
        self.batch_step = BatchStep(
            model,
            self.placement,
            self._outbox,
            self.stats,
            prefill_chunk=prefill_chunk,
            prefill_group_tokens=prefill_group_tokens,
        )
        self._slots = self.placement.slots
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopped = False
        self._stop_lock = threading.Lock()

    # Life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._work, name="llm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what is queued or running, stop the thread, free the model. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._running = False
        self._queue.put(_WAKE)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A decode is still running: freeing its memory now would crash the process.
                logger.error(
                    "engine thread did not stop; leaving the model loaded", timeout=timeout
                )
                return
        with self._waiting_lock:
            leftovers = list(self._waiting)
            self._waiting.clear()
        for job in leftovers:
            job.emit(Failed(BackendUnavailableError("the service is shutting down")))
        self._outbox.flush()
        with contextlib.suppress(Exception):
            self.batch_step.close()
        self.grammars.close()
        self.model.close()

    @property
    def is_running(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        with self._waiting_lock:
            return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        return sum(1 for slot in self._slots if slot.active is not None)

    @property
    def prefill_chunk(self) -> int:
        return self.batch_step.prefill_chunk

    @property
    def prefill_group_tokens(self) -> int:
        return self.batch_step.prefill_group_tokens

    @prefill_group_tokens.setter
    def prefill_group_tokens(self, tokens: int) -> None:
        self.batch_step.prefill_group_tokens = tokens

    @property
    def saved_states(self) -> int:
        return self.placement.saved_states

    def retry_after_seconds(self) -> int:
        durations = self.batch_step.durations
        average = sum(durations) / len(durations) if durations else 2.0
        return max(1, math.ceil(average * (self.queue_depth / self.parallel + 1)))

    # Submission (event loop) ---------------------------------------------------------------

    def submit(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        *,
        owner: str,
        timeout: float,
        shared_prefix: int = 0,
    ) -> GenerationHandle:
        """Queue a job; raises QueueFullError at once when there is no place.

        `shared_prefix` leading tokens may be taken from any user's cache: pass it only for
        text that is the same for everyone (the server's default system prompt)."""
        if not self.is_running:
            raise BackendUnavailableError("the model is not loaded")
        if params.n > self.parallel:  # it would wait for more free slots than there are
            raise UnsupportedRequestError(
                f"n is {params.n}; this model serves at most {self.parallel} choices at once",
                field="n",
            )
        job = GenerationJob(
            prompt_tokens=prompt_tokens,
            params=params,
            owner=owner,
            deadline=time.monotonic() + timeout,
            loop=asyncio.get_running_loop(),
            outbox=self._outbox,
            shared_prefix=min(shared_prefix, max(0, len(prompt_tokens) - 1)),
        )
        with self._waiting_lock:
            # Capacity: every slot plus the queue's places. The engine moves jobs from the
            # queue into slots under this lock, so the sum is exact.
            taken = len(self._waiting) + self._admitting + self.busy_slots
            full = taken >= self.queue_size + self.parallel
            if not full:
                self._waiting.append(job)
        if full:
            self.stats.rejected += 1
            raise QueueFullError(self.retry_after_seconds())
        self._queue.put(_WAKE)
        return GenerationHandle(job)

    # Worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        slots, batch_step = self._slots, self.batch_step
        step = batch_step.run  # hands what the last step produced to the loop (see there)
        while self._running:
            try:
                idle = not any(slot.active for slot in slots)
                if self._admit() and idle and self.gather_seconds > 0:
                    self._gather_burst()
                if not any(slot.active for slot in slots):
                    batch_step.pause()
                    self._queue.get()  # sleep until something is submitted
                    continue
                step()
            except Exception:  # the engine thread must survive any one request's failure
                logger.exception("engine step failed")
                batch_step.fail_all(DecodeError("the model failed on this batch"))
                self._outbox.flush()
        batch_step.fail_all(BackendUnavailableError("the service is shutting down"))
        self._outbox.flush()

    def _next_waiting(self, free: int) -> GenerationJob | None:
        """The first waiting job if `free` slots serve it (a job that will not start, being
        cancelled or late, is taken whatever it asked for)."""
        with self._waiting_lock:
            if not self._waiting:
                return None
            job = self._waiting[0]
            if job.params.n > free and not (
                job.cancelled.is_set() or time.monotonic() > job.deadline
            ):
                return None
            self._admitting += 1  # in neither the queue nor a slot until placed
            return self._waiting.popleft()

    def _admitted(self) -> None:
        with self._waiting_lock:
            self._admitting -= 1

    def _admit(self) -> int:
        """Move waiting jobs, in order, into free slots; how many were taken."""
        taken = 0
        while free := sum(1 for slot in self._slots if slot.active is None):
            job = self._next_waiting(free)
            if job is None:
                break
            try:
                self._admit_one(job)
                taken += 1
            finally:
                self._admitted()
        return taken

    def _gather_burst(self) -> None:
        """An idle engine that has just taken work waits a moment for more: requests of a
        burst reach it a few ms apart (each needs the event loop first), and the first
        step would otherwise start alone and make the rest wait for it. Each arrival
        extends the wait by `gather_seconds`, up to `GATHER_LIMIT_SECONDS` in all, until
        the slots are full. A lone request pays `gather_seconds` once."""
        deadline = time.monotonic() + GATHER_LIMIT_SECONDS
        while self._running and any(slot.active is None for slot in self._slots):
            wait = min(self.gather_seconds, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                self._queue.get(timeout=wait)  # every submit wakes the engine
            except queue.Empty:
                return  # quiet: the burst is in
            self._admit()

    def _admit_one(self, job: GenerationJob) -> None:
        if job.cancelled.is_set():
            self.stats.cancelled += 1
            n = job.params.n
            cancelled: FinishReason = "cancelled"
            reasons = (cancelled,) * n if n > 1 else ()
            job.emit(Finished("cancelled", len(job.prompt_tokens), 0, choice_reasons=reasons))
            return
        if time.monotonic() > job.deadline:
            self.stats.timed_out += 1
            job.emit(Failed(QueueTimeoutError("timed out waiting for the model")))
            return
        try:
            self._start(job)
        except Exception as exc:
            logger.exception("could not start generation", job=job.id)
            self.stats.failed += 1
            job.emit(Failed(exc))

    def _start(self, job: GenerationJob) -> None:
        prompt = job.prompt_tokens
        if not prompt or not all(0 <= token < self.model.n_vocab for token in prompt):
            # Checked here so that a bad job fails alone, not the batch it would join.
            raise ValueError("the prompt holds tokens outside the model's vocabulary")
        if len(prompt) >= self.model.n_ctx:
            raise ValueError(
                f"the prompt needs {len(prompt)} tokens; a sequence holds {self.model.n_ctx}"
            )
        params = job.params
        if params.n > self.parallel:
            raise ValueError(
                f"the job asks for {params.n} choices; there are {self.parallel} slots"
            )
        # Everything that may fail comes before the job takes a slot.
        choices = [self._choice(job, choice) for choice in range(params.n)]
        slot, shared = self.placement.place(job)
        first = choices[0]
        first.pending, first.cached_tokens = list(prompt[shared:]), shared
        slot.active = first
        if len(choices) > 1:
            members = [(slot, first)]
            for other in choices[1:]:
                other_slot = self.placement.take(job.owner)
                other_slot.active, other.copy_from = other, slot
                members.append((other_slot, other))
            group = Choices(members, [None] * len(members))
            for active in choices:
                active.choices = group

    def _choice(self, job: GenerationJob, choice: int) -> ActiveJob:
        """Choice `choice` of `job`, not yet in a slot: its samplers and limits."""
        params = job.params
        return ActiveJob(
            job=job,
            sampler=build_sampler(params, self.model.n_vocab, choice),
            max_tokens=max(
                0, min(params.resolved_max_tokens, self.model.n_ctx - len(job.prompt_tokens))
            ),
            pending=[],
            cached_tokens=0,
            grammar=self.grammars.sampler(params.grammar) if params.grammar else None,
            logprobs=[] if params.logprobs else None,
            top_logprobs=params.top_logprobs if params.logprobs else 0,
            choice=choice,
        )
