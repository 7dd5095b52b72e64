"""Response cache: time of a repeated /llm/generate request (a hit) against its first run
(a miss), through HTTP on a freshly started service. Prints the ratio of medians.

    .venv/bin/python bench/cache.py [--requests 10] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from service import running_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    misses: list[float] = []
    hits: list[float] = []
    with (
        running_service() as service,
        httpx.Client(base_url=service.base_url, headers=service.headers, timeout=120) as client,
    ):
        for index in range(args.requests):
            body = {
                "prompt": f"Write a few sentences about topic number {index}.",
                "settings": {"max_tokens": args.max_tokens, "temperature": 0.7},
            }
            for times, expected in ((misses, False), (hits, True)):
                started = time.perf_counter()
                answer = client.post("/llm/generate", json=body).json()
                times.append(time.perf_counter() - started)
                assert answer["cache_hit"] is expected, answer
    miss, hit = statistics.median(misses), statistics.median(hits)
    print(f"requests: {args.requests} distinct prompts, max_tokens {args.max_tokens}, HTTP")
    print(f"miss median: {miss * 1000:.1f} ms, hit median: {hit * 1000:.1f} ms")
    print(f"hit is {miss / hit:.0f}x faster than the miss")


if __name__ == "__main__":
    main()
