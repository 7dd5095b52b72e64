"""The fair lane: at most `width` preparations at once; the waiting owner served longest ago
goes next, so one owner's burst queues behind itself, not in front of others."""

from __future__ import annotations

import asyncio

import pytest

from modules.llm.turns.lane import FairLane


async def run_all(lane: FairLane, jobs: list[tuple[str, str]], order: list[str]) -> None:
    async def job(owner: str, name: str) -> None:
        async with lane.slot(owner):
            order.append(name)
            await asyncio.sleep(0.01)

    tasks = []
    for owner, name in jobs:
        tasks.append(asyncio.create_task(job(owner, name)))
        await asyncio.sleep(0)  # arrive in this order
    await asyncio.gather(*tasks)


async def test_another_owner_waits_only_for_what_runs() -> None:
    lane = FairLane(1)
    order: list[str] = []
    jobs = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("a", "a4"), ("b", "b1"), ("c", "c1")]
    await run_all(lane, jobs, order)
    # a1 was running when b and c arrived: they go before a's second.
    assert order == ["a1", "b1", "c1", "a2", "a3", "a4"]
    assert lane.running == 0


async def test_owners_take_turns_when_all_are_busy() -> None:
    lane = FairLane(1)
    order: list[str] = []
    jobs = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3"), ("b", "b2"), ("b", "b3")]
    await run_all(lane, jobs, order)
    assert order == ["a1", "b1", "a2", "b2", "a3", "b3"]


async def test_width_places_run_at_once() -> None:
    lane = FairLane(2)
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        async with lane.slot("a"):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(job() for _ in range(6)))
    assert most == 2
    assert lane.running == 0


async def test_a_waiter_cancelled_leaves_no_place_behind() -> None:
    lane = FairLane(1)
    release = asyncio.Event()

    async def holder() -> None:
        async with lane.slot("a"):
            await release.wait()

    async def waiter() -> None:
        async with lane.slot("b"):
            pytest.fail("a cancelled waiter never runs")

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    await first
    assert lane.running == 0
    async with lane.slot("c"):  # the lane is free again
        assert lane.running == 1
