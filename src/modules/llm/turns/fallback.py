"""Knowing a generation started: its first event, waited for, so a model that turns out
to be unavailable can hand the turn to its fallback before the client saw anything."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modules.llm.inference import (
    BackendUnavailableError,
    Event,
    Failed,
    Generation,
    QueueFullError,
)


class StartedGeneration:
    """A generation whose first event was already read: it comes first again."""

    def __init__(self, generation: Generation, first: Event, rest: AsyncIterator[Event]) -> None:
        self._generation = generation
        self._first = first
        self._rest = rest

    def cancel(self) -> None:
        self._generation.cancel()

    async def events(self) -> AsyncIterator[Event]:
        yield self._first
        async for event in self._rest:
            yield event


async def started(generation: Generation) -> Generation:
    """The generation once its first event came; raises if that event says the model is
    unavailable (its server down, its queue full)."""
    events = aiter(generation.events())
    try:
        first = await anext(events)
    except BaseException:
        generation.cancel()  # the client left while it waited
        raise
    if isinstance(first, Failed) and isinstance(
        first.error, BackendUnavailableError | QueueFullError
    ):
        raise first.error
    return StartedGeneration(generation, first, events)
