"""The model catalog: models added at run time, applied on every replica.

Rows live in the database (`records.CatalogModel`). The replica that takes a POST stores
the row and starts making it serve at once; every replica reads the rows every
MODEL_SYNC_SECONDS and applies what changed: a new row is added to its model registry and
made to serve (a download first, into MODELS_DIR/downloads, then the GGUF's header checked,
then the load), a row gone is unloaded and forgotten, its downloaded file removed and its
cached answers dropped. Replicas that share MODELS_DIR download a file once: the others
wait for its lock, showing the download's progress from its `.part` (and the whole size the
downloading replica writes in the lock file), and find it whole."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from modules.config import Settings
from modules.llm.inference import LoadOverrides, ModelEntry, ModelRegistry, ModelSpec
from modules.models.download import DownloadError, allowed, download, hash_file
from modules.models.gguf import NotGGUFError, read_gguf_info
from modules.models.records import CatalogModel

logger = structlog.get_logger(__name__)
SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


NO_LOCAL_MODELS = (
    "this replica loads no model files (MODEL_CATALOG_LOCAL=false, a gateway): add the model "
    'on an inference node, then here as {"alias": ..., "remote": "NODE_URL/v1#ALIAS"}'
)


class CatalogError(ValueError):
    """A request the catalog refuses; `status_code` 400, 404 or 409, `field` what is wrong."""

    def __init__(self, detail: str, *, status_code: int = 400, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.status_code, self.field = detail, status_code, field


@dataclass(frozen=True, slots=True)
class NewModel:
    """What POST /llm/models asks for: exactly one of path, url, remote."""

    alias: str
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    remote: str | None = None
    api_key: str | None = None
    context_size: int | None = None
    slots: int | None = None
    gpu_layers: int | None = None
    pooling: str | None = None


class ModelCatalog:
    def __init__(self, settings: Settings, sessions: SessionFactory, registry: ModelRegistry):
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.models_dir = Path(settings.models_dir).expanduser()
        self.prefixes = [
            p.strip() for p in settings.model_download_prefixes.split(",") if p.strip()
        ]
        self._work: dict[str, asyncio.Task[None]] = {}  # alias -> making it serve
        # A sync's read and apply, an addition and a deletion, one at a time: a sync never
        # applies rows older than this replica's own change.
        self._changing = asyncio.Lock()

    # --- the API's side -------------------------------------------------------------------

    async def add(self, new: NewModel, created_by: uuid.UUID | None) -> ModelEntry:
        """Check and store a new model, and start making it serve here."""
        row = self._checked_row(new, created_by)
        if new.alias in self.registry.entries:
            raise CatalogError(f"model {new.alias!r} exists", status_code=409, field="alias")
        async with self._changing:
            try:
                async with self.sessions() as session:
                    session.add(row)
                    await session.commit()
            except IntegrityError:
                raise CatalogError(
                    f"model {new.alias!r} exists", status_code=409, field="alias"
                ) from None
            return self._apply(row)

    async def delete(self, alias: str) -> None:
        """Unload and forget a catalog model everywhere (the others at their next sync)."""
        entry = self.registry.entry(alias)
        if entry.origin != "catalog":
            raise CatalogError(
                f"model {alias!r} comes from settings; change LLM_MODELS to remove it",
                status_code=409,
            )
        async with self._changing:
            async with self.sessions() as session:
                await session.execute(delete(CatalogModel).where(CatalogModel.alias == alias))
                await session.commit()
            await self._forget(alias)

    # --- every replica's side --------------------------------------------------------------

    async def sync(self) -> None:
        """Apply the rows: add what is new here, forget what is gone."""
        async with self._changing:
            async with self.sessions() as session:
                rows = list((await session.execute(select(CatalogModel))).scalars())
            aliases = {row.alias for row in rows}
            for row in rows:
                if row.alias not in self.registry.entries:
                    self._apply(row)
            for entry in list(self.registry.entries.values()):
                if entry.origin == "catalog" and entry.alias not in aliases:
                    await self._forget(entry.alias)

    async def run(self) -> None:
        """Sync every MODEL_SYNC_SECONDS until cancelled; a failed read is logged, retried."""
        while True:
            try:
                await self.sync()
            except Exception as exc:  # the database away for a moment: the next pass
                logger.warning("model catalog sync failed", error=type(exc).__name__)
            await asyncio.sleep(self.settings.model_sync_seconds)

    async def stop(self) -> None:
        for task in list(self._work.values()):
            task.cancel()
        for task in list(self._work.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- making one serve -------------------------------------------------------------------

    def _apply(self, row: CatalogModel) -> ModelEntry:
        existing = self.registry.entries.get(row.alias)
        if existing is not None:  # a sync that read the row first applied it
            return existing
        spec = self._spec(row)
        entry = self.registry.add(spec)
        task = asyncio.get_running_loop().create_task(self._serve(entry, row))
        self._work[row.alias] = task
        task.add_done_callback(lambda _: self._work.pop(row.alias, None))
        return entry

    async def _serve(self, entry: ModelEntry, row: CatalogModel) -> None:
        if row.remote is None and not self.settings.model_catalog_local:
            self.registry.fail(entry, NO_LOCAL_MODELS)  # stored by a replica that loads them
            return
        info = None
        try:
            if row.url is not None and entry.spec.path is not None:
                await self._download(entry, row.url, row.sha256, entry.spec.path)
            if entry.spec.path is not None:
                info = await asyncio.to_thread(read_gguf_info, entry.spec.path)
                logger.info("model file checked", model=entry.alias, architecture=info.architecture)
        except (DownloadError, NotGGUFError, OSError) as exc:
            self.registry.fail(entry, _reason(exc))
            return
        await self.registry.load(entry.alias)
        if entry.state == "failed" and info is not None:
            # llama.cpp says only that it failed: name what the file is.
            self.registry.fail(
                entry,
                f"llama.cpp could not load this GGUF (architecture {info.architecture!r}, "
                f"{info.tensor_count} tensors): {entry.error}",
            )

    async def _download(
        self, entry: ModelEntry, url: str, sha256: str | None, target: Path
    ) -> None:
        def progress(done: int, total: int | None) -> None:
            fraction = done / total if total else None
            self.registry.update(entry, progress=fraction, bytes_done=done, bytes_total=total)

        lock = target.with_name(target.name + ".lock")
        part = target.with_name(target.name + ".part")

        told: list[int] = []

        def holder_wrote(done: int, total: int | None) -> None:
            # The whole size goes in the lock file once, for the replicas waiting to show.
            if total and not told:
                told.append(total)
                lock.write_text(str(total))
            progress(done, total)

        def another_replica_fetching() -> None:  # its .part grows in the shared directory
            progress(*_partial(part, lock))

        self.registry.update(entry, state="downloading", progress=0.0, bytes_done=0)
        async with _file_lock(lock, while_waiting=another_replica_fetching):
            size = await asyncio.to_thread(_whole_size, target, sha256)
            if size is not None:  # another replica fetched it into the shared directory
                progress(size, size)
                return
            await download(
                url, target, sha256=sha256, prefixes=self.prefixes, on_progress=holder_wrote
            )

    async def _forget(self, alias: str) -> None:
        task = self._work.pop(alias, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        entry = self.registry.entries.get(alias)
        if entry is None:
            return
        await self.registry.remove(alias)
        path = entry.spec.path
        if path is not None and path.parent == self.downloads:
            await asyncio.to_thread(_remove_download, path)
        logger.info("catalog model removed", model=alias)

    # --- rows and specs ---------------------------------------------------------------------

    @property
    def downloads(self) -> Path:
        return self.models_dir / "downloads"

    def _spec(self, row: CatalogModel) -> ModelSpec:
        options = row.options or {}
        overrides = LoadOverrides(
            context_size=options.get("context_size"),
            slots=options.get("slots"),
            gpu_layers=options.get("gpu_layers"),
            pooling=options.get("pooling"),
        )
        if row.remote is not None:
            return ModelSpec(row.alias, url=row.remote, api_key=row.api_key, overrides=overrides)
        if row.url is not None:
            digest = hashlib.sha256(row.url.encode()).hexdigest()[:12]
            path = self.downloads / f"{row.alias}-{digest}.gguf"
        else:
            path = self._under_models_dir(row.path or "")
        return ModelSpec(row.alias, path=path, overrides=overrides)

    def _under_models_dir(self, relative: str) -> Path:
        """A path inside MODELS_DIR (never outside it, whatever `..` or links say)."""
        root = self.models_dir.resolve()
        path = (root / relative).resolve()
        if path != root and root not in path.parents:
            raise CatalogError("path must name a file under MODELS_DIR", field="path")
        return path

    def _checked_row(self, new: NewModel, created_by: uuid.UUID | None) -> CatalogModel:
        sources = [name for name in ("path", "url", "remote") if getattr(new, name)]
        if len(sources) != 1:
            raise CatalogError("give exactly one of path, url and remote", field="path")
        if sources[0] != "remote" and not self.settings.model_catalog_local:
            raise CatalogError(NO_LOCAL_MODELS, status_code=409, field=sources[0])
        if new.path is not None:
            path = self._under_models_dir(new.path)
            if not path.is_file():
                raise CatalogError(f"no file {new.path!r} under MODELS_DIR", field="path")
        if new.url is not None and not allowed(new.url, self.prefixes):
            raise CatalogError(
                "url is outside MODEL_DOWNLOAD_PREFIXES (" + ", ".join(self.prefixes) + ")",
                field="url",
            )
        if new.sha256 is not None and new.url is None:
            raise CatalogError("sha256 goes with url", field="sha256")
        options: dict[str, Any] = {
            name: value
            for name in ("context_size", "slots", "gpu_layers", "pooling")
            if (value := getattr(new, name)) is not None
        }
        return CatalogModel(
            alias=new.alias,
            source=sources[0],
            path=new.path,
            url=new.url,
            sha256=new.sha256.lower() if new.sha256 else None,
            remote=new.remote,
            api_key=new.api_key,
            options=options,
            created_by=created_by,
        )


def _reason(exc: Exception) -> str:
    """What an admin reads of a failure (no directories: the registry redacts paths too)."""
    if isinstance(exc, OSError) and not isinstance(exc, DownloadError):
        return f"the model file could not be read: {exc.strerror or type(exc).__name__}"
    return str(exc)


def _whole_size(path: Path, sha256: str | None) -> int | None:
    """Blocking. The size of a finished file (the downloader renames only whole ones into
    place) with the right digest; None when there is none."""
    if not path.is_file():
        return None
    if sha256 is not None:
        hasher = hashlib.sha256()
        hash_file(path, hasher)
        if hasher.hexdigest() != sha256:
            return None
    return path.stat().st_size


def _remove_download(path: Path) -> None:
    for suffix in ("", ".part", ".lock"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _partial(part: Path, lock: Path) -> tuple[int, int | None]:
    """Blocking, but two small reads. How far another replica's download is: the size of its
    .part, and the whole size it wrote in the lock file (None before it knows)."""
    try:
        done = part.stat().st_size
    except OSError:  # not started, or renamed into place a moment ago
        done = 0
    try:
        total: int | None = int(lock.read_text() or 0) or None
    except (OSError, ValueError):
        total = None
    return done, total


@contextlib.asynccontextmanager
async def _file_lock(
    path: Path, *, while_waiting: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """An exclusive lock on `path` between processes, waited for without blocking the loop;
    `while_waiting` is called at each look."""

    def open_lock() -> IO[str]:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a")

    with await asyncio.to_thread(open_lock) as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if while_waiting is not None:
                    while_waiting()
                await asyncio.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
