"""The model registry: every configured model by alias, with its state and backend.

It is the one source of truth for what serves: requests, /health, /metrics and
/llm/models all read it. A model that fails to load is marked `failed` with its error;
the others keep serving. Models come from settings at start-up, and from the model
catalog at run time (`add`, `remove`: modules/models), which downloads their files first
(`downloading`, with progress) and whose loads report llama.cpp's progress (`loading`);
`watch` follows an entry's changes. The error is kept and logged redacted (`redact`): a load error's
text names the file or server as configured, which may carry a directory or credentials."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import structlog

from modules.llm.inference.backend import Backend
from modules.llm.inference.descriptions import ModelDescription, ModelKind, public_url, redact
from modules.llm.inference.errors import BackendUnavailableError, ModelNotFoundError
from modules.llm.inference.stats import GenerationStats, Load

logger = structlog.get_logger(__name__)
ModelState = Literal["unloaded", "downloading", "loading", "loaded", "failed"]
# Where an entry comes from: settings (fixed, not deletable through the API) or the catalog.
ModelOrigin = Literal["settings", "catalog"]


@dataclass(frozen=True, slots=True)
class LoadOverrides:
    """Per-model load options (the catalog's), over the service's settings."""

    context_size: int | None = None
    slots: int | None = None
    gpu_layers: int | None = None
    # Embeddings' pooling (LLM_EMBEDDING_POOLING's values; "none": it embeds not).
    pooling: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class ModelSpec:
    """A GGUF file (`path`), or an OpenAI-compatible server (`url`, `url#model`).

    Its repr shows only what is public (the file's name, the servers' public URLs): the
    path's directories, URL credentials and API key are never logged."""

    alias: str
    path: Path | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never logged
    overrides: LoadOverrides = LoadOverrides()
    # Told the load's progress (0 to 1) from the loading thread, where a backend can.
    on_load_progress: Callable[[float], None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def kind(self) -> ModelKind:
        return "local" if self.path is not None else "remote"

    @property
    def source(self) -> str:
        """What serves it, safe to show: the file's name, or the servers' public URLs."""
        if self.path is not None:
            return self.path.name
        return "|".join(public_url(url) for url in (self.url or "").split("|"))

    def secrets(self) -> tuple[str, ...]:
        """The strings as configured (the path, each server's URL) that `redact` must
        replace even where its general rules cannot see them (a space in a directory)."""
        if self.path is not None:
            return (str(self.path), str(self.path.expanduser()), str(self.path.absolute()))
        servers = (self.url or "").split("|")
        return tuple(part for url in servers for part in (url, url.partition("#")[0]))

    def __repr__(self) -> str:
        return f"ModelSpec(alias={self.alias!r}, {self.kind}={self.source!r})"


BackendFactory = Callable[[ModelSpec], Backend]  # blocking: called in a worker thread


@dataclass
class ModelEntry:
    spec: ModelSpec
    state: ModelState = "unloaded"
    error: str | None = None
    backend: Backend | None = None
    origin: ModelOrigin = "settings"
    # While downloading: bytes so far and in all (None: not announced); while downloading
    # or loading: how far, 0 to 1 (None: not known).
    progress: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    # What the loaded weights are: the file (path, size, modification time) or the
    # server(s) and model. Cached answers are keyed by it, so a new file never serves
    # answers of the old one.
    fingerprint: str = ""

    @property
    def alias(self) -> str:
        return self.spec.alias

    def _file(self) -> os.stat_result | None:
        """The model file's size and modification time (None: a server, or no file)."""
        if self.spec.path is None:
            return None
        try:
            return self.spec.path.stat()
        except OSError:
            return None

    def status(self, default: bool) -> ModelStatus:
        backend, file = self.backend, self._file()
        return ModelStatus(
            alias=self.alias,
            kind=self.spec.kind,
            state=self.state,
            default=default,
            error=self.error,
            source=self.spec.source,
            size_bytes=file.st_size if file else None,
            # The file's modification time (Unix seconds); 0 for a server or no file.
            created=int(file.st_mtime) if file else 0,
            description=backend.describe() if backend is not None else None,
            load=backend.load() if backend is not None else None,
            stats=backend.stats if backend is not None else None,
            origin=self.origin,
            progress=self.progress,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
        )


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One configured model as it is now: what /health, /llm/models, /v1/models and /metrics
    show. `description`, `load` and `stats` are there while a backend serves it."""

    alias: str
    kind: ModelKind  # a local file or remote servers, as configured
    state: ModelState
    default: bool
    error: str | None  # why it failed to load, redacted: no directories, no credentials
    source: str  # public: the file's name or the servers' URLs
    size_bytes: int | None
    created: int
    description: ModelDescription | None
    load: Load | None
    stats: GenerationStats | None  # live counters, read at once
    origin: ModelOrigin = "settings"
    progress: float | None = None  # downloading or loading: 0 to 1
    bytes_done: int | None = None
    bytes_total: int | None = None


class ModelRegistry:
    def __init__(
        self,
        specs: list[ModelSpec],
        factory: BackendFactory,
        on_change: Callable[[str], object] | None = None,
        fallbacks: Mapping[str, str] | None = None,
    ) -> None:
        if not specs:
            raise ValueError("at least one model is required")
        self.entries = {spec.alias: ModelEntry(spec) for spec in specs}
        self.default_alias = specs[0].alias
        self.fallbacks = dict(fallbacks or {})  # alias -> the model that stands in for it
        self.fallbacks_taken: Counter[tuple[str, str]] = Counter()
        self._factory = factory
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._changes = asyncio.Condition()  # notified on every entry's change (`watch`)
        self.version = 0  # counts the changes
        self._wakers: set[asyncio.Task[None]] = set()

    @property
    def aliases(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str | None) -> ModelEntry:
        alias = name or self.default_alias
        entry = self.entries.get(alias)
        if entry is None:
            raise ModelNotFoundError(alias, self.aliases)
        return entry

    def get(self, name: str | None = None) -> Backend:
        """The serving backend of that alias (the default when None)."""
        entry = self.entry(name)
        if entry.backend is None or entry.state != "loaded":
            # The load error stays in the log and /llm/models: no file paths in answers.
            raise BackendUnavailableError(f"model {entry.alias!r} is {entry.state}")
        return entry.backend

    def chain(self, name: str | None) -> list[str]:
        """The model asked for, then its fallbacks in order (unknown names raise)."""
        chain = [self.entry(name).alias]
        while (following := self.fallbacks.get(chain[-1])) and following not in chain:
            chain.append(following)
        return chain

    def fell_back(self, origin: str, to: str) -> None:
        """Counted for /metrics; the request's log line names the fallback too."""
        self.fallbacks_taken[(origin, to)] += 1

    @property
    def default(self) -> Backend | None:
        return self.entries[self.default_alias].backend

    @property
    def loaded(self) -> list[ModelEntry]:
        return [entry for entry in self.entries.values() if entry.state == "loaded"]

    def describe_all(self) -> list[ModelStatus]:
        """Every configured model, the default first: the one place the front ends and
        /metrics read what serves."""
        return [
            entry.status(default=alias == self.default_alias)
            for alias, entry in self.entries.items()
        ]

    def describe(self, name: str | None = None) -> ModelStatus:
        """One model (the default when None); unknown names raise."""
        entry = self.entry(name)
        return entry.status(default=entry.alias == self.default_alias)

    async def load(self, name: str, *, announce: bool = True) -> ModelEntry:
        """Load a model; `announce` tells `on_change` (an operator's load, not start-up)."""
        entry = self.entry(name)
        async with self._lock:
            if entry.state == "loaded":
                return entry
            self.update(entry, state="loading", error=None, progress=None)
            try:
                entry.backend = await asyncio.to_thread(self._factory, self._spec_of(entry))
            except Exception as exc:  # one bad file must not take the others down
                self.fail(entry, str(exc) or type(exc).__name__)
                return entry
            entry.fingerprint = _fingerprint(entry.spec)
            self.update(entry, state="loaded", progress=None)
        if announce:
            self._changed(entry.alias)
        return entry

    async def unload(self, name: str, *, announce: bool = True) -> ModelEntry:
        entry = self.entry(name)
        async with self._lock:
            backend, entry.backend = entry.backend, None
            self.update(entry, state="unloaded", error=None, progress=None)
            if backend is not None:
                await asyncio.to_thread(backend.close)
        if announce:
            self._changed(entry.alias)
        return entry

    def add(self, spec: ModelSpec, *, state: ModelState = "unloaded") -> ModelEntry:
        """A catalog model, not loaded yet (`load` loads it)."""
        if spec.alias in self.entries:
            raise ValueError(f"model {spec.alias!r} exists")
        entry = self.entries[spec.alias] = ModelEntry(spec, state=state, origin="catalog")
        self._notify()
        return entry

    async def remove(self, name: str) -> ModelEntry:
        """Unload a catalog model and forget it; its cached answers go (`on_change`)."""
        entry = self.entry(name)
        if entry.origin != "catalog":
            raise ValueError(f"model {entry.alias!r} comes from settings")
        await self.unload(entry.alias, announce=True)
        self.entries.pop(entry.alias, None)
        self._notify()
        return entry

    def update(self, entry: ModelEntry, **fields: object) -> None:
        """Change an entry's state or progress, and tell its watchers. On the loop."""
        for name, value in fields.items():
            setattr(entry, name, value)
        self._notify()

    def fail(self, entry: ModelEntry, error: str) -> None:
        """Mark an entry failed with `error`, redacted (logged too)."""
        error = redact(error, entry.spec.secrets())
        logger.error("model failed to load", model=entry.alias, error=error)
        entry.backend = None
        self.update(entry, state="failed", error=error, progress=None)

    async def watch(
        self, name: str, *, heartbeat: float = 15.0
    ) -> AsyncIterator[ModelStatus | None]:
        """An entry's status now and after each change (None: no change for `heartbeat`
        seconds); ends when the entry is gone."""
        seen = -1
        while name in self.entries:
            quiet = False
            async with self._changes:
                if seen == self.version:  # checked and waited for with no await between
                    try:
                        await asyncio.wait_for(self._changes.wait(), heartbeat)
                    except TimeoutError:
                        quiet = True
            if name not in self.entries:
                return
            if seen != self.version:
                seen = self.version
                yield self.describe(name)
            elif quiet:
                yield None
            # else: woken by an earlier change's late notice; wait again

    def _notify(self) -> None:
        self.version += 1
        task = asyncio.get_running_loop().create_task(self._wake())
        self._wakers.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        async with self._changes:
            self._changes.notify_all()

    def _spec_of(self, entry: ModelEntry) -> ModelSpec:
        """The spec a backend is made from: a catalog entry's load reports its progress."""
        if entry.origin != "catalog":
            return entry.spec
        loop = asyncio.get_running_loop()
        last = [-1.0]

        def progress(fraction: float) -> None:  # from the loading thread
            if fraction - last[0] >= 0.01 or fraction >= 1.0:
                last[0] = fraction
                loop.call_soon_threadsafe(lambda: self.update(entry, progress=fraction))

        return replace(entry.spec, on_load_progress=progress)

    async def load_all(self) -> None:
        # Start-up and shutdown announce nothing: other replicas keep serving these models.
        for alias in self.aliases:
            await self.load(alias, announce=False)
        if not self.loaded:
            errors = "; ".join(f"{e.alias}: {e.error}" for e in self.entries.values())
            raise RuntimeError(f"no model could be loaded ({errors})")

    async def stop_all(self) -> None:
        for alias in self.aliases:
            await self.unload(alias, announce=False)

    def _changed(self, alias: str) -> None:
        if self._on_change is not None:
            self._on_change(alias)


def _fingerprint(spec: ModelSpec) -> str:
    if spec.path is None:
        return spec.url or ""
    try:
        stat = spec.path.stat()
    except OSError:  # a backend that reads no file (tests' fakes)
        return str(spec.path)
    return f"{spec.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
