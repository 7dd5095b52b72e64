"""One step of continuous batching: build the batch, decode it, sample, hand events out.

Every step decodes ONE batch holding the next token of each generating slot plus a chunk of
at most `prefill_chunk` prompt tokens of slots still reading their prompt, so a new request
joins the running batch at the next step without stalling the streams already running. A
request that finishes, fails or is cancelled leaves its slot at once.

This is the engine's hot loop: it runs once per generated token of every stream, so its
attribute lookups are bound to locals and nothing is allocated per token that need not be.
A grammar, logprobs and several choices cost only the requests that ask for them.

A job with n choices holds n slots: the first reads the prompt; when it is read, every
choice samples its first token from the prompt's logits, and the others' sequences get a
copy of the prompt's cache in the next step, which follows at once (see `run`).
"""

from __future__ import annotations

import time
from collections import deque

import llama_cpp
import structlog

from modules.llm.inference.events import Failed, Finished, FinishReason, TokenDelta
from modules.llm.inference.llamacpp.jobs import Outbox
from modules.llm.inference.llamacpp.model import LoadedModel
from modules.llm.inference.llamacpp.placement import Placement
from modules.llm.inference.llamacpp.sampler import ConstrainedSampling, Logprobs
from modules.llm.inference.llamacpp.slots import ActiveJob, Slot
from modules.llm.inference.sequences import find_stop, partial_stop_suffix
from modules.llm.inference.stats import GenerationStats

logger = structlog.get_logger(__name__)


class DecodeError(RuntimeError):
    """llama.cpp could not decode a batch."""


