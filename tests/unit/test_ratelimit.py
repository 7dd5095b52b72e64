"""Rate limits on a controlled clock: fixed windows, token reservations, requests in flight,
login throttling per account and address, a Redis outage, and remembered refusals."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modules.ratelimit import (
    REFUSAL_KEY_STATE,
    KnownRefusals,
    Limits,
    MemoryCounters,
    RateLimiter,
    RateLimitExceededError,
)
from modules.ratelimit import refusals as refusals_module
from modules.ratelimit.refusals import REPEAT_PAUSE_SECONDS
from modules.ratelimit.service import window_at


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, counters: Any = None, **limits: int) -> RateLimiter:
    none = {"requests_per_minute": 0, "tokens_per_minute": 0, "tokens_per_day": 0}
    return RateLimiter(
        counters=counters or MemoryCounters(),
        default=Limits(**{**none, **limits}),
        per_role={"admin": Limits(**none)},
        login_per_ip_per_minute=0,
        login_failures_per_account=2,
        login_failure_window=900,
        registrations_per_hour_per_ip=2,
        in_flight_per_user=2,
        clock=clock,
    )


def test_window_numbers_and_time_left() -> None:
    assert window_at(120.0, 60) == (2, 60)
    assert window_at(179.5, 60) == (2, 1)  # never 0: Retry-After is at least one second
    assert window_at(180.0, 60) == (3, 60)


async def test_requests_per_minute_count_the_last_minute() -> None:
    clock = Clock(6000.0)  # the start of a minute
    rates = limiter(clock, requests_per_minute=2)
    await rates.admit("u", "user", 1)
    await rates.admit("u", "user", 1)
    with pytest.raises(RateLimitExceededError) as refused:
        await rates.admit("u", "user", 1)
    # The two weigh fully to the minute's end, then less as they age: one more fits when
    # they weigh one, half-way through the next minute.
    assert refused.value.retry_after == 90
    assert refused.value.until == 6090.0
    clock.now += 59
    with pytest.raises(RateLimitExceededError) as still:
        await rates.admit("u", "user", 1)
    assert still.value.retry_after == 31  # refused requests weigh nothing
    clock.now += 1  # a new minute: no fresh allowance all at once
    with pytest.raises(RateLimitExceededError) as turned:
        await rates.admit("u", "user", 1)
    assert turned.value.retry_after == 30
    await rates.admit("other", "user", 1)  # each user has their own count
    clock.now += 30
    await rates.admit("u", "user", 1)
    with pytest.raises(RateLimitExceededError):
        await rates.admit("u", "user", 1)


async def test_a_steady_client_gets_its_rate_and_a_flood_no_more() -> None:
    clock = Clock(6000.0)
    rates = limiter(clock, requests_per_minute=60)
    admitted: list[float] = []
    for _ in range(1200):  # ten a second for a minute, then another
        try:
            await rates.admit("flood", "user", 0)
            admitted.append(clock.now - 6000.0)
        except RateLimitExceededError:
            pass
        clock.now += 0.1
    # The first minute's 60 at once; then about one a second, never 60 again at the turn.
    first, second = [t for t in admitted if t < 60], [t for t in admitted if t >= 60]
    assert len(first) == 60
    assert first[-1] < 6.5
    assert 55 <= len(second) <= 60
    assert len([t for t in second if t < 70]) <= 10


async def test_tokens_are_reserved_at_admission_and_settled_after() -> None:
    clock = Clock(6000.0)
    rates = limiter(clock, tokens_per_minute=10, tokens_per_day=15)
    first = await rates.admit("u", "user", 8)
    second = await rates.admit("u", "user", 8)  # 8 reserved < 10: admitted
    # Concurrent requests see each other's reservations: the third is refused, so the
    # budget can be overshot by at most one request's max_tokens.
    with pytest.raises(RateLimitExceededError, match="per minute"):
        await rates.admit("u", "user", 8)
    await rates.settle(first, 2)  # generated 2 of the 8 set aside
    await rates.settle(second, 3)
    third = await rates.admit("u", "user", 4)  # 5 used: room again
    await rates.settle(third, 4)
    await rates.admit("u", "admin", 100)  # the admin role has no limit
    clock.now += 60
    with pytest.raises(RateLimitExceededError, match="per day"):
        await rates.admit("u", "user", 1)  # 9 used today... plus the admin's 100


async def test_requests_in_flight_are_capped_per_user() -> None:
    rates = limiter(Clock(0.0))
    rates.enter("u")
    rates.enter("u")
    with pytest.raises(RateLimitExceededError, match="in flight"):
        rates.enter("u")
    rates.enter("other")
    rates.leave("u")
    rates.enter("u")


async def test_registrations_per_address() -> None:
    rates = limiter(Clock(7200.0))
    await rates.check_registration("1.2.3.4")
    await rates.check_registration("1.2.3.4")
    with pytest.raises(RateLimitExceededError, match="registrations"):
        await rates.check_registration("1.2.3.4")
    await rates.check_registration("5.6.7.8")


async def test_failed_logins_lock_only_that_address_for_that_account() -> None:
    clock = Clock(9000.0)
    rates = limiter(clock)
    await rates.record_login_failure("6.6.6.6", "a@b.co")
    await rates.record_login_failure("6.6.6.6", "a@b.co")
    with pytest.raises(RateLimitExceededError, match="failed logins"):
        await rates.check_account("6.6.6.6", "a@b.co")
    # The attacker's guesses do not lock the owner out from their own address.
    await rates.check_account("1.2.3.4", "a@b.co")
    # Backoff: 30 s after the limit is reached, then twice as long after each failure.
    clock.now += 30
    await rates.check_account("6.6.6.6", "a@b.co")
    await rates.record_login_failure("6.6.6.6", "a@b.co")
    with pytest.raises(RateLimitExceededError) as waiting:
        await rates.check_account("6.6.6.6", "a@b.co")
    assert waiting.value.retry_after == 60
    clock.now += 900  # a new window starts over
    await rates.check_account("6.6.6.6", "a@b.co")


class BrokenCounters:
    async def add(self, key: str, amount: int, ttl: int) -> int:
        raise ConnectionError("redis is down")

    async def get(self, key: str) -> int:
        raise ConnectionError("redis is down")


async def test_an_unreachable_store_falls_back_to_per_process_limits() -> None:
    rates = limiter(Clock(6000.0), BrokenCounters(), requests_per_minute=1)
    await rates.admit("u", "user", 1)
    with pytest.raises(RateLimitExceededError):
        await rates.admit("u", "user", 1)  # still limited, never unlimited
    assert rates.health()["status"] == "degraded"


async def test_memory_counters_expire() -> None:
    counters = MemoryCounters()
    assert await counters.add("k", 3, ttl=0) == 3
    assert await counters.get("k") == 0  # expired at once


# Remembered refusals: the same credential on the same route, until the minute turns.


async def refused(
    refusals: KnownRefusals, credential: str, route: object
) -> RateLimitExceededError | None:
    """The remembered 429 that authentication's check raises, or None: decided in full."""
    try:
        await refusals.check(credential, {"route_handler": route})
    except RateLimitExceededError as error:
        return error
    return None


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refusals_module, "REPEAT_PAUSE_SECONDS", 0)


