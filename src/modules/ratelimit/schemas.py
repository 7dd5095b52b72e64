"""The body of GET /users/me/usage."""

from __future__ import annotations

import msgspec

from modules.ratelimit.service import Usage, WindowUsage


class WindowUsageRead(msgspec.Struct):
    used: int
    limit: int | None  # None: no limit
    reset_seconds: int

    @classmethod
    def of(cls, window: WindowUsage) -> WindowUsageRead:
        return cls(used=window.used, limit=window.limit, reset_seconds=window.reset_seconds)


class UsageRead(msgspec.Struct):
    """What the caller used in the current windows of their limits; tokens count what the
    model read and wrote (prompt tokens weighted as the limits weigh them)."""

    requests_per_minute: WindowUsageRead
    tokens_per_minute: WindowUsageRead
    tokens_per_day: WindowUsageRead

    @classmethod
    def of(cls, usage: Usage) -> UsageRead:
        return cls(
            requests_per_minute=WindowUsageRead.of(usage.requests_per_minute),
            tokens_per_minute=WindowUsageRead.of(usage.tokens_per_minute),
            tokens_per_day=WindowUsageRead.of(usage.tokens_per_day),
        )
