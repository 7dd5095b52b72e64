"""Sanitizer cost against input size for every input class, and the service's latency
while four clients send the worst inputs.

Part one calls the Sanitizer directly (its per-message character limit lifted, to show the
rules' own scaling) on each input class at 1 KiB, 2 KiB, ... 1 MiB and prints two tables:
the CPU time per clean (best of several, `time.process_time`) and the ratio
time(2n) / time(n), which stays near 2 for linear work and near 4 for quadratic work. A
class whose clean takes longer than `--budget` seconds is not run at larger sizes.

Part two starts the service on the embedded defaults (real small model) and measures, in the
same run, idle and then while four clients post the worst inputs of the largest size the
default limits admit (SANITIZER_MAX_CHARS, 32,000 characters): `/health` latency and another
user's 1-token `/llm/generate` latency. The four clients run in a process of their own (their
work would otherwise hold the probing process's GIL), in a closed loop: each sends again as
soon as it is answered, 429s included. `--limits default` (the default) keeps the service's
own per-user limits (60 requests a minute, 4 in flight), the four clients one ordinary
account; `--limits off` turns them off: a flood no ordinary account can send. The clients
run at `--clients-nice 19` by default, as if they ran elsewhere: on a 2-core machine their
own CPU would otherwise take a core from the service (`--clients-nice 0` measures that).

    .venv/bin/python bench/sanitize.py                      # both parts
    .venv/bin/python bench/sanitize.py --no-service         # part one only
    .venv/bin/python bench/sanitize.py --max-kib 128        # part one up to 128 KiB
    .venv/bin/python bench/sanitize.py --sanitizer old.py   # part one with another version
                                                            # (e.g. `git show REV:src/...`)
    .venv/bin/python bench/sanitize.py --no-scaling --limits off --clients-nice 0
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HONEST = "Is 3 < 5 && 7 > 2? Here is `code <b>` and some prose, ünïcödé and 日本語. "
MARKUP = "<div><b>x</b><script>alert(1)</script><p>" * 4
INVISIBLE = "a\u200b\u202e\u2066b\ufeff"


# Each removal of a control token joins its neighbours into the next one, as deep as the
# input is long: the worst case for a clean-until-nothing-changes loop.
def nested(size: int) -> str:
    depth = max(0, (size - 10) // 10)
    return "<|im_" * depth + "<|im_end|>" + "end|>" * depth


def text_of(pattern: str, size: int) -> str:
    return (pattern * (size // len(pattern) + 1))[:size]


CLASSES: dict[str, Callable[[int], str]] = {
    "honest": lambda size: text_of(HONEST, size),
    "nested tokens": nested,
    "markup": lambda size: text_of(MARKUP, size),
    "`<a `": lambda size: text_of("<a ", size),
    "`<p `": lambda size: text_of("<p ", size),
    "`<script `": lambda size: text_of("<script ", size),
    "invisible": lambda size: text_of(INVISIBLE, size),
}
# What part two's four clients send, at the per-message limit: the inputs that cost the
# sanitizer most and that the service then refuses (422: too many tokens for the context, or
# empty after cleaning), so that the load is the sanitizer's and not the model's. (The
# markup class keeps its text, and 2,400 tokens of prompt to read would load the engine.)
WORST: dict[str, Callable[[int], str]] = {
    "`<a `": CLASSES["`<a `"],
    "`<p `": CLASSES["`<p `"],
    "`<script `": CLASSES["`<script `"],
    "nested tokens": nested,
    "markup only": lambda size: text_of("<div><b></b><script>alert(1)</script><p>", size),
}


def load_sanitizer(path: str | None) -> tuple[type[Any], type[Exception]]:
    if path is None:
        from modules.sanitizer import SanitizationError, Sanitizer

        return Sanitizer, SanitizationError
    spec = importlib.util.spec_from_file_location("sanitizer_under_test", Path(path))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.Sanitizer, module.SanitizationError


def cpu_seconds(clean: Callable[[], object], error: type[Exception]) -> float:
    """Best CPU time of several cleans: at least 3 and about 0.3 s of work, at most 9."""
    best = float("inf")
    spent = 0.0
    runs = 0
    while runs < 3 or (spent < 0.3 and runs < 9):
        started = time.process_time()
        with contextlib.suppress(error):
            clean()
        elapsed = time.process_time() - started
        best = min(best, elapsed)
        spent += elapsed
        runs += 1
        if elapsed > 2.0:  # a quadratic size: one run says enough
            break
    return best


def scaling(sizes: list[int], sanitizer_path: str | None, budget: float) -> None:
    sanitizer_class, error = load_sanitizer(sanitizer_path)
    sanitizer = sanitizer_class(max_chars=max(sizes) + 1)
    times: dict[str, list[float | None]] = {}
    for name, make in CLASSES.items():
        row: list[float | None] = []
        for size in sizes:
            if row and (row[-1] is None or row[-1] > budget):
                row.append(None)
                continue
            row.append(cpu_seconds(functools.partial(sanitizer.clean, make(size)), error))
        times[name] = row

    names = list(CLASSES)
    print("CPU ms per clean (best of several; - : not run, the smaller size took over the budget)")
    print()
    print("| size | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for index, size in enumerate(sizes):
        cells = [times[name][index] for name in names]
        print(f"| {kib(size)} | " + " | ".join(ms(cell) for cell in cells) + " |")
    print()
    print("time(2n) / time(n)")
    print()
    print("| size | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for index in range(1, len(sizes)):
        ratios: list[str] = []
        for name in names:
            before, after = times[name][index - 1], times[name][index]
            ratios.append(f"{after / before:.2f}" if before and after else "-")
        print(f"| {kib(sizes[index])} | " + " | ".join(ratios) + " |")


def kib(size: int) -> str:
    return f"{size // 1024} KiB" if size < 2**20 else f"{size // 2**20} MiB"


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f}" if seconds < 0.01 else f"{seconds * 1000:.1f}"


# Part two ------------------------------------------------------------------------------

ADMIN_LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


def four_clients(
    base_url: str,
    headers: dict[str, str],
    prompts: list[str],
    nice: int,
    stop: Any,
    answers: Any,
) -> None:
    """Four clients in a closed loop, each posting the prompts in turn (starting at another)
    until `stop` is set; the count of each answer's status goes to `answers`. At `nice`:
    clients elsewhere would not take this machine's cores."""
    import httpx

    os.nice(nice)
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def client(first: int) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as session:
            index = first
            while not stop.is_set():
                body = {
                    "prompt": prompts[index % len(prompts)],
                    "settings": {"max_tokens": 1},
                    "use_cache": False,
                }
                status = session.post("/llm/generate", json=body).status_code
                with lock:
                    counts[status] = counts.get(status, 0) + 1
                index += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers.put(counts)


