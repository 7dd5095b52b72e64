"""What a generation sends back: text and tool-call deltas, then one Finished or Failed
(however many choices it has)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "timeout", "cancelled", "tool_calls"]


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability and, when asked, the most likely others."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Text of one choice (0 unless the request asked for n > 1); with `logprobs`, the
    tokens generated since the last delta of that choice (asked for by `logprobs`)."""

    text: str
    choice: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call of one choice: a call's first piece carries its `id` and
    `name`, the next ones more of its `arguments` (JSON text, in order)."""

    index: int  # the call's position among the choice's calls
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0


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
    # With n > 1: each choice's reason, in order (`finish_reason` is the first's). The
    # token counts are then the sums over the choices (the prompt read once).
    choice_reasons: tuple[FinishReason, ...] = ()

    @property
    def reasons(self) -> tuple[FinishReason, ...]:
        return self.choice_reasons or (self.finish_reason,)


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


Event = TokenDelta | ToolCallDelta | Finished | Failed


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
