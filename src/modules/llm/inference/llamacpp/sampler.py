"""Sampling for one request: the llama.cpp sampler chain of its parameters, its grammar,
and the log-probabilities of what it sampled.

A grammar is applied the way llama.cpp's own `common_sampler` applies it: the token is
sampled without it first, and only when the grammar rejects that token are all candidates
filtered by the grammar and the token sampled again. Most tokens of a constrained answer are
the ones the model would have chosen anyway: on SmolLM2 (49,152 tokens) the grammar rejected
2 to 3 tokens of 40, and sampling took 0.5 to 1 ms a token this way against 9.2 ms with the
grammar sampler in the chain (filtering every candidate at every step) and 0.17 ms with no
grammar at all (bench/grammar.py, on one thread of a busy 2-core machine).
"""

from __future__ import annotations

import ctypes
import hashlib
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals

from modules.llm.inference.errors import BackendUnavailableError, UnsupportedRequestError
from modules.llm.inference.events import TokenLogprob, TopLogprob
from modules.llm.inference.grammars import MAX_REPETITION
from modules.llm.inference.sampling import SamplingParams

# Grammars parsed and kept for copying (a sampler per grammar text, by its digest).
CACHED_GRAMMARS = 64
# GBNF outside its string literals, character classes and comments: the bounds of `{m,n}`.
_GBNF_SKIPPED = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
_BOUNDS = re.compile(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}")
_TOKEN_DATA = llama_cpp.llama_token_data


def build_sampler(params: SamplingParams, n_vocab: int, choice: int = 0) -> internals.LlamaSampler:
    """The chain of `params` without their grammar (see `GrammarCache.sampler`); choice
    `choice` of several draws with the seed plus its index."""
    sampler = internals.LlamaSampler()
    if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
        sampler.add_penalties(
            n_vocab=n_vocab,
            penalty_last_n=64,
            penalty_repeat=params.repeat_penalty,
            penalty_freq=params.frequency_penalty,
            penalty_present=params.presence_penalty,
        )
    if params.temperature == 0:
        sampler.add_greedy()
        return sampler
    seed = params.seed if params.seed is not None else random.getrandbits(32)
    if params.top_k > 0:
        sampler.add_top_k(params.top_k)
    sampler.add_top_p(params.top_p, 1)
    sampler.add_min_p(params.min_p, 1)
    sampler.add_temp(params.resolved_temperature)
    sampler.add_dist((seed + choice) % 2**32)
    return sampler


class GrammarCache:
    """llama.cpp grammar samplers, one parsed per grammar text and kept by the text's sha256
    (least recently used first out, freed when dropped or closed); a request's sampler is
    a copy of the parsed one, which is cheaper than parsing again. A text llama.cpp cannot
    parse is remembered too. Thread-safe: the event loop checks, the engine thread copies."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, size: int = CACHED_GRAMMARS) -> None:
        self.size = size
        self._vocab = vocab
        self._parsed: OrderedDict[bytes, llama_cpp.llama_sampler_p | None] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def check(self, grammar: str) -> None:
        """Raise UnsupportedRequestError for a grammar llama.cpp cannot parse."""
        with self._lock:
            self._parsed_sampler(grammar)

    def sampler(self, grammar: str) -> internals.LlamaSampler:
        """A fresh grammar sampler for one choice, as a chain of one (freed with it)."""
        chain = internals.LlamaSampler()
        with self._lock:
            copy = llama_cpp.llama_sampler_clone(self._parsed_sampler(grammar))
        if not copy:
            raise RuntimeError("llama.cpp could not copy a grammar sampler")
        llama_cpp.llama_sampler_chain_add(chain.sampler, copy)
        return chain

    def close(self) -> None:
        """Free every parsed grammar (before the model that their vocabulary belongs to)."""
        with self._lock:
            self._closed = True
            while self._parsed:
                _, parsed = self._parsed.popitem()
                if parsed:
                    llama_cpp.llama_sampler_free(parsed)

    def __len__(self) -> int:
        return len(self._parsed)

    def _parsed_sampler(self, grammar: str) -> llama_cpp.llama_sampler_p:
        if self._closed:
            raise BackendUnavailableError("the model is not loaded")
        digest = hashlib.sha256(grammar.encode("utf-8", "surrogatepass")).digest()
        if digest in self._parsed:
            self._parsed.move_to_end(digest)
            parsed = self._parsed[digest]
        else:
            parsed = self._parse(grammar)
            self._parsed[digest] = parsed
            while len(self._parsed) > self.size:
                _, dropped = self._parsed.popitem(last=False)
                if dropped:
                    llama_cpp.llama_sampler_free(dropped)
        if not parsed:
            raise UnsupportedRequestError(
                "the answer's grammar is not one llama.cpp can parse", field="response_format"
            )
        return parsed

    def _parse(self, grammar: str) -> llama_cpp.llama_sampler_p | None:
        if "\x00" in grammar or not _bounds_ok(grammar):
            return None
        text = grammar.encode("utf-8", "replace")
        return llama_cpp.llama_sampler_init_grammar(self._vocab, text, b"root") or None


def _bounds_ok(grammar: str) -> bool:
    """Whether every `{m,n}` repetition is one llama.cpp's parser survives: it spells a
    rule per repetition, and never returned from `"a"{3,2}` (llama.cpp 0.3.36)."""
    for match in _BOUNDS.finditer(_GBNF_SKIPPED.sub(" ", grammar)):
        low, comma, high = match.group(1), match.group(2), match.group(3)
        top = int(high) if high else (int(low) if not comma else None)
        if int(low) > MAX_REPETITION or (top is not None and not int(low) <= top <= MAX_REPETITION):
            return False
    return True


def logits_row(context: llama_cpp.llama_context_p, index: int, n_vocab: int) -> np.ndarray:
    """The logits of the batch's `index`-th token, as a view (valid until the next decode)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, index), (n_vocab,))


