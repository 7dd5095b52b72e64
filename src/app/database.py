"""Database configuration (advanced-alchemy) and the metadata of every module's tables."""

from __future__ import annotations

from typing import Any

import asyncpg
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import AsyncSessionConfig, SQLAlchemyAsyncConfig
from sqlalchemy import MetaData, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

# Importing the models registers their tables on advanced-alchemy's shared metadata.
from modules.auth.models import ApiKey, RefreshToken
from modules.conversations.models import Conversation, Message
from modules.memory import MessageEmbedding, load_sqlite_vec
from modules.models.records import CatalogModel
from modules.profiles.models import Profile
from modules.responses.models import StoredResponse
from modules.users.models import User

MODELS = (
    User,
    RefreshToken,
    ApiKey,
    Conversation,
    Message,
    MessageEmbedding,
    Profile,
    StoredResponse,
    CatalogModel,
)


def metadata() -> MetaData:
    return orm_registry.metadata


# SQLSTATEs of a server that cannot take the work now: too many connections, shutting down
# (admin or crash) and starting up ("cannot connect now"); class 08 is a lost connection.
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps, says that the database cannot be used right now
    (refused or lost connection, starting up, shutting down, out of connections) rather
    than that a statement is wrong. The one place that tells them apart: the error mapping
    answers these with 503 and Retry-After, and the engine drops such a connection.

    asyncpg's errors arrive raw (a refused connect), or wrapped by SQLAlchemy (`orig`,
    `__cause__`), or wrapped again by advanced-alchemy (`__cause__`)."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _says_unavailable(error):
            return True
        wrapped = error.orig if isinstance(error, DBAPIError) else None
        error = error.__cause__ or (wrapped if isinstance(wrapped, BaseException) else None)
    return False


def _says_unavailable(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    # OperationalError: what DB-API calls the database's own trouble (SQLite's locked or
    # unreadable file); OSError: a connection refused or reset before a driver wraps it.
    if isinstance(error, OperationalError | DisconnectionError | OSError):
        return True
    sqlstate = getattr(error, "sqlstate", None)  # asyncpg's, and SQLAlchemy's copy of it
    if isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    ):
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in str(error)  # the test SQLAlchemy's dialect uses
    # A connection whose server went away while it read a reply is stuck in that reply:
    # asyncpg refuses the next operation on it.
    return isinstance(error, asyncpg.InternalClientError) and str(error).startswith(
        "cannot switch to state"
    )


def _drop_unavailable_connections(context: ExceptionContext) -> None:
    """A connection that failed because the database is unavailable is not handed out
    again: SQLAlchemy's own test misses some (a server shutting down while the connection
    reads), and a pre-ping that finds one reconnects instead of failing the request."""
    if not context.is_disconnect and database_unavailable(context.original_exception):
        context.is_disconnect = True


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers work beside the writer, and synchronous=NORMAL stops an fsync per
    # commit (still crash-safe in WAL mode); busy_timeout waits for the lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Memory search ranks with sqlite-vec where this Python's sqlite3 can load extensions
    # (many are built without); elsewhere it scans the user's own vectors.
    load_sqlite_vec(dbapi_connection)


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
    engine = create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    event.listen(engine.sync_engine, "handle_error", _drop_unavailable_connections)
    return SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        create_all=False,  # Alembic owns the schema
    )
