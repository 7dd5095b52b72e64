"""What a generation sends back: text deltas, then one Finished or Failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class TokenDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    queue_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    time_to_first_token: float = 0.0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


Event = TokenDelta | Finished | Failed


class Generation(Protocol):
    """A running generation: iterate its events; `cancel()` stops it (the backend still
    sends Finished with reason "cancelled" and the tokens generated so far)."""

    def events(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...


async def drain(queue: asyncio.Queue[Event], cancel: Callable[[], None]) -> AsyncIterator[Event]:
    """A generation's events, up to its Finished or Failed. However the consumer stops
    (disconnect, timeout, error), `cancel()` runs, so the model stops too."""
    try:
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, Finished | Failed):
                return
    finally:
        cancel()
