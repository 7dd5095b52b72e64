"""A fair lane for the CPU work before a model reads a prompt (cleaning, fitting history,
tokenizing): at most `width` at once, the waiting ones served one owner at a time in turn.

Without it, every request's preparation runs at once in its own worker thread, so a few
clients sending large prompts as fast as they can take every core, and /health and
another user's one-word turn wait behind them. With it, preparation takes at most `width`
cores (one fewer than the machine has, by default), and one owner's burst queues behind
itself only: another owner's request waits for at most the preparations already running."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Owners whose last turn is remembered (the least recent forgotten first).
REMEMBERED_OWNERS = 10_000


class FairLane:
    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self.running = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        # When each owner last got a place: the waiting owner served longest ago goes next.
        self._turns = itertools.count()
        self._last_turn: OrderedDict[str, int] = OrderedDict()

    @asynccontextmanager
    async def slot(self, owner: str) -> AsyncIterator[None]:
        """Hold one of the lane's places for the block (waiting, in turn, for one)."""
        if self.running < self.width and not self._waiting:
            self.running += 1
        else:
            handed = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(owner, deque()).append(handed)
            try:
                await handed
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._hand_on()  # the place came as the waiter left: pass it on
                else:
                    self._forget(owner, handed)
                raise
        self._served(owner)
        try:
            yield
        finally:
            self._hand_on()

    def _served(self, owner: str) -> None:
        self._last_turn[owner] = next(self._turns)
        self._last_turn.move_to_end(owner)
        if len(self._last_turn) > REMEMBERED_OWNERS:
            self._last_turn.popitem(last=False)

    def _hand_on(self) -> None:
        """A place is free: to the waiting owner served longest ago."""
        while self._waiting:
            owner = min(self._waiting, key=lambda waiting: self._last_turn.get(waiting, -1))
            queue = self._waiting[owner]
            handed = queue.popleft()
            if not queue:
                del self._waiting[owner]
            if not handed.done():
                handed.set_result(None)
                return
        self.running -= 1

    def _forget(self, owner: str, handed: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is not None and handed in queue:
            queue.remove(handed)
            if not queue:
                del self._waiting[owner]
