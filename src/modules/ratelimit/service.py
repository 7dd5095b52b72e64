"""Rate limits and quotas: window counters, in memory or shared through Redis.

Per user: requests in the last minute (a sliding window estimated from two fixed windows'
counters), tokens per minute and per day (fixed windows; what the model reads and writes;
per-role overrides). Per client IP and per account: login attempts. A limit of 0 means none.
Redis counters use INCRBY with an expiry in one pipeline, so several app processes on one
Redis enforce one limit. Redis down: limits fail open (the service keeps serving) and the
error is logged."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from modules.config import Settings
from modules.ratelimit.quota import Allowance, Quota, RateLimitExceededError
from modules.ratelimit.refusals import KnownRefusals

logger = structlog.get_logger(__name__)

MINUTE = 60
DAY = 86400
LOGIN_BACKOFF_SECONDS = 30
# A minute's request counter is read in the next minute too (`SlidingCount`).
REQUESTS_TTL = 2 * MINUTE + 5


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


def requests_key(user_id: str, minute: int) -> str:
    """The counter of a user's generation requests in one minute window."""
    return f"req:{user_id}:{minute}"


def minute_tokens_key(user_id: str, minute: int) -> str:
    """The counter of a user's tokens (charged and reserved) in one minute window."""
    return f"tok:{user_id}:{minute}"


def day_tokens_key(user_id: str, day: int) -> str:
    """The counter of a user's tokens (charged and reserved) in one day window."""
    return f"tokday:{user_id}:{day}"


