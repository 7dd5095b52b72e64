"""What a client is told about its limits: the 429's error and OpenAI's rate-limit headers."""

from __future__ import annotations

from dataclasses import dataclass


class RateLimitExceededError(Exception):
    def __init__(
        self,
        what: str,
        limit: int,
        window: str,
        retry_after: int,
        quota: Quota | None = None,
        until: float | None = None,
    ) -> None:
        super().__init__(
            f"rate limit exceeded: {limit} {what} per {window}; retry in {retry_after} s"
        )
        self.what = what
        self.limit = limit
        self.window = window
        self.retry_after = retry_after
        self.quota = quota  # what the client has left, for its rate-limit headers
        self.until = until  # the limiter's clock time when one more fits, where known


@dataclass(frozen=True, slots=True)
class Allowance:
    """One limit as a client sees it: its size, what is left, seconds until it resets."""

    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class Quota:
    """What a user has left after an admission: requests in the last minute and the tightest
    token budget (minute or day); None where no limit is set."""

    requests: Allowance | None = None
    tokens: Allowance | None = None

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers, so a client can pace itself."""
        headers: dict[str, str] = {}
        for kind, allowance in (("requests", self.requests), ("tokens", self.tokens)):
            if allowance is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(allowance.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, allowance.remaining))
                headers[f"x-ratelimit-reset-{kind}"] = duration(allowance.reset_seconds)
        return headers


def duration(seconds: int) -> str:
    """Seconds as OpenAI writes a reset time: "42s", "6m0s", "3h2m1s"."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
