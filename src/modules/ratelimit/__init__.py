"""Rate limits and quotas (memory, or Redis shared by every process)."""

from litestar.di import Provide

from modules.ratelimit.service import (
    Limits,
    MemoryCounters,
    RateLimiter,
    RateLimitExceededError,
    RedisCounters,
    Reservation,
    rate_limiter_from_settings,
)


def providers(limiter: RateLimiter) -> dict[str, Provide]:
    return {"rate_limiter": Provide(lambda: limiter, sync_to_thread=False, use_cache=True)}


__all__ = [
    "Limits",
    "MemoryCounters",
    "RateLimitExceededError",
    "RateLimiter",
    "RedisCounters",
    "Reservation",
    "providers",
    "rate_limiter_from_settings",
]