class ConstrainedSampling:
    """Samples under a grammar as llama.cpp's `common_sampler_sample` does: the chain picks
    a token from all candidates; the grammar checks that one token; only when it is
    rejected does the grammar filter every candidate and the chain pick again. The
    candidate array is the engine's one buffer (sampling runs on its thread alone)."""

    def __init__(self, context: llama_cpp.llama_context_p, n_vocab: int) -> None:
        self._context = context
        self._n_vocab = n_vocab
        self._buffer = (_TOKEN_DATA * n_vocab)()
        # Token ids in order, logits and probabilities zero: the candidates before each
        # step's logits are written in (the samplers reorder them in place).
        self._fresh = (_TOKEN_DATA * n_vocab)()
        fresh = np.frombuffer(memoryview(self._fresh).cast("B"), dtype=np.int32)
        fresh.reshape(n_vocab, 3)[:, 0] = np.arange(n_vocab)
        self._size = ctypes.sizeof(self._buffer)
        floats = np.frombuffer(memoryview(self._buffer).cast("B"), dtype=np.float32)
        self._logit_column = floats.reshape(n_vocab, 3)[:, 1]
        # ctypes objects whose fields are set per token (typed Any: the stubs' field types
        # are the C types, which ctypes converts from and to Python values itself).
        self._start: Any = ctypes.cast(self._buffer, llama_cpp.llama_token_data_p)
        self._candidates: Any = llama_cpp.llama_token_data_array()
        self._one: Any = _TOKEN_DATA()
        self._one_start: Any = ctypes.pointer(self._one)
        self._single: Any = llama_cpp.llama_token_data_array()
        self.resamples = 0  # tokens the grammar rejected, sampled again

    def sample(
        self, chain: llama_cpp.llama_sampler_p, grammar: llama_cpp.llama_sampler_p, index: int
    ) -> int:
        """Sample the `index`-th logits of the last decode under the grammar and accept the
        token into both samplers."""
        candidates = ctypes.byref(self._candidates)
        self._fill(index)
        llama_cpp.llama_sampler_apply(chain, candidates)
        token = self._selected()
        if not self._allowed(grammar, token):
            self.resamples += 1
            self._fill(index)
            llama_cpp.llama_sampler_apply(grammar, candidates)
            llama_cpp.llama_sampler_apply(chain, candidates)
            token = self._selected()
        llama_cpp.llama_sampler_accept(grammar, token)
        llama_cpp.llama_sampler_accept(chain, token)
        return token

    def _fill(self, index: int) -> None:
        ctypes.memmove(self._buffer, self._fresh, self._size)
        self._logit_column[:] = logits_row(self._context, index, self._n_vocab)
        candidates = self._candidates
        candidates.data = self._start
        candidates.size = self._n_vocab
        candidates.selected = -1
        candidates.sorted = False

    def _selected(self) -> int:
        candidates = self._candidates
        if not 0 <= candidates.selected < candidates.size:
            raise RuntimeError("the sampler chain selected no token")
        return int(candidates.data[candidates.selected].id)

    def _allowed(self, grammar: llama_cpp.llama_sampler_p, token: int) -> bool:
        one, single = self._one, self._single
        one.id, one.logit, one.p = token, 1.0, 0.0
        single.data = self._one_start
        single.size = 1
        single.selected = -1
        single.sorted = False
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(single))
        return bool(np.isfinite(one.logit))


class Logprobs:
    """The log-probabilities of sampled tokens: the log-softmax of the raw logits, with
    the `top` most likely tokens of each step, most likely first."""

    def __init__(
        self, context: llama_cpp.llama_context_p, n_vocab: int, token_bytes: Callable[[int], bytes]
    ) -> None:
        self._context = context
        self._n_vocab = n_vocab
        self._token_bytes = token_bytes

    def of(self, index: int, token: int, top: int) -> TokenLogprob:
        logits = logits_row(self._context, index, self._n_vocab)
        shifted = logits - logits.max()
        log_total = float(np.log(np.exp(shifted).sum(dtype=np.float64)))
        alternatives: tuple[TopLogprob, ...] = ()
        if top:
            best = np.argpartition(shifted, -top)[-top:]
            best = best[np.argsort(-shifted[best], kind="stable")]
            alternatives = tuple(
                TopLogprob(
                    token=self._text(other),
                    logprob=min(0.0, float(shifted[other]) - log_total),
                    bytes=tuple(self._token_bytes(int(other))),
                )
                for other in best
            )
        return TokenLogprob(
            token=self._text(token),
            logprob=min(0.0, float(shifted[token]) - log_total),
            bytes=tuple(self._token_bytes(token)),
            top=alternatives,
        )

    def _text(self, token: int) -> str:
        return self._token_bytes(int(token)).decode("utf-8", errors="replace")
