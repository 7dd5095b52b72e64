"""Embeddings throughput on the bundled model: inputs per second for requests of 1, 8 and 32
short inputs, and the cost of an input as its length doubles.

Part one drives the local backend in process (tokenizing, the embedder's queue and thread,
its decodes), on the service's default settings: each request size is sent, one request
after another, for `--seconds`. Then requests of 8 inputs of 16, 32, ... tokens: the time
per input and its ratio to the previous length (near 2: linear; attention makes it grow
slowly above 2 for long inputs).

Part two (skipped with `--no-service`) starts `llm-service serve` and sends the same
request sizes through POST /v1/embeddings with the openai SDK (base64, its default): the
same work plus HTTP, authentication, admission and the sanitizer.

    .venv/bin/python bench/embeddings.py [--seconds 3] [--no-service] [--lengths 16 32 64]
    LLM_THREADS=1 .venv/bin/python bench/embeddings.py   # the threads llama.cpp uses
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

import openai
from service import running_service  # bench/service.py

from modules.config import Settings
from modules.llm.inference.embeddings import EmbeddingOptions
from modules.llm.inference.llamacpp import LlamaCppBackend
from modules.llm.module import local_backend_factory, model_specs

SIZES = (1, 8, 32)
LENGTHS = (16, 32, 64, 128, 256, 512)


def short_inputs(count: int, offset: int = 0) -> list[str]:
    return [
        f"Note {offset + i}: the harbour was quiet and the boats were in." for i in range(count)
    ]


def rate(run: Callable[[int], int], seconds: float) -> tuple[float, float]:
    """Inputs per second and the median seconds per request, over `seconds` of requests."""
    times: list[float] = []
    inputs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < 2:
        before = time.perf_counter()
        inputs += run(len(times))
        times.append(time.perf_counter() - before)
    return inputs / sum(times), statistics.median(times)


def in_process(seconds: float, lengths: list[int]) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    (spec,) = model_specs(settings)[:1]
    backend = local_backend_factory(settings)(spec)
    assert isinstance(backend, LlamaCppBackend)
    assert backend.embedder is not None
    loop = asyncio.new_event_loop()

    def embed(texts: list[str]) -> int:
        request = backend.embedding_request(texts, EmbeddingOptions())
        loop.run_until_complete(backend.embed(request, within_seconds=600))
        return request.total_tokens

    try:
        embed(short_inputs(1))  # the context is made on first use
        embedder = backend.embedder
        print(f"model {spec.alias}, {embedder.dimensions} dimensions, {embedder.pooling_name} "
              f"pooling, {settings.effective_threads} threads, context {embedder.context_size}, "
              f"{embedder.batch_inputs} inputs a decode")  # fmt: skip
        print("\nin process (tokenize, queue, decode)\n")
        print("| inputs a request | inputs/s | ms a request | tokens an input |")
        print("|---|---|---|---|")
        for size in SIZES:
            tokens = embed(short_inputs(size)) / size

            def run(n: int, s: int = size) -> int:
                embed(short_inputs(s, n * s))
                return s

            per_second, median = rate(run, seconds)
            print(f"| {size} | {per_second:.1f} | {median * 1000:.1f} | {tokens:.0f} |")
        print("\ninput length doubling (8 inputs a request)\n")
        print("| tokens an input | ms an input | ratio to half as long |")
        print("|---|---|---|")
        previous = None
        for length in lengths:
            # Each its own text (numbers apart): about `length` tokens.
            texts = [f"{i} " + "sea " * (length - 4) for i in range(8)]
            tokens = embed(texts) / 8

            def run(_n: int, t: list[str] = texts) -> int:
                embed(t)
                return len(t)

            _, median = rate(run, seconds / 2)
            per_input = median / 8
            ratio = f"{per_input / previous:.2f}" if previous else "-"
            print(f"| {tokens:.0f} | {per_input * 1000:.2f} | {ratio} |")
            previous = per_input
    finally:
        backend.close()
        loop.close()


def through_the_service(seconds: float) -> None:
    print("\nthrough the service (POST /v1/embeddings, openai SDK, base64)\n")
    print("| inputs a request | inputs/s | ms a request |")
    print("|---|---|---|")
    # The service gets this process's LLM_THREADS (running_service drops LLM_* otherwise).
    threads = os.environ.get("LLM_THREADS")
    with running_service(**({"LLM_THREADS": threads} if threads else {})) as service:
        client = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key=service.token)
        model = client.models.list().data[0].id
        client.embeddings.create(model=model, input="warm up")
        for size in SIZES:

            def run(n: int, s: int = size) -> int:
                answer = client.embeddings.create(model=model, input=short_inputs(s, n * s))
                return len(answer.data)

            per_second, median = rate(run, seconds)
            print(f"| {size} | {per_second:.1f} | {median * 1000:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per request size")
    parser.add_argument("--no-service", action="store_true", help="in process only")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS),
                        help="tokens an input, for the doubling")  # fmt: skip
    args = parser.parse_args()
    in_process(args.seconds, args.lengths)
    if not args.no_service:
        through_the_service(args.seconds)


if __name__ == "__main__":
    main()
