"""Where a job runs and what its slot's KV cache already holds.

A finished slot keeps its KV cache with the exact tokens it holds. A later request of the
same owner whose prompt starts with those tokens reuses them and evaluates only the rest;
when a slot is needed for someone else, its sequence state is saved to an in-memory LRU
store (bounded in bytes) and can be restored into any slot. Reuse never crosses owners,
except for the prefix every prompt with the server's default system prompt shares.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence

import llama_cpp

from modules.llm.inference.llamacpp.jobs import GenerationJob
from modules.llm.inference.llamacpp.model import LoadedModel
from modules.llm.inference.llamacpp.slots import SavedStates, Slot
from modules.llm.inference.sequences import common_prefix
from modules.llm.inference.stats import GenerationStats

# A slot about to be reused keeps (saves) what it held beyond the new prompt's common
# prefix when that is at least this many tokens: another conversation's cache.
KEEP_TAIL_TOKENS = 16


class Placement:
    """The context's sequence slots and the sequence states kept for later: which slot a
    job takes, and how much of its prompt that slot's cache already holds (its own, a
    saved state restored, or the shared public prefix). Engine thread only."""

    def __init__(self, model: LoadedModel, stats: GenerationStats, state_cache_bytes: int) -> None:
        self.slots = [Slot(seq_id=i) for i in range(model.n_seq)]
        self.stats = stats
        self._context = model.context.ctx
        self._memory = model.memory
        self._saved = SavedStates(state_cache_bytes)
        # The cache state of the prefix every prompt with the default system prompt shares.
        self._public: tuple[tuple[int, ...], bytearray] | None = None

    @property
    def saved_states(self) -> int:
        return len(self._saved)

    def place(self, job: GenerationJob) -> tuple[Slot, int]:
        """Take an idle slot for `job` (there must be one) and prepare its cache: returns
        the slot, now the job owner's, and how many leading prompt tokens it holds (at
        most all but the last, which is decoded again for fresh logits)."""
        prompt = job.prompt_tokens
        idle = [slot for slot in self.slots if slot.active is None]
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
            shared = self._restore_saved(slot, job.owner, prompt)
        if shared < job.shared_prefix:
            shared = self._share_common_prefix(slot, prompt, job.shared_prefix, shared)
        shared = min(shared, len(prompt) - 1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, shared, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            shared = 0
        slot.tokens = list(prompt[:shared])
        slot.owner = job.owner
        slot.last_used = time.monotonic()
        return slot, shared

    def take(self, owner: str) -> Slot:
        """An idle slot (there must be one) for a further choice of `owner`'s job, whose
        first choice is placed: empty, as it starts from a copy of that choice's cache. An
        empty slot is taken first, else the least recently used (its cache saved)."""
        idle = [slot for slot in self.slots if slot.active is None]
        slot = min(idle, key=lambda s: (bool(s.tokens), s.last_used))
        self._evict(slot)
        slot.owner = owner
        slot.last_used = time.monotonic()
        return slot

    def copy_prompt(self, source: Slot, slot: Slot, prompt: list[int]) -> None:
        """Make `slot`'s cache a copy of `source`'s, which holds exactly `prompt`.

        With a sequence per stream (kv_unified off), llama.cpp copies the buffers at the
        next decode, not now: call this just before a decode that includes `slot`, with
        nothing else done to either sequence in between."""
        llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, -1, -1)
        slot.tokens = list(prompt)

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

    def _restore_saved(self, slot: Slot, owner: str, prompt: list[int]) -> int:
        """Free `slot` (its cache saved) and restore into it the owner's saved state that
        shares the most with the prompt, if any. Returns the tokens now shared."""
        saved = self._saved.best(owner, prompt)
        self._evict(slot)
        if saved is None:
            return 0
        tokens, state, saved_shared = saved
        if not self._restore(slot, tokens, state):
            return 0
        self._saved.discard(owner, tokens)  # the slot holds it now
        return saved_shared

    def _share_common_prefix(
        self, slot: Slot, prompt: Sequence[int], length: int, shared: int
    ) -> int:
        """Start from the saved state of the prefix everyone uses (the server's system
        prompt): a small copy of a few tokens' cache instead of evaluating them again."""
        if self._public is None or self._public[0] != tuple(prompt[:length]):
            return shared
        tokens, state = self._public
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        if not self._restore(slot, tokens, state, count=False):
            return 0
        self.stats.shared_prefix_tokens += length
        return length

    def holds_public_prefix(self, length: int) -> bool:
        """Whether the state of a shareable prefix of `length` tokens is kept."""
        return self._public is not None and len(self._public[0]) == length

    def remember_public_prefix(self, slot: Slot) -> None:
        """Called when a slot's cache holds exactly the shareable prefix: keep its state."""
        tokens = tuple(slot.tokens)
        if self._public is not None and self._public[0] == tokens:
            return
        state = self._sequence_state(slot)
        if state:
            self._public = (tokens, state)

    def forget(self, slot: Slot) -> None:
        """Empty the slot's cache, which no longer matches its tokens (a prompt never fully
        read, a failure)."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens = []
        slot.owner = None

    def _sequence_state(self, slot: Slot, limit: int | None = None) -> bytearray | None:
        """A copy of the slot's KV cache state; None when empty or over `limit` bytes.
        llama.cpp writes it straight into the bytearray kept: a state is megabytes, copied
        on the engine thread while requests wait to start (see `_restore`)."""
        size = llama_cpp.llama_state_seq_get_size(self._context, slot.seq_id)
        if size <= 0 or (limit is not None and size > limit):
            return None
        state = bytearray(size)
        view = (ctypes.c_uint8 * size).from_buffer(state)
        written = llama_cpp.llama_state_seq_get_data(self._context, view, size, slot.seq_id)
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
        self.forget(slot)

    def _restore(
        self, slot: Slot, tokens: tuple[int, ...], state: bytearray, *, count: bool = True
    ) -> bool:
        # A view of the saved bytes, not a copy of them: llama.cpp only reads it.
        view = (ctypes.c_uint8 * len(state)).from_buffer(state)
        read = llama_cpp.llama_state_seq_set_data(self._context, view, len(state), slot.seq_id)
        del view
        if not read:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            return False
        slot.tokens = list(tokens)
        if count:
            self.stats.state_restores += 1
        return True
