"""Sequence slots of the shared context and the store of saved sequence states."""

from __future__ import annotations

import codecs
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from llama_cpp import _internals as internals

from modules.llm.inference.events import FinishReason, TokenLogprob
from modules.llm.inference.llamacpp.jobs import GenerationJob
from modules.llm.inference.sequences import common_prefix


@dataclass(eq=False)
class ActiveJob:
    """A job (one of its choices) being served in a slot."""

    job: GenerationJob
    sampler: internals.LlamaSampler
    max_tokens: int
    pending: list[int]  # prompt tokens not yet decoded
    cached_tokens: int
    grammar: internals.LlamaSampler | None = None  # a chain of the grammar sampler alone
    # The logprobs of tokens sampled and not yet sent (None: not asked for), and how many
    # alternatives each step lists.
    logprobs: list[TokenLogprob] | None = None
    top_logprobs: int = 0
    choice: int = 0
    choices: Choices | None = None  # with n > 1, every choice of the job
    # A choice after the first, until its first token is decoded: the slot whose cache
    # (the prompt) its own sequence starts from.
    copy_from: Slot | None = None
    started_at: float = field(default_factory=time.monotonic)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    text: str = ""
    emitted: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    last_token: int | None = None  # sampled, not yet decoded
    batch_index: int = -1  # where this slot's logits are in the current batch


@dataclass(eq=False)
class Choices:
    """The choices of a job with n > 1, each in a slot of its own: the first reads the
    prompt, the others sample from its logits and continue on copies of its cache. The
    job ends (one Finished) when the last one does; a failure ends them all."""

    members: list[tuple[Slot, ActiveJob]]
    reasons: list[FinishReason | None]

    def end(self, choice: int, reason: FinishReason) -> bool:
        """Record how `choice` ended; whether it was the last one running."""
        self.reasons[choice] = reason
        return all(reason is not None for reason in self.reasons)

    def running(self) -> list[tuple[Slot, ActiveJob]]:
        return [(slot, active) for slot, active in self.members if slot.active is active]


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # exactly what the KV cache holds
    owner: str | None = None
    active: ActiveJob | None = None
    last_used: float = 0.0


class SavedStates:
    """Sequence states of idle slots, by owner and exact tokens, LRU within a byte budget.
    A state is only ever found for the owner that saved it."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], bytearray] = OrderedDict()

    def put(self, owner: str, tokens: Sequence[int], state: bytearray) -> None:
        if len(state) > self.budget:
            return
        key = (owner, tuple(tokens))
        if key in self._entries:
            self.used -= len(self._entries.pop(key))
        self._entries[key] = state
        self.used += len(state)
        while self.used > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self.used -= len(evicted)

    def best(
        self, owner: str, prompt: Sequence[int]
    ) -> tuple[tuple[int, ...], bytearray, int] | None:
        """The saved state of this owner sharing the longest prefix with `prompt`."""
        best: tuple[tuple[int, ...], bytearray, int] | None = None
        for (entry_owner, tokens), state in self._entries.items():
            if entry_owner != owner:
                continue
            shared = common_prefix(tokens, prompt)
            if shared and (best is None or shared > best[2]):
                best = (tokens, state, shared)
        if best is not None:
            self._entries.move_to_end((owner, best[0]))
        return best

    def discard(self, owner: str, tokens: Sequence[int]) -> None:
        state = self._entries.pop((owner, tuple(tokens)), None)
        if state is not None:
            self.used -= len(state)

    def __len__(self) -> int:
        return len(self._entries)