class BatchStep:
    """Runs the steps over the placement's slots and ends the jobs in them (finished,
    failed): the llama batch, the decode, sampling and the events. Engine thread only."""

    def __init__(
        self,
        model: LoadedModel,
        placement: Placement,
        outbox: Outbox,
        stats: GenerationStats,
        *,
        prefill_chunk: int,
        prefill_group_tokens: int,
    ) -> None:
        self.prefill_chunk = max(1, min(prefill_chunk, model.options.n_batch - model.n_seq))
        # A step that has completed a prompt reads no further prompt once it holds this
        # many prompt tokens (see `_add_prompts`).
        self.prefill_group_tokens = prefill_group_tokens
        self.stats = stats
        self.durations: deque[float] = deque(maxlen=20)  # of the last requests, submit to end
        self.decoded_at: float | None = None  # when the last decode returned, while working
        self._placement = placement
        self._slots = placement.slots
        self._outbox = outbox
        self._context = model.context.ctx
        self._is_end = model.is_end_of_generation
        self._token_bytes = model.token_bytes
        self._constrained = ConstrainedSampling(self._context, model.n_vocab)
        self._logprobs = Logprobs(self._context, model.n_vocab, model.token_bytes)
        # The step read the prompt of a job with several choices: the next one, which
        # copies that prompt's cache, must follow at once.
        self._copying = False
        self._batch = llama_cpp.llama_batch_init(model.options.n_batch, 0, 1)
        batch = self._batch
        # The batch's arrays, bound once: reading a pointer field of a ctypes structure
        # builds a new pointer object every time, and this runs for every token.
        self._arrays = (batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)

    def pause(self) -> None:
        """The engine goes idle: hand out what waits; idle time is not overhead."""
        self._outbox.flush()
        self.decoded_at = None

    def run(self) -> None:
        """Build one batch (a token per generating slot, then prompt chunks) and decode it.

        After a step that read the prompt of a job with several choices, a second one runs
        at once: it copies the prompt's cache into the other choices' sequences, which
        llama.cpp does at that decode. Nothing may change those sequences in between (the
        engine places new jobs between steps), so nothing does."""
        self._step()
        while self._copying:
            self._copying = False
            self._step()

    def _step(self) -> None:
        count = self._add_prompts(self._add_generating())
        # What the last steps produced goes to the event loop now (when due), just before
        # the decode lets go of the GIL: the loop's work on it (SSE, storage) runs beside
        # the decode. Handed off earlier, the woken loop took the GIL at the engine's next
        # release (any ctypes call) and kept it for all of that work while the engine
        # waited: the time between two decodes with 8 streams fell from 1.5 to 0.9 ms.
        self._outbox.flush_due()
        if count == 0:
            return
        self._decode(count)
        self._sample_all()

    def _add_generating(self) -> int:
        """Put the last sampled token of every generating slot in the batch (ending the
        jobs that must stop); how many tokens the batch holds."""
        tokens, positions, n_seq_ids, seq_ids, logits = self._arrays
        count = 0
        now = time.monotonic()
        for slot in self._slots:
            active = slot.active
            if active is None:
                continue
            active.batch_index = -1
            if self._should_stop(slot, active, now):
                continue
            token = active.last_token
            if token is not None:
                if active.copy_from is not None:
                    self._copy_prompt(slot, active)
                tokens[count] = token
                positions[count] = len(slot.tokens)
                n_seq_ids[count] = 1
                seq_ids[count][0] = slot.seq_id
                logits[count] = True
                slot.tokens.append(token)
                active.last_token = None
                active.batch_index = count
                count += 1
        return count

    def _copy_prompt(self, slot: Slot, active: ActiveJob) -> None:
        """A further choice's first token goes into the batch: its sequence starts as a copy
        of the first choice's, which holds exactly the prompt (read by the step before)."""
        source = active.copy_from
        assert source is not None
        self._placement.copy_prompt(source, slot, active.job.prompt_tokens)
        active.copy_from = None

    def _add_prompts(self, count: int) -> int:
        """Add prompt chunks after the `count` tokens in the batch; how many it then holds.

        Prompts are read in arrival order, and once a step has completed a prompt and holds
        `prefill_group_tokens` prompt tokens, the next prompts wait for the next step.
        Reading is compute-bound: eight prompts read together all get their first token
        when the last is read; read in turn, the first gets it after an eighth of that time
        and the median after half, for the same work."""
        tokens, positions, n_seq_ids, seq_ids, logits = self._arrays
        budget = self.prefill_chunk
        reading = [
            (slot, active) for slot in self._slots if (active := slot.active) and active.pending
        ]
        reading.sort(key=lambda pair: pair[1].job.submitted_at)  # most steps: nothing to sort
        for slot, active in reading:
            if budget <= 0:
                break
            take = budget
            boundary = active.job.shared_prefix - len(slot.tokens)
            if boundary > 0 and not self._placement.holds_public_prefix(active.job.shared_prefix):
                take = min(take, boundary)  # end the chunk where the shareable prefix ends
            chunk = active.pending[:take]
            del active.pending[:take]
            budget -= len(chunk)
            position = len(slot.tokens)
            seq_id = slot.seq_id
            for token in chunk:
                tokens[count] = token
                positions[count] = position
                n_seq_ids[count] = 1
                seq_ids[count][0] = seq_id
                logits[count] = False
                position += 1
                count += 1
            slot.tokens.extend(chunk)
            if not active.pending:
                logits[count - 1] = True  # the prompt is read: its last token's logits
                active.batch_index = count - 1
                if active.choices is not None:
                    # Every choice samples its first token from these logits.
                    for _, member in active.choices.running():
                        member.batch_index = count - 1
                    self._copying = True
                if self.prefill_chunk - budget >= self.prefill_group_tokens:
                    break
        return count

    def _decode(self, count: int) -> None:
        batch = self._batch
        batch.n_tokens = count
        stats = self.stats
        started = time.perf_counter()
        if self.decoded_at is not None:
            stats.between_decodes_seconds += started - self.decoded_at
        status = llama_cpp.llama_decode(self._context, batch)
        self.decoded_at = decoded_at = time.perf_counter()
        stats.steps += 1
        stats.decode_seconds += decoded_at - started
        if status != 0:
            raise DecodeError(f"llama_decode returned {status}")

    def _sample_all(self) -> None:
        placement = self._placement
        for slot in self._slots:
            active = slot.active
            if active is None:
                continue
            shared_prefix = active.job.shared_prefix
            if shared_prefix and len(slot.tokens) == shared_prefix and active.pending:
                placement.remember_public_prefix(slot)
            if active.batch_index < 0:
                continue
            try:
                self._sample(slot, active)
            except Exception as exc:
                logger.exception("sampling failed", job=active.job.id)
                self.fail(slot, active, exc)

    def _sample(self, slot: Slot, active: ActiveJob) -> None:
        index = active.batch_index
        grammar = active.grammar
        if grammar is None:
            token = llama_cpp.llama_sampler_sample(active.sampler.sampler, self._context, index)
        else:
            token = self._constrained.sample(active.sampler.sampler, grammar.sampler, index)
        if active.first_token_at is None:
            active.first_token_at = time.monotonic()
        if self._is_end(token):
            self.finish(slot, active, "stop")
            return
        active.completion_tokens += 1
        logprobs = active.logprobs
        if logprobs is not None:
            logprobs.append(self._logprobs.of(index, token, active.top_logprobs))
        active.text += active.decoder.decode(self._token_bytes(token))
        stops = active.job.params.stop
        stop_at = find_stop(active.text, stops, active.emitted, max(map(len, stops), default=0))
        if stop_at is not None:
            active.text = active.text[:stop_at]
            self.finish(slot, active, "stop")
            return
        safe_end = len(active.text) - partial_stop_suffix(active.text, stops)
        if safe_end > active.emitted:
            text = active.text[active.emitted : safe_end]
            if logprobs:
                active.job.emit(TokenDelta(text, active.choice, tuple(logprobs)))
                logprobs.clear()
            else:
                active.job.emit(TokenDelta(text, active.choice))
            active.emitted = safe_end
        active.last_token = token
        if active.completion_tokens >= active.max_tokens:
            self.finish(slot, active, "length")

    def _should_stop(self, slot: Slot, active: ActiveJob, now: float) -> bool:
        if active.job.cancelled.is_set():
            self.finish(slot, active, "cancelled")
            return True
        if now > active.job.deadline:
            self.finish(slot, active, "timeout")
            return True
        if active.max_tokens == 0 and not active.pending:
            self.finish(slot, active, "length")
            return True
        return False

    # Endings ------------------------------------------------------------------------------

    def fail_all(self, error: Exception) -> None:
        for slot in self._slots:
            if slot.active is not None:
                self.fail(slot, slot.active, error)

    def fail(self, slot: Slot, active: ActiveJob, error: Exception) -> None:
        """End the job in `slot`, every choice of it, with `error`."""
        running = [(slot, active)] if active.choices is None else active.choices.running()
        for member_slot, member in running:
            self._release(member_slot, member, keep_cache=False)
        self.stats.failed += 1
        active.job.emit(Failed(error))

    def finish(self, slot: Slot, active: ActiveJob, reason: FinishReason) -> None:
        # A prompt never fully read leaves a cache that does not match `tokens`; otherwise
        # the cache holds exactly `slot.tokens` (a sampled token is never in it before it
        # is decoded) and stays for the owner's next turn.
        now = self._release(slot, active, keep_cache=not active.pending)
        job = active.job
        # The decoder may still hold the first bytes of a character that max_tokens or the
        # deadline cut off: they are dropped, never turned into U+FFFD. Logprobs not sent
        # yet (a stop string's tokens, text held back) go with the last text, or alone.
        tail = active.text[active.emitted :]
        if tail or active.logprobs:
            job.emit(TokenDelta(tail, active.choice, tuple(active.logprobs or ())))
        choices = active.choices
        if choices is None:
            self._finished(active, reason, now, active.completion_tokens)
        elif choices.end(active.choice, reason):
            completion_tokens = sum(member.completion_tokens for _, member in choices.members)
            reasons = tuple(reason for reason in choices.reasons if reason is not None)
            self._finished(choices.members[0][1], reasons[0], now, completion_tokens, reasons)

    def _finished(
        self,
        first_choice: ActiveJob,
        reason: FinishReason,
        now: float,
        completion_tokens: int,
        reasons: tuple[FinishReason, ...] = (),
    ) -> None:
        """The job's one Finished (`reasons`: each choice's, with n > 1), and its stats."""
        job = first_choice.job
        prompt_tokens = len(job.prompt_tokens)
        first = first_choice.first_token_at or now
        self.stats.record(
            reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            submitted=job.submitted_at,
            first=first,
            now=now,
            cached_tokens=first_choice.cached_tokens,
        )
        job.emit(
            Finished(
                finish_reason=reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                queue_seconds=first_choice.started_at - job.submitted_at,
                prompt_seconds=first - first_choice.started_at,
                generation_seconds=now - first,
                time_to_first_token=first - job.submitted_at,
                cached_tokens=first_choice.cached_tokens,
                choice_reasons=reasons,
            )
        )

    def _release(self, slot: Slot, active: ActiveJob, *, keep_cache: bool) -> float:
        """Free the slot (its cache kept for the owner's next turn, or emptied); now."""
        slot.active = None
        if not keep_cache:
            self._placement.forget(slot)
        now = time.monotonic()
        slot.last_used = now
        self.durations.append(now - active.job.submitted_at)
        return now
