"""Rate limits and quotas (memory, or Redis shared by every process)."""

from modules.ratelimit.service import (
    Limits,
    MemoryCounters,
    RateLimiter,
    RateLimitExceededError,
    RedisCounters,
)

__all__ = ["Limits", "MemoryCounters", "RateLimitExceededError", "RateLimiter", "RedisCounters"]
