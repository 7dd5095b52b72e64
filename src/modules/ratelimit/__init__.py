"""Rate limits and quotas (memory, or Redis shared by every process), and GET
/users/me/usage, which reads the same counters."""

from litestar import Router
from litestar.di import Provide

from modules.ratelimit.controller import UsageController
from modules.ratelimit.quota import Allowance, Quota, RateLimitExceededError
from modules.ratelimit.refusals import QUIET_STATE, REFUSAL_KEY_STATE, KnownRefusals
from modules.ratelimit.service import (
    Limits,
    MemoryCounters,
    RateLimiter,
    RedisCounters,
    Reservation,
    Usage,
    WindowUsage,
    rate_limiter_from_settings,
)


def create_router() -> Router:
    return Router(path="/", route_handlers=[UsageController])


def providers(limiter: RateLimiter) -> dict[str, Provide]:
    return {"rate_limiter": Provide(lambda: limiter, sync_to_thread=False, use_cache=True)}


__all__ = [
    "QUIET_STATE",
    "REFUSAL_KEY_STATE",
    "Allowance",
    "KnownRefusals",
    "Limits",
    "MemoryCounters",
    "Quota",
    "RateLimitExceededError",
    "RateLimiter",
    "RedisCounters",
    "Reservation",
    "Usage",
    "WindowUsage",
    "create_router",
    "providers",
    "rate_limiter_from_settings",
]
