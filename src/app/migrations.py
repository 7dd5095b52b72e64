"""Alembic, driven from Python: `llm-service migrate` and `serve` on the embedded default."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

# A checkout keeps alembic/ two levels above this file; an installed copy (the Docker image)
# runs from a directory that holds alembic.ini and alembic/.
_CANDIDATES = (Path(__file__).resolve().parents[2], Path.cwd())


def project_root() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "alembic.ini").is_file():
            return candidate
    raise FileNotFoundError("alembic.ini not found: run from the project directory")


def alembic_config(database_url: str) -> Config:
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    # `%` is ConfigParser's interpolation character; passwords may contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking; runs its own event loop, so call it outside one (or in a thread)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")


def pending_migrations(database_url: str) -> str | None:
    """None when the database's schema is at head; else what is wrong, in a sentence.
    Blocking (its own event loop), like upgrade_to_head."""
    import asyncio

    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.ext.asyncio import create_async_engine

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()

    async def current() -> str | None:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()

    revision = asyncio.run(current())
    if revision == head:
        return None
    found = f"at revision {revision}" if revision else "not migrated"
    return f"the database is {found}; the code needs {head}: run `llm-service migrate`"
