"""Small, pure helpers on token and text sequences shared by the backends."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def find_stop(text: str, stops: Sequence[str], emitted: int, longest: int) -> int | None:
    """Where the first stop string starts in `text`, looking only past what was emitted."""
    if not stops:
        return None
    window_start = max(0, emitted - longest)
    found = [i for s in stops if (i := text.find(s, window_start)) != -1]
    return min(found) if found else None


def partial_stop_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of a stop string: that
    much must be held back until the next token says whether a stop string follows."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
