"""The inference engine: continuous batching over one llama.cpp context.

One worker thread owns the model. The context holds `parallel` sequence slots; every step
decodes ONE batch holding the next token of each generating slot plus a chunk of at most
`prefill_chunk` prompt tokens of slots still reading their prompt, so a new request joins
the running batch at the next step without stalling the streams already running. A request
that finishes, fails or is cancelled leaves its slot at once. Requests beyond the slots wait
in an ordered, bounded queue.

A finished slot keeps its KV cache with the exact tokens it holds. A later request of the
same owner whose prompt starts with those tokens reuses them and evaluates only the rest;
when a slot is needed for someone else, its sequence state is saved to an in-memory LRU
store (bounded in bytes) and can be restored into any slot. Reuse never crosses owners.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence

import llama_cpp
import structlog

from modules.llm.inference.errors import BackendUnavailableError, QueueFullError, QueueTimeoutError
from modules.llm.inference.events import Failed, Finished, FinishReason, TokenDelta
from modules.llm.inference.llamacpp.jobs import GenerationHandle, GenerationJob, Outbox
from modules.llm.inference.llamacpp.model import LoadedModel
from modules.llm.inference.llamacpp.sampler import build_sampler
from modules.llm.inference.llamacpp.slots import ActiveJob, SavedStates, Slot
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.sequences import common_prefix, find_stop, partial_stop_suffix
from modules.llm.inference.stats import GenerationStats

logger = structlog.get_logger(__name__)


class DecodeError(RuntimeError):
    """llama.cpp could not decode a batch."""


_WAKE = object()
# A slot about to be reused keeps (saves) what it held beyond the new prompt's common
# prefix when that is at least this many tokens: another conversation's cache.
KEEP_TAIL_TOKENS = 16
# The longest an idle engine waits for the rest of a burst (see _gather_burst).
GATHER_LIMIT_SECONDS = 0.03
# A step that has completed a prompt reads no further prompt once it holds this many prompt
# tokens (see _step): short prompts (a conversation's next turn) still share a step.
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
        self.prefill_chunk = max(1, min(prefill_chunk, model.options.n_batch - self.parallel))
        self.gather_seconds = gather_seconds
        self.prefill_group_tokens = prefill_group_tokens
        self._queue: queue.Queue[GenerationJob | object] = queue.Queue()
        self._waiting: deque[GenerationJob] = deque()
        self._waiting_lock = threading.Lock()
        self._admitting = 0
        self._slots = [Slot(seq_id=i) for i in range(self.parallel)]
        self._saved = SavedStates(state_cache_bytes)
        # The cache state of the prefix every prompt with the default system prompt shares.
        self._public: tuple[tuple[int, ...], bytearray] | None = None
        self._batch = llama_cpp.llama_batch_init(model.options.n_batch, 0, 1)
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._recent_durations: deque[float] = deque(maxlen=20)
        self._outbox = Outbox(stream_interval)
        self._decoded_at: float | None = None  # when the last decode returned, while working
        self.stats = GenerationStats()

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
            llama_cpp.llama_batch_free(self._batch)
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
    def busy(self) -> bool:
        return self.busy_slots > 0

    @property
    def saved_states(self) -> int:
        return len(self._saved)

    def retry_after_seconds(self) -> int:
        average = (
            sum(self._recent_durations) / len(self._recent_durations)
            if self._recent_durations
            else 2.0
        )
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
        while self._running:
            try:
                idle = not any(slot.active for slot in self._slots)
                if self._admit() and idle and self.gather_seconds > 0:
                    self._gather_burst()
                if not any(slot.active for slot in self._slots):
                    self._outbox.flush()
                    self._decoded_at = None  # idle time is not overhead
                    self._queue.get()  # sleep until something is submitted
                    continue
                self._step()  # hands what the last step produced to the loop (see there)
            except Exception:  # the engine thread must survive any one request's failure
                logger.exception("engine step failed")
                self._fail_active(DecodeError("the model failed on this batch"))
                self._outbox.flush()
        self._cancel_all()
        self._outbox.flush()

    def _next_waiting(self) -> GenerationJob | None:
        with self._waiting_lock:
            if not self._waiting:
                return None
            self._admitting += 1  # in neither the queue nor a slot until placed
            return self._waiting.popleft()

    def _admitted(self) -> None:
        with self._waiting_lock:
            self._admitting -= 1

    def _admit(self) -> int:
        """Move waiting jobs, in order, into free slots; how many were taken."""
        taken = 0
        while any(slot.active is None for slot in self._slots):
            job = self._next_waiting()
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
            job.emit(Finished("cancelled", len(job.prompt_tokens), 0))
            return
        if time.monotonic() > job.deadline:
            self.stats.timed_out += 1
            job.emit(Failed(QueueTimeoutError("timed out waiting for the model")))
            return
        try:
            self._place(job)
        except Exception as exc:
            logger.exception("could not start generation", job=job.id)
            self.stats.failed += 1
            job.emit(Failed(exc))

    def _place(self, job: GenerationJob) -> None:
        prompt = job.prompt_tokens
        if not prompt or not all(0 <= token < self.model.n_vocab for token in prompt):
            # Checked here so that a bad job fails alone, not the batch it would join.
            raise ValueError("the prompt holds tokens outside the model's vocabulary")
        if len(prompt) >= self.model.n_ctx:
            raise ValueError(
                f"the prompt needs {len(prompt)} tokens; a sequence holds {self.model.n_ctx}"
            )
        idle = [slot for slot in self._slots if slot.active is None]
        # Prefer this owner's slot whose cache shares the longest prefix; else the least
        # recently used one.
        scored = [
            (common_prefix(slot.tokens, prompt) if slot.owner == job.owner else 0, slot)
            for slot in idle
        ]
        shared, slot = max(scored, key=lambda pair: (pair[0], -pair[1].last_used))
        if shared > 0:
            shared = self._resume_longest(slot, job.owner, prompt, shared)
        if shared == 0:
            slot = min(idle, key=lambda s: s.last_used)
            saved = self._saved.best(job.owner, prompt)
            self._evict(slot)
            if saved is not None:
                tokens, state, saved_shared = saved
                if self._restore(slot, tokens, state):
                    self._saved.discard(job.owner, tokens)  # the slot holds it now
                    shared = saved_shared
        if shared < job.shared_prefix:
            shared = self._share_common_prefix(slot, prompt, job.shared_prefix, shared)
        # At least the last prompt token is decoded again, for fresh logits.
        shared = min(shared, len(prompt) - 1)
        if not llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, shared, -1):
            llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
            shared = 0
        slot.tokens = list(prompt[:shared])
        slot.owner = job.owner
        slot.last_used = time.monotonic()
        room = self.model.n_ctx - len(prompt)
        slot.active = ActiveJob(
            job=job,
            sampler=build_sampler(job.params, self.model.n_vocab),
            max_tokens=max(0, min(job.params.max_tokens, room)),
            pending=list(prompt[shared:]),
            cached_tokens=shared,
        )

    def _resume_longest(self, slot: Slot, owner: str, prompt: list[int], shared: int) -> int:
        """`slot`, this owner's, shares `shared` tokens with the prompt. One owner may have
        more conversations than slots (a gateway's service account has all of its users'):
        a saved state sharing more is restored into the slot, and what the slot held beyond
        the common prefix is saved before it is cut. Returns the tokens now shared."""
        saved = self._saved.best(owner, prompt)
        if saved is not None and saved[2] > shared:
            tokens, state, saved_shared = saved
            self._evict(slot)  # its own cache goes to the store in turn
            if not self._restore(slot, tokens, state):
                return 0
            self._saved.discard(owner, tokens)  # the slot holds it now
            return saved_shared
        if len(slot.tokens) - shared >= KEEP_TAIL_TOKENS:
            self._save(slot)
        return shared

    def _share_common_prefix(
        self, slot: Slot, prompt: Sequence[int], length: int, shared: int
    ) -> int:
        """Start from the saved state of the prefix everyone uses (the server's system
        prompt): a small copy of a few tokens' cache instead of evaluating them again."""
        if self._public is None or self._public[0] != tuple(prompt[:length]):
            return shared
        tokens, state = self._public
        llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
        if not self._restore(slot, tokens, state, count=False):
            return 0
        self.stats.shared_prefix_tokens += length
        return length

    def _remember_public_prefix(self, slot: Slot, active: ActiveJob) -> None:
        """Called when a slot's cache holds exactly the shareable prefix: keep its state."""
        tokens = tuple(slot.tokens)
        if self._public is not None and self._public[0] == tokens:
            return
        state = self._sequence_state(slot)
        if state:
            self._public = (tokens, state)

    def _sequence_state(self, slot: Slot, limit: int | None = None) -> bytearray | None:
        """A copy of the slot's KV cache state; None when empty or over `limit` bytes.
        llama.cpp writes it straight into the bytearray kept: a state is megabytes, copied
        on the engine thread while requests wait to start (see `_restore`)."""
        context = self.model.context.ctx
        size = llama_cpp.llama_state_seq_get_size(context, slot.seq_id)
        if size <= 0 or (limit is not None and size > limit):
            return None
        state = bytearray(size)
        view = (ctypes.c_uint8 * size).from_buffer(state)
        written = llama_cpp.llama_state_seq_get_data(context, view, size, slot.seq_id)
        del view  # releases the bytearray, so that it can be cut to size
        if not written:
            return None
        del state[written:]
        return state

    def _save(self, slot: Slot) -> None:
        """Copy the slot's cache into the saved-state store (the slot keeps it too)."""
        if not slot.tokens or slot.owner is None:
            return
        state = self._sequence_state(slot, limit=self._saved.budget)
        if state:
            self._saved.put(slot.owner, slot.tokens, state)
            self.stats.state_saves += 1

    def _evict(self, slot: Slot) -> None:
        """Free a slot for someone else, keeping its cache in the saved-state store."""
        self._save(slot)
        llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
        slot.tokens = []
        slot.owner = None

    def _restore(
        self, slot: Slot, tokens: tuple[int, ...], state: bytearray, *, count: bool = True
    ) -> bool:
        # A view of the saved bytes, not a copy of them: llama.cpp only reads it.
        view = (ctypes.c_uint8 * len(state)).from_buffer(state)
        read = llama_cpp.llama_state_seq_set_data(
            self.model.context.ctx, view, len(state), slot.seq_id
        )
        del view
        if not read:
            llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
            return False
        slot.tokens = list(tokens)
        if count:
            self.stats.state_restores += 1
        return True

    def _step(self) -> None:
        """Build one batch (a token per generating slot, then prompt chunks) and decode it."""
        batch = self._batch
        count = 0
        now = time.monotonic()

        def add(token: int, position: int, seq_id: int, wants_logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = position
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = seq_id
            batch.logits[count] = wants_logits
            count += 1

        for slot in self._slots:
            active = slot.active
            if active is None:
                continue
            active.batch_index = -1
            if self._should_stop(slot, now):
                continue
            if active.last_token is not None:
                add(active.last_token, len(slot.tokens), slot.seq_id, True)
                slot.tokens.append(active.last_token)
                active.last_token = None
                active.batch_index = count - 1
        # Prompts are read in arrival order, and once a step has completed a prompt and holds
        # `prefill_group_tokens` prompt tokens, the next prompts wait for the next step. Reading
        # is compute-bound: eight prompts read together all get their first token when the
        # last is read; read in turn, the first gets it after an eighth of that time and the
        # median after half, for the same work.
        budget = self.prefill_chunk
        reading = [
            (slot, slot.active) for slot in self._slots if slot.active and slot.active.pending
        ]
        reading.sort(key=lambda pair: pair[1].job.submitted_at)  # most steps: nothing to sort
        for slot, active in reading:
            if budget <= 0:
                break
            take = budget
            boundary = active.job.shared_prefix - len(slot.tokens)
            if boundary > 0 and (
                self._public is None or len(self._public[0]) != active.job.shared_prefix
            ):
                take = min(take, boundary)  # end the chunk where the shareable prefix ends
            chunk = active.pending[:take]
            del active.pending[: len(chunk)]
            budget -= len(chunk)
            for offset, token in enumerate(chunk):
                last = offset == len(chunk) - 1 and not active.pending
                add(token, len(slot.tokens), slot.seq_id, last)
                slot.tokens.append(token)
            if not active.pending:
                active.batch_index = count - 1
                if self.prefill_chunk - budget >= self.prefill_group_tokens:
                    break
        # What the last steps produced goes to the event loop now (when due), just before
        # the decode lets go of the GIL: the loop's work on it (SSE, storage) runs beside
        # the decode. Handed off earlier, the woken loop took the GIL at the engine's next
        # release (any ctypes call) and kept it for all of that work while the engine
        # waited: the time between two decodes with 8 streams fell from 1.5 to 0.9 ms.
        self._outbox.flush_due()
        if count == 0:
            return
        batch.n_tokens = count
        started = time.perf_counter()
        if self._decoded_at is not None:
            self.stats.between_decodes_seconds += started - self._decoded_at
        status = llama_cpp.llama_decode(self.model.context.ctx, batch)
        self._decoded_at = time.perf_counter()
        self.stats.steps += 1
        self.stats.decode_seconds += self._decoded_at - started
        if status != 0:
            raise DecodeError(f"llama_decode returned {status}")
        for slot in self._slots:
            active = slot.active
            if (
                active is not None
                and active.job.shared_prefix
                and len(slot.tokens) == active.job.shared_prefix
                and active.pending
            ):
                self._remember_public_prefix(slot, active)
            if active is None or active.batch_index < 0:
                continue
            try:
                self._sample(slot, active)
            except Exception as exc:
                logger.exception("sampling failed", job=active.job.id)
                self._finish(slot, failure=exc)

    def _sample(self, slot: Slot, active: ActiveJob) -> None:
        token = llama_cpp.llama_sampler_sample(
            active.sampler.sampler, self.model.context.ctx, active.batch_index
        )
        now = time.monotonic()
        if active.first_token_at is None:
            active.first_token_at = now
        if self.model.is_end_of_generation(token):
            self._finish(slot, "stop")
            return
        active.completion_tokens += 1
        active.text += active.decoder.decode(self.model.token_bytes(token))
        stops = active.job.params.stop
        stop_at = find_stop(active.text, stops, active.emitted, max(map(len, stops), default=0))
        if stop_at is not None:
            active.text = active.text[:stop_at]
            self._finish(slot, "stop")
            return
        safe_end = len(active.text) - partial_stop_suffix(active.text, stops)
        if safe_end > active.emitted:
            active.job.emit(TokenDelta(active.text[active.emitted : safe_end]))
            active.emitted = safe_end
        active.last_token = token
        if active.completion_tokens >= active.max_tokens:
            self._finish(slot, "length")

    def _should_stop(self, slot: Slot, now: float) -> bool:
        active = slot.active
        assert active is not None
        if active.job.cancelled.is_set():
            self._finish(slot, "cancelled")
            return True
        if now > active.job.deadline:
            self._finish(slot, "timeout")
            return True
        if active.max_tokens == 0 and not active.pending:
            self._finish(slot, "length")
            return True
        return False

    def _finish(
        self,
        slot: Slot,
        reason: FinishReason = "stop",
        failure: Exception | None = None,
    ) -> None:
        active = slot.active
        assert active is not None
        slot.active = None
        slot.last_used = time.monotonic()
        job = active.job
        if active.pending or failure is not None:
            # A prompt never fully read, or a failure: the cache no longer matches `tokens`.
            llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
            slot.tokens = []
            slot.owner = None
        # Otherwise the cache holds exactly `slot.tokens` (a sampled token is never in it
        # before it is decoded) and stays for the owner's next turn.
        now = time.monotonic()
        self._recent_durations.append(now - job.submitted_at)
        if failure is not None:
            self.stats.failed += 1
            job.emit(Failed(failure))
            return
        # The decoder may still hold the first bytes of a character that max_tokens or the
        # deadline cut off: they are dropped, never turned into U+FFFD.
        if len(active.text) > active.emitted:
            job.emit(TokenDelta(active.text[active.emitted :]))
        prompt_tokens = len(job.prompt_tokens)
        first = active.first_token_at or now
        self.stats.record(
            reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=active.completion_tokens,
            submitted=job.submitted_at,
            first=first,
            now=now,
            cached_tokens=active.cached_tokens,
        )
        job.emit(
            Finished(
                finish_reason=reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=active.completion_tokens,
                queue_seconds=active.started_at - job.submitted_at,
                prompt_seconds=first - active.started_at,
                generation_seconds=now - first,
                time_to_first_token=first - job.submitted_at,
                cached_tokens=active.cached_tokens,
            )
        )

    def _fail_active(self, error: Exception) -> None:
        for slot in self._slots:
            if slot.active is not None:
                self._finish(slot, failure=error)

    def _cancel_all(self) -> None:
        for slot in self._slots:
            if slot.active is not None:
                self._finish(slot, failure=BackendUnavailableError("the service is shutting down"))
