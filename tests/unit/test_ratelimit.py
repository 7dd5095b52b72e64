"""Fixed rate-limit windows on a controlled clock."""

from __future__ import annotations

import pytest

from modules.ratelimit import Limits, MemoryCounters, RateLimiter, RateLimitExceededError
from modules.ratelimit.service import window_at


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **limits: int) -> RateLimiter:
    return RateLimiter(
        counters=MemoryCounters(),
        default=Limits(
            **{"requests_per_minute": 0, "tokens_per_minute": 0, "tokens_per_day": 0, **limits}
        ),
        per_role={"admin": Limits(requests_per_minute=0, tokens_per_minute=0, tokens_per_day=0)},
        login_per_ip_per_minute=0,
        login_failures_per_account=2,
        login_failure_window=900,
        clock=clock,
    )


def test_window_numbers_and_time_left() -> None:
    assert window_at(120.0, 60) == (2, 60)
    assert window_at(179.5, 60) == (2, 1)  # never 0: Retry-After is at least one second
    assert window_at(180.0, 60) == (3, 60)


async def test_requests_per_minute_reset_with_the_next_window() -> None:
    clock = Clock(6000.0)
    rates = limiter(clock, requests_per_minute=2)
    await rates.check_request("u", "user")
    await rates.check_request("u", "user")
    with pytest.raises(RateLimitExceededError) as refused:
        await rates.check_request("u", "user")
    assert refused.value.retry_after == 60
    clock.now += 59
    with pytest.raises(RateLimitExceededError) as still:
        await rates.check_request("u", "user")
    assert still.value.retry_after == 1
    clock.now += 1  # a new minute
    await rates.check_request("u", "user")
    await rates.check_request("other", "user")  # each user has their own count


async def test_tokens_are_charged_after_and_checked_before() -> None:
    clock = Clock(6000.0)
    rates = limiter(clock, tokens_per_minute=10, tokens_per_day=15)
    await rates.check_request("u", "user")
    await rates.add_tokens("u", 10)
    with pytest.raises(RateLimitExceededError, match="per minute"):
        await rates.check_request("u", "user")
    await rates.check_request("u", "admin")  # the admin role has no limit
    clock.now += 60
    await rates.add_tokens("u", 5)
    with pytest.raises(RateLimitExceededError, match="per day"):
        await rates.check_request("u", "user")


async def test_failed_logins_lock_within_their_window() -> None:
    clock = Clock(9000.0)
    rates = limiter(clock)
    await rates.record_login_failure("a@b.co")
    await rates.record_login_failure("a@b.co")
    with pytest.raises(RateLimitExceededError, match="failed logins"):
        await rates.check_login("1.2.3.4", "a@b.co")
    clock.now += 900
    await rates.check_login("1.2.3.4", "a@b.co")


async def test_memory_counters_expire() -> None:
    counters = MemoryCounters()
    assert await counters.add("k", 3, ttl=0) == 3
    assert await counters.get("k") == 0  # expired at once
