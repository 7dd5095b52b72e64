"""Several models by alias: each loaded model has its own engine (one context each).

A model that fails to load is marked `failed` with its error; the others keep serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from modules.config import Settings
from modules.llm.engine import EngineUnavailableError
from modules.llm.runtime import start_generation_service
from modules.llm.service import GenerationService

logger = structlog.get_logger(__name__)
State = Literal["unloaded", "loading", "loaded", "failed"]


class ModelNotFoundError(LookupError):
    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"no model named {name!r}; available: {', '.join(available)}")
        self.name = name
        self.available = available


@dataclass
class ModelEntry:
    alias: str
    path: Path
    state: State = "unloaded"
    error: str | None = None
    service: GenerationService | None = None

    @property
    def size_bytes(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        specs: list[tuple[str, Path]],
        on_change: Callable[[str], object] | None = None,
    ) -> None:
        self.settings = settings
        self.entries = {alias: ModelEntry(alias, path) for alias, path in specs}
        self.default_alias = specs[0][0]
        self._on_change = on_change
        self._lock = asyncio.Lock()

    @property
    def aliases(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str | None) -> ModelEntry:
        alias = name or self.default_alias
        entry = self.entries.get(alias)
        if entry is None:
            raise ModelNotFoundError(alias, self.aliases)
        return entry

    def get(self, name: str | None = None) -> GenerationService:
        """The serving model of that name (the default when None)."""
        entry = self.entry(name)
        if entry.service is None or entry.state != "loaded":
            detail = f": {entry.error}" if entry.error else ""
            raise EngineUnavailableError(f"model {entry.alias!r} is {entry.state}{detail}")
        return entry.service

    @property
    def default(self) -> GenerationService | None:
        return self.entries[self.default_alias].service

    async def load(self, name: str) -> ModelEntry:
        entry = self.entry(name)
        async with self._lock:
            if entry.state == "loaded":
                return entry
            entry.state, entry.error = "loading", None
            try:
                entry.service = await asyncio.to_thread(
                    start_generation_service, self.settings, entry.path, entry.alias
                )
            except Exception as exc:  # one bad file must not take the others down
                logger.error("model failed to load", model=entry.alias, error=str(exc))
                entry.state, entry.error, entry.service = "failed", str(exc), None
                return entry
            entry.state = "loaded"
        self._changed(entry.alias)
        return entry

    async def unload(self, name: str) -> ModelEntry:
        entry = self.entry(name)
        async with self._lock:
            service, entry.service = entry.service, None
            entry.state, entry.error = "unloaded", None
            if service is not None:
                await asyncio.to_thread(service.engine.stop)
        self._changed(entry.alias)
        return entry

    async def load_all(self) -> None:
        for alias in self.aliases:
            await self.load(alias)

    async def stop_all(self) -> None:
        for alias in self.aliases:
            await self.unload(alias)

    def _changed(self, alias: str) -> None:
        if self._on_change is not None:
            self._on_change(alias)
