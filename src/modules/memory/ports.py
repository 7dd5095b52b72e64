"""What the memory routes need from the module that owns the models, as a protocol: the
app wires it in, so `memory` never imports `llm`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modules.memory.service import MemoryHit


@dataclass(frozen=True, slots=True)
class SearchResult:
    model: str
    hits: list[MemoryHit]


@runtime_checkable
class MemorySearch(Protocol):
    async def search(self, query: str, limit: int) -> SearchResult:
        """The caller's messages nearest in meaning to `query`, most similar first."""
        ...