@pytest.mark.usefixtures("no_pause")
async def test_a_request_limit_refusal_is_remembered_until_its_window_ends() -> None:
    now = [1000.0]
    refusals = KnownRefusals(lambda: now[0])
    route, other_route = object(), object()
    key = KnownRefusals.key_for("token-a", route)
    refusals.remember(key, RateLimitExceededError("requests", 5, "minute", 20, until=1020.0), "u")

    again = await refused(refusals, "token-a", route)
    assert again is not None
    assert (again.what, again.limit, again.retry_after) == ("requests", 5, 20)
    assert again.quota is not None
    assert again.quota.headers()["x-ratelimit-remaining-requests"] == "0"
    assert await refused(refusals, "token-b", route) is None
    assert await refused(refusals, "token-a", other_route) is None

    now[0] = 1019.5
    still = await refused(refusals, "token-a", route)
    assert still is not None
    assert still.retry_after == 1
    now[0] = 1020.0  # the next minute: decided in full again
    assert await refused(refusals, "token-a", route) is None


@pytest.mark.usefixtures("no_pause")
async def test_refusals_that_free_up_are_not_remembered() -> None:
    refusals = KnownRefusals(lambda: 0.0)
    route = object()
    key = KnownRefusals.key_for("token", route)
    refusals.remember(key, RateLimitExceededError("tokens", 100, "minute", 30, until=30.0), "u")
    refusals.remember(key, RateLimitExceededError("requests in flight", 4, "user at once", 1), "u")
    assert await refused(refusals, "token", route) is None


async def test_the_check_refuses_a_remembered_credential_after_a_pause() -> None:
    refusals = KnownRefusals(lambda: 0.0)
    route = object()
    scope: dict[str, Any] = {"route_handler": route}
    await refusals.check("token", scope)
    key = scope["state"][REFUSAL_KEY_STATE]
    refusals.remember(key, RateLimitExceededError("requests", 1, "minute", 60, until=60.0), "u")
    again: dict[str, Any] = {"route_handler": route}
    started = time.monotonic()
    with pytest.raises(RateLimitExceededError):
        await refusals.check("token", again)
    assert time.monotonic() - started >= REPEAT_PAUSE_SECONDS
    assert again["state"]["user_id"] == "u"  # for its log line


async def test_the_limiter_says_when_one_more_request_fits() -> None:
    one_a_minute = limiter(Clock(125.0), requests_per_minute=1)
    await one_a_minute.admit("u", "user", 0)
    with pytest.raises(RateLimitExceededError) as refused:
        await one_a_minute.admit("u", "user", 0)
    # One a minute: the one at 125 s weighs fully until 180 s, then ages out by 240 s.
    assert refused.value.until == 240.0
