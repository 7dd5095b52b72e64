"""Rate limits and quotas: fixed-window counters, in memory or shared through Redis.

Per user: requests per minute, completion tokens per minute and per day (per-role
overrides). Per client IP and per account: login attempts. A limit of 0 means none.
Redis counters use INCRBY with an expiry in one pipeline, so several app processes on one
Redis enforce one limit. Redis down: limits fail open (the service keeps serving) and the
error is logged."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from modules.config import Settings

logger = structlog.get_logger(__name__)

MINUTE = 60
DAY = 86400


class RateLimitExceededError(Exception):
    def __init__(self, what: str, limit: int, window: str, retry_after: int) -> None:
        super().__init__(
            f"rate limit exceeded: {limit} {what} per {window}; retry in {retry_after} s"
        )
        self.what = what
        self.limit = limit
        self.window = window
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int = 60
    tokens_per_minute: int = 20000
    tokens_per_day: int = 500000


class Counters(Protocol):
    async def add(self, key: str, amount: int, ttl: int) -> int: ...
    async def get(self, key: str) -> int: ...


class MemoryCounters:
    """One process's counters."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._lock = asyncio.Lock()

    async def add(self, key: str, amount: int, ttl: int) -> int:
        async with self._lock:
            now = time.monotonic()
            value, expires = self._values.get(key, (0, now + ttl))
            if expires <= now:
                value, expires = 0, now + ttl
            value += amount
            self._values[key] = (value, expires)
            if len(self._values) > 100_000:  # drop expired windows now and then
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            return value

    async def get(self, key: str) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > time.monotonic() else 0


class RedisCounters:
    """Counters shared by every process on the same Redis."""

    def __init__(self, client: Any, prefix: str = "llm-service:ratelimit:") -> None:
        self._client = client
        self._prefix = prefix

    async def add(self, key: str, amount: int, ttl: int) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(self._prefix + key, amount)
            pipe.expire(self._prefix + key, ttl, nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str) -> int:
        value = await self._client.get(self._prefix + key)
        return int(value or 0)


def window_at(now: float, length: int) -> tuple[int, int]:
    """(window number, seconds until it ends) for fixed windows of `length` seconds."""
    number = int(now // length)
    return number, max(1, math.ceil((number + 1) * length - now))


@dataclass
class RateLimiter:
    counters: Counters
    default: Limits
    per_role: dict[str, Limits]
    login_per_ip_per_minute: int
    login_failures_per_account: int
    login_failure_window: int  # seconds
    clock: Callable[[], float] = time.time

    def _window(self, length: int) -> tuple[int, int]:
        return window_at(self.clock(), length)

    def limits_for(self, role: str) -> Limits:
        return self.per_role.get(role, self.default)

    async def _count(self, key: str, amount: int, ttl: int) -> int | None:
        try:
            return await self.counters.add(key, amount, ttl)
        except Exception as exc:  # fail open: limits must not take the service down
            logger.warning("rate limit store unavailable", error=str(exc))
            return None

    async def _read(self, key: str) -> int:
        try:
            return await self.counters.get(key)
        except Exception as exc:
            logger.warning("rate limit store unavailable", error=str(exc))
            return 0

    async def check_request(self, user_id: str, role: str) -> None:
        """Count one generation request; raise when a per-user limit is used up."""
        limits = self.limits_for(role)
        minute, minute_left = self._window(MINUTE)
        if limits.requests_per_minute:
            used = await self._count(f"req:{user_id}:{minute}", 1, MINUTE + 5)
            if used is not None and used > limits.requests_per_minute:
                raise RateLimitExceededError(
                    "requests", limits.requests_per_minute, "minute", minute_left
                )
        day, day_left = self._window(DAY)
        if limits.tokens_per_minute:
            used = await self._read(f"tok:{user_id}:{minute}")
            if used >= limits.tokens_per_minute:
                raise RateLimitExceededError(
                    "completion tokens", limits.tokens_per_minute, "minute", minute_left
                )
        if limits.tokens_per_day:
            used = await self._read(f"tokday:{user_id}:{day}")
            if used >= limits.tokens_per_day:
                raise RateLimitExceededError(
                    "completion tokens", limits.tokens_per_day, "day", day_left
                )

    async def add_tokens(self, user_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        minute, _ = self._window(MINUTE)
        day, _ = self._window(DAY)
        await self._count(f"tok:{user_id}:{minute}", tokens, MINUTE + 5)
        await self._count(f"tokday:{user_id}:{day}", tokens, DAY + 60)

    async def check_login(self, client_ip: str, email: str) -> None:
        minute, minute_left = self._window(MINUTE)
        if self.login_per_ip_per_minute:
            used = await self._count(f"login-ip:{client_ip}:{minute}", 1, MINUTE + 5)
            if used is not None and used > self.login_per_ip_per_minute:
                raise RateLimitExceededError(
                    "login attempts from this address",
                    self.login_per_ip_per_minute,
                    "minute",
                    minute_left,
                )
        if self.login_failures_per_account:
            window, left = self._window(self.login_failure_window)
            failures = await self._read(f"login-fail:{email}:{window}")
            if failures >= self.login_failures_per_account:
                raise RateLimitExceededError(
                    "failed logins for this account",
                    self.login_failures_per_account,
                    f"{self.login_failure_window // 60} minutes",
                    left,
                )

    async def record_login_failure(self, email: str) -> None:
        window, _ = self._window(self.login_failure_window)
        await self._count(f"login-fail:{email}:{window}", 1, self.login_failure_window + 5)


def rate_limiter_from_settings(settings: Settings, redis: Any | None) -> RateLimiter:
    """Shared through `redis` (a redis.asyncio client) when given, else this process's."""
    counters: Counters = MemoryCounters() if redis is None else RedisCounters(redis)
    default = Limits(
        requests_per_minute=settings.rate_limit_requests_per_minute,
        tokens_per_minute=settings.rate_limit_tokens_per_minute,
        tokens_per_day=settings.rate_limit_tokens_per_day,
    )
    return RateLimiter(
        counters=counters,
        default=default,
        # A role's override replaces only the limits it names.
        per_role={
            role: dataclasses.replace(default, **values)
            for role, values in settings.rate_limit_role_overrides.items()
        },
        login_per_ip_per_minute=settings.login_attempts_per_minute_per_ip,
        login_failures_per_account=settings.login_failures_per_account,
        login_failure_window=settings.login_failure_window_seconds,
    )
