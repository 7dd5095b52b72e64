"""Rate limits and quotas (memory, or Redis shared by every process)."""

from litestar.di import Provide

from modules.ratelimit.service import (
    Allowance,
    Limits,
    MemoryCounters,
    Quota,
    RateLimiter,
    RateLimitExceededError,
    RedisCounters,
    Reservation,
    rate_limiter_from_settings,
)


def providers(limiter: RateLimiter) -> dict[str, Provide]:
    return {"rate_limiter": Provide(lambda: limiter, sync_to_thread=False, use_cache=True)}


__all__ = [
    "Allowance",
    "Limits",
    "MemoryCounters",
    "Quota",
    "RateLimitExceededError",
    "RateLimiter",
    "RedisCounters",
    "Reservation",
    "providers",
    "rate_limiter_from_settings",
]
