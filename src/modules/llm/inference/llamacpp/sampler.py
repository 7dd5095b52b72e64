"""A llama.cpp sampler chain for one request's sampling parameters."""

from __future__ import annotations

import random

from llama_cpp import _internals as internals

from modules.llm.inference.sampling import SamplingParams


def build_sampler(params: SamplingParams, n_vocab: int) -> internals.LlamaSampler:
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
    sampler.add_dist(seed)
    return sampler
