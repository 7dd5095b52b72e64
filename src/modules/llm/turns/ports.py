"""What the turn service needs from modules above it, as protocols: the app wires them in,
so `llm` never imports those modules."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class ProfileLike(Protocol):
    system_prompt: str
    settings: dict[str, Any]


@runtime_checkable
class ProfileStore(Protocol):
    async def by_name(self, name: str) -> ProfileLike:
        """The profile of that name; raises the store's own not-found error."""
        ...