def window_at(now: float, length: int) -> tuple[int, int]:
    """(window number, seconds until it ends) for fixed windows of `length` seconds."""
    number = int(now // length)
    return number, max(1, math.ceil((number + 1) * length - now))


@dataclass(frozen=True, slots=True)
class SlidingCount:
    """Requests in the last minute, estimated from two fixed windows' counters: the previous
    window's count weighted by the share of it still inside the last minute, plus the
    current one's (the sliding window counter). A fixed window would let a busy account's
    whole allowance through at once each time a minute turns; this one refills it as the
    previous minute's requests age."""

    previous: int
    current: int
    elapsed: float  # seconds into the current window

    @property
    def recent(self) -> float:
        return self.previous * (MINUTE - self.elapsed) / MINUTE + self.current

    def seconds_until_one_more(self, limit: int) -> float:
        """How long until one more request fits under `limit`, if no other comes."""
        room = limit - 1 - self.current  # for the previous window's share, this window
        if room >= 0:
            if self.previous <= room:
                return 0.0
            return max(0.0, MINUTE - MINUTE * room / self.previous - self.elapsed)
        # Not before the next window, where this one's count weighs as the previous.
        rest = MINUTE - self.elapsed
        return rest + max(0.0, MINUTE - MINUTE * (limit - 1) / self.current)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens set aside at admission (the request's max_tokens, then its prompt), settled
    at the end; `quota` is what the user had left when admitted."""

    user_id: str
    minute: int
    day: int
    tokens: int
    quota: Quota = field(default_factory=Quota)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One counter as its user sees it: what was used in the current window, its limit
    (None: no limit), and seconds until the window ends."""

    used: int
    limit: int | None
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class Usage:
    """A user's counters in their current windows, read from the store that enforces them."""

    requests_per_minute: WindowUsage
    tokens_per_minute: WindowUsage
    tokens_per_day: WindowUsage


@dataclass
class RateLimiter:
    counters: Counters
    default: Limits
    per_role: dict[str, Limits]
    login_per_ip_per_minute: int
    login_failures_per_account: int  # per account and address: nobody else can lock you out
    login_failure_window: int  # seconds
    registrations_per_hour_per_ip: int = 0
    in_flight_per_user: int = 0
    clock: Callable[[], float] = time.time
    # Where the counts go while the shared store (Redis) is unreachable: limits then hold
    # per process, never vanish.
    fallback: MemoryCounters = field(default_factory=MemoryCounters)
    store_error: str | None = None
    _in_flight: dict[str, int] = field(default_factory=dict)
    refusals: KnownRefusals = field(init=False)

    def __post_init__(self) -> None:
        # Read at each call: tests stop the clock after the limiter is made.
        self.refusals = KnownRefusals(lambda: self.clock())

    def _window(self, length: int) -> tuple[int, int]:
        return window_at(self.clock(), length)

    def limits_for(self, role: str) -> Limits:
        return self.per_role.get(role, self.default)

    @property
    def degraded(self) -> bool:
        return self.store_error is not None

    async def _count(self, key: str, amount: int, ttl: int) -> int:
        try:
            value = await self.counters.add(key, amount, ttl)
        except Exception as exc:
            self._store_failed(exc)
            return await self.fallback.add(key, amount, ttl)
        self.store_error = None
        return value

    async def _read(self, key: str) -> int:
        try:
            value = await self.counters.get(key)
        except Exception as exc:
            self._store_failed(exc)
            return await self.fallback.get(key)
        self.store_error = None
        return value

    def _store_failed(self, exc: Exception) -> None:
        if self.store_error is None:
            logger.warning("rate limit store unavailable; counting per process", error=str(exc))
        self.store_error = type(exc).__name__

    async def admit(self, user_id: str, role: str, max_tokens: int) -> Reservation:
        """Count one generation request and set its `max_tokens` aside in the token
        budgets, so concurrent requests cannot overshoot a budget by more than one
        request's tokens; raise when a per-user limit is used up. A budget is used up when
        what was charged and reserved before this request reaches it."""
        limits = self.limits_for(role)
        minute, minute_left = self._window(MINUTE)
        day, day_left = self._window(DAY)
        requests: Allowance | None = None
        # Counted without a limit too: a user's usage shows what they sent. Kept for two
        # windows: the next one weighs it.
        key = requests_key(user_id, minute)
        used = await self._count(key, 1, REQUESTS_TTL)
        if limits.requests_per_minute:
            limit = limits.requests_per_minute
            before = await self._requests_in_last_minute(user_id, minute, used - 1)
            wait = before.seconds_until_one_more(limit)
            remaining = math.floor(limit - before.recent - 1)
            requests = Allowance(limit, remaining, minute_left)
            if wait > 0:
                await self._count(key, -1, REQUESTS_TTL)  # a refused request weighs nothing
                raise RateLimitExceededError(
                    "requests",
                    limit,
                    "minute",
                    max(1, math.ceil(wait)),
                    Quota(requests),
                    until=self.clock() + wait,
                )
        budgets = (
            (
                minute_tokens_key(user_id, minute),
                limits.tokens_per_minute,
                "minute",
                minute_left,
                MINUTE,
            ),
            (day_tokens_key(user_id, day), limits.tokens_per_day, "day", day_left, DAY),
        )
        reserved: list[tuple[str, int]] = []
        tightest: Allowance | None = None
        for key, limit, window, left, length in budgets:
            total = await self._count(key, max_tokens, length + 60)
            reserved.append((key, length))
            if not limit:
                continue
            allowance = Allowance(limit, limit - total, left)
            if tightest is None or allowance.remaining < tightest.remaining:
                tightest = allowance
            if total - max_tokens >= limit:
                for taken, taken_length in reserved:  # give the reservation back
                    await self._count(taken, -max_tokens, taken_length + 60)
                quota = Quota(requests, Allowance(limit, 0, left))
                raise RateLimitExceededError("tokens", limit, window, left, quota)
        return Reservation(user_id, minute, day, max_tokens, Quota(requests, tightest))

    async def reserve(self, reservation: Reservation, tokens: int) -> Reservation:
        """Set `tokens` more aside for an admitted request (its prompt, once read)."""
        if tokens <= 0:
            return reservation
        await self._add_to_budgets(reservation, tokens)
        quota = reservation.quota
        if quota.tokens is not None:
            tokens_left = dataclasses.replace(
                quota.tokens, remaining=quota.tokens.remaining - tokens
            )
            quota = dataclasses.replace(quota, tokens=tokens_left)
        return dataclasses.replace(reservation, tokens=reservation.tokens + tokens, quota=quota)

    async def settle(self, reservation: Reservation, charged: int) -> None:
        """Charge what the request cost: the reservation is replaced by the real count."""
        await self._add_to_budgets(reservation, charged - reservation.tokens)

    async def _add_to_budgets(self, reservation: Reservation, change: int) -> None:
        if change:
            user = reservation.user_id
            await self._count(minute_tokens_key(user, reservation.minute), change, MINUTE + 60)
            await self._count(day_tokens_key(user, reservation.day), change, DAY + 60)

    async def _requests_in_last_minute(
        self, user_id: str, minute: int, current: int
    ) -> SlidingCount:
        previous = max(0, await self._read(requests_key(user_id, minute - 1)))
        return SlidingCount(previous, current, self.clock() - minute * MINUTE)

    async def usage(self, user_id: str, role: str) -> Usage:
        """The user's requests in the last minute and tokens this minute and today, from the
        counters `admit` and `settle` keep (tokens set aside for requests still running
        included), against the limits of their role."""
        limits = self.limits_for(role)
        minute, minute_left = self._window(MINUTE)
        day, day_left = self._window(DAY)
        counters = (
            (minute_tokens_key(user_id, minute), limits.tokens_per_minute, minute_left),
            (day_tokens_key(user_id, day), limits.tokens_per_day, day_left),
        )
        minute_tokens, day_tokens = [
            WindowUsage(max(0, await self._read(key)), limit or None, left)
            for key, limit, left in counters
        ]
        current = max(0, await self._read(requests_key(user_id, minute)))
        count = await self._requests_in_last_minute(user_id, minute, current)
        requests = WindowUsage(
            math.ceil(count.recent), limits.requests_per_minute or None, minute_left
        )
        return Usage(requests, minute_tokens, day_tokens)

    def enter(self, user_id: str) -> None:
        """One more request of this user in flight (in this process); raise at the cap, so
        one user cannot take every place in the queue."""
        current = self._in_flight.get(user_id, 0)
        if self.in_flight_per_user and current >= self.in_flight_per_user:
            raise RateLimitExceededError(
                "requests in flight", self.in_flight_per_user, "user at once", 1
            )
        self._in_flight[user_id] = current + 1

    def leave(self, user_id: str) -> None:
        current = self._in_flight.get(user_id, 0) - 1
        if current > 0:
            self._in_flight[user_id] = current
        else:
            self._in_flight.pop(user_id, None)

    async def check_registration(self, client_ip: str) -> None:
        if not self.registrations_per_hour_per_ip:
            return
        hour, left = self._window(3600)
        used = await self._count(f"register-ip:{client_ip}:{hour}", 1, 3600 + 5)
        if used > self.registrations_per_hour_per_ip:
            raise RateLimitExceededError(
                "registrations from this address", self.registrations_per_hour_per_ip, "hour", left
            )

    async def count_login_attempt(self, client_ip: str) -> None:
        """One login attempt from this address (before its body is even read)."""
        minute, minute_left = self._window(MINUTE)
        if self.login_per_ip_per_minute:
            used = await self._count(f"login-ip:{client_ip}:{minute}", 1, MINUTE + 5)
            if used > self.login_per_ip_per_minute:
                raise RateLimitExceededError(
                    "login attempts from this address",
                    self.login_per_ip_per_minute,
                    "minute",
                    minute_left,
                )

    async def check_account(self, client_ip: str, email: str) -> None:
        """Before a password is checked (a login, or a password confirmation): refuse
        while this account is backing off failures from this address."""
        if self.login_failures_per_account:
            window, _ = self._window(self.login_failure_window)
            pair = f"{email}:{client_ip}:{window}"
            failures = await self._read(f"login-fail:{pair}")
            over = failures - self.login_failures_per_account
            if over >= 0:
                # Exponential backoff for this account from this address only: 30 s after
                # the limit, then 60, 120, ... up to the window.
                wait = min(LOGIN_BACKOFF_SECONDS * 2**over, self.login_failure_window)
                waited = self.clock() - await self._read(f"login-last:{pair}")
                if waited < wait:
                    raise RateLimitExceededError(
                        "failed logins for this account from this address",
                        self.login_failures_per_account,
                        f"{self.login_failure_window // 60} minutes",
                        max(1, math.ceil(wait - waited)),
                    )

    async def record_login_failure(self, client_ip: str, email: str) -> None:
        window, _ = self._window(self.login_failure_window)
        pair = f"{email}:{client_ip}:{window}"
        ttl = self.login_failure_window + 5
        await self._count(f"login-fail:{pair}", 1, ttl)
        # When the last failure was: the backoff counts from it.
        last = await self._read(f"login-last:{pair}")
        await self._count(f"login-last:{pair}", int(self.clock()) - last, ttl)

    def health(self) -> dict[str, Any]:
        shared = isinstance(self.counters, RedisCounters)
        status: dict[str, Any] = {"backend": "redis" if shared else "memory", "status": "ok"}
        if self.degraded:
            status |= {
                "status": "degraded",
                "error": self.store_error,
                "note": "Redis is unreachable: limits are counted per process",
            }
        return status


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
        registrations_per_hour_per_ip=settings.registrations_per_hour_per_ip,
        in_flight_per_user=settings.llm_max_in_flight_per_user,
    )
