"""Sanitizer cost against input size, for honest and adversarial text, and /health's p99
latency while four hostile requests are in flight.

Part one calls the Sanitizer directly on inputs up to the 1 MiB body limit (the
per-message character limit is lifted for it, to show the rules' own scaling). Part two
starts the service on the embedded defaults and measures /health while four clients post
hostile prompts of the largest size the default limits admit.

    .venv/bin/python bench/sanitize.py [--sizes 1024,16384,131072,1048576]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from service import running_service

from modules.sanitizer import SanitizationError, Sanitizer

BIN = Path(sys.executable).parent
HONEST = "Is 3 < 5 && 7 > 2? Here is `code <b>` and some prose, ünïcödé and 日本語. "


# Each removal of a control token joins its neighbours into the next one, as deep as the
# input is long: the worst case for a clean-until-nothing-changes loop.
def nested(size: int) -> str:
    depth = max(0, (size - 10) // 10)
    return "<|im_" * depth + "<|im_end|>" + "end|>" * depth


MARKUP = "<div><b>x</b><script>alert(1)</script><p>" * 4
INVISIBLE = "a\u200b\u202e\u2066b\ufeff"


def text_of(pattern: str, size: int) -> str:
    return (pattern * (size // len(pattern) + 1))[:size]


def seconds(clean: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(SanitizationError):
            clean()
        best = min(best, time.perf_counter() - started)
    return best


def scaling(sizes: list[int]) -> None:
    sanitizer = Sanitizer(max_chars=max(sizes) + 1)
    kinds: dict[str, Callable[[int], str]] = {
        "honest": lambda size: text_of(HONEST, size),
        "nested control tokens": nested,
        "markup": lambda size: text_of(MARKUP, size),
        "invisible characters": lambda size: text_of(INVISIBLE, size),
    }
    print("| input | " + " | ".join(f"{size // 1024} KiB ms" for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name, make in kinds.items():
        row = []
        for size in sizes:
            text = make(size)
            row.append(seconds(lambda t=text: sanitizer.clean(t), 3 if size < 2**20 else 1))
        print(f"| {name} | " + " | ".join(f"{s * 1000:.1f}" for s in row) + " |")


def health_under_load() -> None:
    with running_service(LLM_PARALLEL="2", LLM_MAX_IN_FLIGHT_PER_USER="0") as service:
        idle = probe(service.base_url, 50)
        # The largest hostile prompt the defaults admit (SANITIZER_MAX_CHARS=32000).
        hostile = {"prompt": nested(32000), "settings": {"max_tokens": 1}, "use_cache": False}
        stop = threading.Event()

        def attack() -> None:
            with httpx.Client(
                base_url=service.base_url, headers=service.headers, timeout=120
            ) as client:
                while not stop.is_set():
                    client.post("/llm/generate", json=hostile)

        attackers = [threading.Thread(target=attack) for _ in range(4)]
        for thread in attackers:
            thread.start()
        time.sleep(1)
        loaded = probe(service.base_url, 100)
        stop.set()
        for thread in attackers:
            thread.join()
    print()
    print("| /health | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for name, values in (("idle", idle), ("4 hostile 32k-char prompts in flight", loaded)):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | {p99 * 1000:.1f} |")


def probe(base: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get("/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1024,16384,131072,1048576")
    parser.add_argument("--no-service", action="store_true", help="only the direct timings")
    args = parser.parse_args()
    scaling([int(size) for size in args.sizes.split(",")])
    if not args.no_service:
        health_under_load()


if __name__ == "__main__":
    main()