def under_load(
    requests_each: int,
    prepare_workers: int,
    settings: dict[str, str],
    limits: str,
    clients_nice: int,
) -> None:
    """`limits` "off": no per-user limits, so the four clients flood the service as no
    ordinary account can; "default": the service's own limits (60 requests a minute, 4 in
    flight), the four clients one ordinary account that ignores its 429s and sends again at
    once, and the probing user an admin without limits, whose probes would pass an ordinary
    account's."""
    import httpx
    from service import running_service

    one_token = {"prompt": "Hi", "settings": {"max_tokens": 1}, "use_cache": False}
    statuses: dict[str, dict[int, int]] = {}
    results: dict[str, tuple[list[float], list[float]]] = {}
    limit_settings = (
        {"LLM_MAX_IN_FLIGHT_PER_USER": "0"}
        if limits == "off"
        else {
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "60",
            "LLM_MAX_IN_FLIGHT_PER_USER": "4",
            # The probing admin's own requests are not what is measured: no limit for them.
            "RATE_LIMIT_ROLE_OVERRIDES": json.dumps({"admin": dict.fromkeys(ADMIN_LIMITS, 0)}),
        }
    )
    with running_service(
        **{
            **limit_settings,
            "LLM_PREPARE_WORKERS": str(prepare_workers),
            **settings,
        }
    ) as service:
        other = service.login("other@example.com", "other-password-1", admin=limits != "off")

        def probe() -> tuple[list[float], list[float]]:
            health: list[float] = []
            generate: list[float] = []
            with (
                httpx.Client(base_url=service.base_url, timeout=120) as client,
                httpx.Client(base_url=service.base_url, headers=other, timeout=120) as user,
            ):
                for _ in range(requests_each):
                    started = time.perf_counter()
                    client.get("/health").raise_for_status()
                    health.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    user.post("/llm/generate", json=one_token).raise_for_status()
                    generate.append(time.perf_counter() - started)
                    time.sleep(0.02)
            return health, generate

        def under(name: str, prompts: list[str]) -> None:
            """Probe while four clients post these prompts in turn (each starting at another),
            from another process: their own work must not hold this one's GIL."""
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            answers: multiprocessing.Queue[dict[int, int]] = context.Queue()
            clients = context.Process(
                target=four_clients,
                args=(service.base_url, service.headers, prompts, clients_nice, stop, answers),
            )
            clients.start()
            time.sleep(1)
            results[name] = probe()
            stop.set()
            statuses[name] = answers.get(timeout=120)
            clients.join()

        probe()  # warm up: the first generate loads what it needs
        results["idle"] = probe()
        # The same size in plain words, refused for its length as well: what any 32,000-
        # character request costs (HTTP, JSON, authentication, tokenizing), sanitizer aside.
        under("4 clients, plain 32k-character text", [text_of("lorem ipsum ", 32000)])
        under("4 clients, the worst inputs", [make(32000) for make in WORST.values()])
        results["idle again"] = probe()

    print()
    print(
        f"Per-user limits {limits}. "
        f"{requests_each} sequential probes per phase (a /health, then another user's 1-token "
        "/llm/generate); the worst inputs are 32,000 characters of "
        + ", ".join(WORST)
        + " in turn. Answers to the four clients: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{count} x {status}" for status, count in sorted(c.items()))
            for name, c in statuses.items()
        )
    )
    print()
    print("| phase | /health p50 ms | /health p99 ms | generate p50 ms | generate p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, (health, generate) in results.items():
        print(
            f"| {name} | {p50(health):.1f} | {p99(health):.1f} | {p50(generate):.1f} | "
            f"{p99(generate):.1f} |"
        )
    idle_health, idle_generate = results["idle"]
    worst_health, worst_generate = results["4 clients, the worst inputs"]
    print()
    print(
        f"worst inputs / idle: /health p99 {p99(worst_health) / p99(idle_health):.2f}x, "
        f"generate p50 {p50(worst_generate) / p50(idle_generate):.2f}x, "
        f"p99 {p99(worst_generate) / p99(idle_generate):.2f}x (target: within 2x)"
    )


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--min-kib", type=int, default=1)
    parser.add_argument("--max-kib", type=int, default=1024)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds; see above")
    parser.add_argument("--sanitizer", help="a sanitizer.py to load instead of the package's")
    parser.add_argument("--probes", type=int, default=300, help="part two: probes per phase")
    parser.add_argument("--no-service", action="store_true", help="only part one")
    parser.add_argument(
        "--prepare-workers",
        type=int,
        default=0,
        help="part two: LLM_PREPARE_WORKERS (0: the default; 64: no lane to speak of)",
    )
    parser.add_argument("--no-scaling", action="store_true", help="only part two")
    parser.add_argument(
        "--clients-nice",
        type=int,
        default=19,
        help="part two: the four clients' niceness (e.g. 10: as if they ran elsewhere)",
    )
    parser.add_argument(
        "--limits",
        choices=["off", "default"],
        default="default",
        help="part two: per-user limits off (a flood no ordinary account can send), or the "
        "service's defaults (one ordinary account ignoring its 429s)",
    )
    parser.add_argument(
        "--database-url",
        help="part two: DATABASE_URL (default: the embedded SQLite), migrated beforehand "
        "(`llm-service migrate`)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="part two: another setting for the service (repeatable), e.g. "
        "RATE_LIMIT_REQUESTS_PER_MINUTE=60 LLM_MAX_IN_FLIGHT_PER_USER=2",
    )
    args = parser.parse_args()
    sizes = []
    size = args.min_kib * 1024
    while size <= args.max_kib * 1024:
        sizes.append(size)
        size *= 2
    if not args.no_scaling:
        scaling(sizes, args.sanitizer, args.budget)
    if not args.no_service:
        settings = dict(item.split("=", 1) for item in args.set)
        if args.database_url:
            settings["DATABASE_URL"] = args.database_url
        under_load(args.probes, args.prepare_workers, settings, args.limits, args.clients_nice)


if __name__ == "__main__":
    main()
