"""What a grammar costs per generated token on the bundled SmolLM2 (49,152-token vocabulary).

One sequence, decoded token by token (the engine's sampler classes, no server), the same
prompt asking for a JSON object, three ways of sampling each token:

* free: the request's sampler chain alone (`llama_sampler_sample`), no grammar;
* grammar in the chain: llama.cpp's grammar sampler first in the chain, which filters all
  49,152 candidates at every step;
* checked first: the engine's `ConstrainedSampling` (llama.cpp's `common_sampler` way):
  sample without the grammar, check that one token, filter every candidate only when the
  grammar rejects it.

Each is run greedy and sampled (temperature 0.8, seed 1). Reported: the sampling time per
token (mean), the decode time per token, tokens/s of both together, and how often the
grammar rejected the token sampled first.

    .venv/bin/python bench/grammar.py                 # 64 tokens a run, 1 thread
    .venv/bin/python bench/grammar.py --tokens 128 --threads 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import llama_cpp
from llama_cpp._internals import LlamaSampler

from modules.config import default_model_path
from modules.llm.inference.grammars import json_grammar
from modules.llm.inference.llamacpp.model import LoadedModel, ModelOptions
from modules.llm.inference.llamacpp.sampler import (
    ConstrainedSampling,
    GrammarCache,
    build_sampler,
)
from modules.llm.inference.sampling import SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "city", "hobbies"],
}
PROMPT = (
    "<|im_start|>user\nDescribe a made-up person as a JSON object with their name, age, "
    "city and hobbies.<|im_end|>\n<|im_start|>assistant\n"
)


class Run:
    def __init__(self, model: LoadedModel, tokens: int) -> None:
        self.model = model
        self.tokens = tokens
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.prompt = model.tokenize(PROMPT, special=True, add_bos=model.add_bos)

    def decode(self, tokens: list[int], start: int) -> float:
        batch = self.batch
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        began = time.perf_counter()
        if llama_cpp.llama_decode(self.model.context.ctx, batch) != 0:
            raise RuntimeError("decode failed")
        return time.perf_counter() - began

    def generate(self, sample: Callable[[int], int]) -> tuple[list[float], list[float], str]:
        llama_cpp.llama_memory_seq_rm(self.model.memory, 0, -1, -1)
        self.decode(self.prompt, 0)
        position, sampling, decoding, text = len(self.prompt), [], [], b""
        for _ in range(self.tokens):
            began = time.perf_counter()
            token = sample(-1)  # the last output of the decode
            sampling.append(time.perf_counter() - began)
            if self.model.is_end_of_generation(token):
                break
            text += self.model.token_bytes(token)
            decoding.append(self.decode([token], position))
            position += 1
        return sampling, decoding, text.decode("utf-8", "replace")


def in_the_chain(params: SamplingParams, model: LoadedModel, grammar: str) -> LlamaSampler:
    """llama.cpp's grammar sampler first, then the request's chain, in one chain."""
    sampler = LlamaSampler()
    parsed = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    llama_cpp.llama_sampler_chain_add(sampler.sampler, parsed)
    rest = build_sampler(params, model.n_vocab)
    while llama_cpp.llama_sampler_chain_n(rest.sampler):
        moved = llama_cpp.llama_sampler_chain_remove(rest.sampler, 0)
        llama_cpp.llama_sampler_chain_add(sampler.sampler, moved)
    return sampler


def modes(
    params: SamplingParams, model: LoadedModel, grammar: str, grammars: GrammarCache
) -> list[tuple[str, Callable[[int], int], ConstrainedSampling | None]]:
    context = model.context.ctx
    free = build_sampler(params, model.n_vocab)
    chained = in_the_chain(params, model, grammar)
    chain, checker = build_sampler(params, model.n_vocab), grammars.sampler(grammar)
    constrained = ConstrainedSampling(context, model.n_vocab)
    return [
        ("free", lambda i: llama_cpp.llama_sampler_sample(free.sampler, context, i), None),
        (
            "grammar in the chain",
            lambda i: llama_cpp.llama_sampler_sample(chained.sampler, context, i),
            None,
        ),
        (
            "checked first",
            lambda i: constrained.sample(chain.sampler, checker.sampler, i),
            constrained,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    path = default_model_path()
    assert path is not None, "the bundled model is missing"
    options = ModelOptions(n_ctx=1024, n_threads=args.threads, n_batch=512, n_gpu_layers=0)
    model = LoadedModel(path, "bench", options)
    grammar = json_grammar(SCHEMA, strict=False, field="response_format")
    grammars = GrammarCache(model.vocab)
    run = Run(model, args.tokens)
    print(f"{path.name}: {model.n_vocab} tokens in the vocabulary, {args.threads} thread(s)")
    print("| sampling | grammar | ms/token sampling | ms/token decode | tokens/s | rejected |")
    print("|---|---|---|---|---|---|")
    for label, params in (
        ("greedy", SamplingParams(temperature=0, max_tokens=args.tokens)),
        ("t=0.8, seed 1", SamplingParams(temperature=0.8, seed=1, max_tokens=args.tokens)),
    ):
        for mode, sample, constrained in modes(params, model, grammar, grammars):
            sampling, decoding, text = run.generate(sample)
            total = sum(sampling) + sum(decoding)
            rejected = f"{constrained.resamples}/{len(sampling)}" if constrained else ""
            print(
                f"| {label} | {mode} | {statistics.mean(sampling) * 1e3:.3f} | "
                f"{statistics.mean(decoding) * 1e3:.2f} | {len(sampling) / total:.1f} | "
                f"{rejected} |"
            )
            print(f"<!-- {text!r} -->")
    grammars.close()
    model.close()


if __name__ == "__main__":
    main()
