"""A circuit breaker per remote node: a dead server fails in milliseconds, not one
timeout per request."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class CircuitBreaker:
    """Open after `threshold` failures in a row; while open, refuse at once for `cooldown`
    seconds, then let one request try."""

    threshold: int = 3
    cooldown: float = 10.0
    failures: int = 0
    open_until: float = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def succeeded(self) -> None:
        self.failures, self.open_until = 0, 0.0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown
