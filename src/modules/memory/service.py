"""Storing message vectors and finding a user's nearest messages; always scoped to their
owner, and never a read of the whole table.

Three ways to rank, chosen once per database (`MemoryIndex.method`):
- "pgvector": PostgreSQL with the `vector` extension and the `embedding` column that
  migration 0008 adds where the extension is available: the owner's rows (by the index on
  owner and model) ranked by the database with `<=>` (cosine distance).
- "sqlite-vec": SQLite where Python's sqlite3 can load extensions and `sqlite-vec` is
  loaded on every connection (see `load_sqlite_vec`): the owner's rows ranked by
  `vec_distance_cosine`.
- "scan": anywhere else (PostgreSQL without pgvector, a Python whose sqlite3 cannot load
  extensions): the owner's vectors read by the same index and ranked here with numpy dot
  products. Linear in that user's stored messages, nothing else.
Vectors are stored at unit length, so a dot product is the cosine similarity."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import NullType, UserDefinedType

from modules.conversations.models import Conversation, Message
from modules.memory.models import MessageEmbedding

Method = Literal["pgvector", "sqlite-vec", "scan"]
Vector = npt.NDArray[np.float32]
EMBEDDINGS = cast(Table, MessageEmbedding.__table__)
SNIPPET_CHARS = 300


def sqlite_can_load_extensions() -> bool:
    """Whether this Python's sqlite3 was built with extension loading (many are not:
    `enable_load_extension` is then missing) and sqlite-vec is installed."""
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        return False
    try:
        import sqlite_vec  # noqa: F401
    except ImportError:
        return False
    return True


def load_sqlite_vec(dbapi_connection: Any) -> bool:
    """A SQLAlchemy `connect` listener's work on an aiosqlite connection: load sqlite-vec
    into it where this Python can. Whether it did."""
    if not sqlite_can_load_extensions():
        return False
    import sqlite_vec

    raw = dbapi_connection._connection  # aiosqlite's Connection, run in its own thread
    await_ = dbapi_connection.await_
    await_(raw.enable_load_extension(True))
    try:
        await_(raw.load_extension(sqlite_vec.loadable_path()))
    finally:
        await_(raw.enable_load_extension(False))
    return True


@dataclass(frozen=True, slots=True)
class NewEmbedding:
    message_id: uuid.UUID
    owner_id: uuid.UUID
    conversation_id: uuid.UUID
    model: str
    vector: Vector


@dataclass(frozen=True, slots=True)
class MemoryHit:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    conversation_title: str
    role: str
    content: str
    score: float
    created_at: datetime

    @property
    def snippet(self) -> str:
        text = " ".join(self.content.split())
        return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def to_bytes(vector: Vector) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unit(vector: Sequence[float] | Vector) -> Vector:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, bytes | bytearray):
        return uuid.UUID(bytes=bytes(value))
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


class _PgVector(UserDefinedType[Any]):
    """pgvector's `vector`, only to cast to (the column exists where the extension does)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


