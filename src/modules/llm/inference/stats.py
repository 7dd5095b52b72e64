"""Counters a backend keeps for /health and /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_BUCKETS = (1, 5, 10, 25, 50, 75, 100, 150, 200, 300, 500)
Outcome = Literal["completed", "cancelled", "timed_out", "failed", "rejected"]


class Histogram:
    """Cumulative bucket counts for Prometheus, kept by the thread that generates."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1


@dataclass
class GenerationStats:
    completed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    shared_prefix_tokens: int = 0
    state_saves: int = 0
    state_restores: int = 0
    # The engine's steps: time in llama_decode, and the time between two decodes while
    # working (sampling, streaming hand-off, batch building: the engine's own overhead).
    steps: int = 0
    decode_seconds: float = 0.0
    between_decodes_seconds: float = 0.0
    request_seconds: float = 0.0  # submit to finish, summed over finished requests
    time_to_first_token: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    tokens_per_second: Histogram = field(default_factory=lambda: Histogram(RATE_BUCKETS))

    @property
    def finished(self) -> int:
        return self.completed + self.cancelled + self.timed_out

    def outcomes(self) -> dict[Outcome, int]:
        """Requests by how they ended."""
        return {
            "completed": self.completed,
            "cancelled": self.cancelled,
            "timed_out": self.timed_out,
            "failed": self.failed,
            "rejected": self.rejected,
        }

    def record(
        self,
        reason: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        submitted: float,
        first: float,
        now: float,
        cached_tokens: int = 0,
    ) -> None:
        """Count one finished request: its outcome, tokens, time and speed."""
        if reason == "cancelled":
            self.cancelled += 1
        elif reason == "timeout":
            self.timed_out += 1
        else:
            self.completed += 1
        self.prompt_tokens += prompt_tokens
        self.cached_prompt_tokens += cached_tokens
        self.completion_tokens += completion_tokens
        self.request_seconds += now - submitted
        if completion_tokens:
            self.time_to_first_token.observe(first - submitted)
            if now > first:
                self.tokens_per_second.observe(completion_tokens / (now - first))


@dataclass(frozen=True, slots=True)
class Load:
    """How busy a backend is now."""

    running: bool
    slots: int
    busy_slots: int
    queue_depth: int
    queue_size: int
