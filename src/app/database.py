"""Database configuration (advanced-alchemy) and the metadata of every module's tables."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import create_async_engine

# Importing the models registers their tables on advanced-alchemy's shared metadata.
from modules.auth.models import ApiKey, RefreshToken
from modules.conversations.models import Conversation, Message
from modules.profiles.models import Profile
from modules.users.models import User

MODELS = (User, RefreshToken, ApiKey, Conversation, Message, Profile)


def metadata() -> MetaData:
    return orm_registry.metadata


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers work beside the writer, and synchronous=NORMAL stops an fsync per
    # commit (still crash-safe in WAL mode); busy_timeout waits for the lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def database_config(url: str, *, echo: bool = False) -> SQLAlchemyAsyncConfig:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return SQLAlchemyAsyncConfig(
            engine_instance=engine,
            session_config=AsyncSessionConfig(expire_on_commit=False),
            before_send_handler="autocommit",
            create_all=False,
        )
    return SQLAlchemyAsyncConfig(
        connection_string=url,
        engine_config=EngineConfig(echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        create_all=False,  # Alembic owns the schema
    )