def _pgvector_literal(vector: Vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


class MemoryIndex:
    """Shared by all requests: which method ranks (found once per database), storage and
    the nearest-message query. `mode="scan"` forces the scan (benchmarks, tests)."""

    def __init__(self, mode: Literal["auto", "scan"] = "auto") -> None:
        self.mode = mode
        self._method: Method | None = None

    async def method(self, session: AsyncSession) -> Method:
        if self._method is None:
            self._method = await self._detect(session)
        return self._method

    async def _detect(self, session: AsyncSession) -> Method:
        if self.mode == "scan":
            return "scan"
        dialect = session.bind.dialect.name
        if dialect == "postgresql":
            column = await session.scalar(
                text(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = "
                    "'message_embeddings' AND column_name = 'embedding' AND "
                    "table_schema = current_schema()"
                )
            )
            return "pgvector" if column else "scan"
        if dialect == "sqlite" and sqlite_can_load_extensions():
            try:
                await session.scalar(text("SELECT vec_version()"))
            except Exception:  # loaded on connect where it can be; not here
                return "scan"
            return "sqlite-vec"
        return "scan"

    async def store(self, session: AsyncSession, rows: Sequence[NewEmbedding]) -> None:
        """Insert the vectors (unit length); the caller commits."""
        if not rows:
            return
        vectors = [unit(row.vector) for row in rows]
        await session.execute(
            insert(EMBEDDINGS),
            [
                {
                    "message_id": row.message_id,
                    "owner_id": row.owner_id,
                    "conversation_id": row.conversation_id,
                    "model": row.model,
                    "dims": int(vector.shape[0]),
                    "vector": to_bytes(vector),
                }
                for row, vector in zip(rows, vectors, strict=True)
            ],
        )
        if await self.method(session) == "pgvector":
            for row, vector in zip(rows, vectors, strict=True):
                await session.execute(
                    text(
                        "UPDATE message_embeddings SET embedding = CAST(:v AS vector) "
                        "WHERE message_id = :m"
                    ),
                    {"v": _pgvector_literal(vector), "m": row.message_id},
                )

    async def nearest(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        model: str,
        vector: Vector,
        limit: int,
        *,
        exclude_conversation: uuid.UUID | None = None,
    ) -> list[MemoryHit]:
        """The owner's `limit` messages nearest to `vector`, most similar first."""
        query = unit(vector)
        method = await self.method(session)
        if method == "scan":
            ranked = await self._scan(session, owner_id, model, query, limit, exclude_conversation)
        else:
            ranked = await self._in_database(
                session, method, owner_id, model, query, limit, exclude_conversation
            )
        return await self._hits(session, owner_id, ranked)

    def _owned(
        self, owner_id: uuid.UUID, model: str, dims: int, exclude: uuid.UUID | None
    ) -> list[Any]:
        where = [
            EMBEDDINGS.c.owner_id == owner_id,
            EMBEDDINGS.c.model == model,
            EMBEDDINGS.c.dims == dims,
        ]
        if exclude is not None:
            where.append(EMBEDDINGS.c.conversation_id != exclude)
        return where

    async def _scan(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        model: str,
        query: Vector,
        limit: int,
        exclude: uuid.UUID | None,
    ) -> list[tuple[uuid.UUID, float]]:
        # The ids as the driver gives them (bytes, or the driver's UUID): converting every
        # row's id was most of a scan's time; only the top k are converted.
        raw_id = type_coerce(EMBEDDINGS.c.message_id, NullType())
        rows = (
            await session.execute(
                select(raw_id, EMBEDDINGS.c.vector).where(
                    *self._owned(owner_id, model, int(query.shape[0]), exclude)
                )
            )
        ).all()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), -1)
        scores = matrix @ query
        k = min(limit, len(rows))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(_uuid(rows[i][0]), float(scores[i])) for i in top]

    async def _in_database(
        self,
        session: AsyncSession,
        method: Method,
        owner_id: uuid.UUID,
        model: str,
        query: Vector,
        limit: int,
        exclude: uuid.UUID | None,
    ) -> list[tuple[uuid.UUID, float]]:
        distance: ColumnElement[Any]
        if method == "pgvector":  # the vector as pgvector's text form, cast by the server
            as_text = sql_cast(bindparam("query", _pgvector_literal(query), type_=String), String)
            distance = literal_column("embedding").op("<=>")(sql_cast(as_text, _PgVector()))
        else:  # sqlite-vec reads float32 blobs as they are stored
            distance = func.vec_distance_cosine(
                EMBEDDINGS.c.vector, bindparam("query", to_bytes(query), type_=LargeBinary)
            )
        statement = (
            select(EMBEDDINGS.c.message_id, distance.label("distance"))
            .where(*self._owned(owner_id, model, int(query.shape[0]), exclude))
            .order_by(literal_column("distance"))
            .limit(limit)
        )
        rows = (await session.execute(statement)).all()
        return [(row[0], 1.0 - float(row[1])) for row in rows]

    async def _hits(
        self, session: AsyncSession, owner_id: uuid.UUID, ranked: list[tuple[uuid.UUID, float]]
    ) -> list[MemoryHit]:
        if not ranked:
            return []
        rows = (
            await session.execute(
                select(
                    Message.id,
                    Message.role,
                    Message.content,
                    Message.created_at,
                    Conversation.id,
                    Conversation.title,
                )
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(
                    Message.id.in_([message_id for message_id, _ in ranked]),
                    Conversation.owner_id == owner_id,  # twice sure: only one's own
                )
            )
        ).all()
        by_id = {row[0]: row for row in rows}
        return [
            MemoryHit(
                message_id=message_id,
                conversation_id=row[4],
                conversation_title=row[5],
                role=row[1],
                content=row[2],
                score=round(score, 6),
                created_at=row[3],
            )
            for message_id, score in ranked
            if (row := by_id.get(message_id)) is not None
        ]
