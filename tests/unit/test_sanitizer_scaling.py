"""The sanitizer's cost grows linearly with its input, for every input class: doubling a
text at most a little more than doubles the CPU time of cleaning it.

A ratio, never an absolute time: both sizes are measured in the same test, interleaved, best
of several runs of this thread's CPU time (`time.thread_time`, which other processes on a
busy machine barely move), and a class gets a few rounds before it counts as failing. A
quadratic rule gives about 4 (the `"<a " * N` class gave 3.4 to 6.2 with bleach).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from modules.sanitizer import SanitizationError, Sanitizer

SIZE = 32 * 1024
LIMIT = 3.0  # time(2n) / time(n); linear is 2
REPEATS = 5
ROUNDS = 3


def repeated(pattern: str) -> Callable[[int], str]:
    return lambda size: (pattern * (size // len(pattern) + 1))[:size]


def nested(size: int) -> str:
    depth = (size - 10) // 10
    return "<|im_" * depth + "<|im_end|>" + "end|>" * depth


def unclosed_quote_after_openers(size: int) -> str:
    return repeated("<a ")(size - 5) + 'x=">'


CLASSES: dict[str, Callable[[int], str]] = {
    "honest": repeated("Is 3 < 5 && 7 > 2? Here is `code <b>` and prose, ünïcödé, 日本語. "),
    "nested control tokens": nested,
    "markup": repeated("<div><b>x</b><script>alert(1)</script><p>"),
    "unclosed <a": repeated("<a "),
    "unclosed <p": repeated("<p "),
    "unclosed <script": repeated("<script "),
    "invisible characters": repeated("a\u200b\u202e\u2066b\ufeff"),
    # Beyond the benchmark's classes: the other paths through the rules.
    "openers before an unclosed quote": unclosed_quote_after_openers,
    "openers then one far >": lambda size: repeated("<a ")(size - 1) + ">",
    "quoted attributes": repeated("<a title=\"x > y\" href='z'>w</a> "),
    "comments": repeated("<!-- x --> y "),
    "unclosed comments": repeated("<!-- "),
    "code spans and tags": repeated("`a`<b>"),
    "zero-width joiners": repeated("\u200d"),
    "emoji sequences": repeated("👨\u200d👩\u200d👧 "),
    "blank lines and spaces": repeated("\n \n \n" + " " * 40 + "x"),
    "backticks": repeated("`"),
    "NFKC expansion": repeated("\ufdfa"),
}


def cpu_seconds(sanitizer: Sanitizer, text: str) -> float:
    started = time.thread_time()
    with contextlib.suppress(SanitizationError):  # empty after cleaning: the work was done
        sanitizer.clean(text)
    return time.thread_time() - started


@pytest.mark.parametrize("make", CLASSES.values(), ids=CLASSES.keys())
def test_doubling_the_input_at_most_about_doubles_the_time(make: Callable[[int], str]) -> None:
    sanitizer = Sanitizer(max_chars=4 * SIZE)
    small, large = make(SIZE), make(2 * SIZE)
    cpu_seconds(sanitizer, large)  # warm up: lazily built tables, allocator
    ratio = float("inf")
    for _ in range(ROUNDS):
        best_small = best_large = float("inf")
        for _ in range(REPEATS):
            best_small = min(best_small, cpu_seconds(sanitizer, small))
            best_large = min(best_large, cpu_seconds(sanitizer, large))
        ratio = min(ratio, best_large / max(best_small, 1e-6))
        if ratio <= LIMIT:
            break
    assert ratio <= LIMIT, f"time(2n)/time(n) = {ratio:.2f}"
