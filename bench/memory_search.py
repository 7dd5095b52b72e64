"""Memory search latency against the number of messages one user has stored, on SQLite
and PostgreSQL, through the service's own `MemoryIndex.nearest` (the ranking and the
query that reads the hits' messages and titles), without HTTP or the model.

For each size N, a fresh database (migrated to head) gets one user with N messages and
their vectors (576 dimensions, the bundled SmolLM2's), and other users with `--others`
times N rows more, so a search that read more than its user's rows would show it. Then
`--repeats` searches of 10 hits with random queries: p50 and p95 in milliseconds. The
method is the one the database offers (`scan` here: no pgvector, a sqlite3 that cannot
load extensions); `--mode scan` forces it.

    PYTHONPATH=src .venv/bin/python bench/memory_search.py [--sizes 10000,100000]
        [--databases sqlite,postgresql] [--others 0.5] [--repeats 30]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import numpy as np
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.database import database_config
from app.migrations import upgrade_to_head
from modules.conversations import Conversation, Message
from modules.memory import MemoryIndex, MessageEmbedding
from modules.users.models import User

DIMS = 576
BATCH = 2000
CONVERSATION_MESSAGES = 20


def tables() -> tuple[Table, Table, Table, Table]:
    return (
        User.__table__,  # type: ignore[return-value]
        Conversation.__table__,
        Message.__table__,
        MessageEmbedding.__table__,
    )


async def fill(engine: AsyncEngine, owner: uuid.UUID, count: int, rng: np.random.Generator) -> None:
    """`count` messages of `owner` (in conversations of 20), each with a unit vector."""
    users, conversations, messages, embeddings = tables()
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            insert(users).values(
                id=owner,
                email=f"{owner.hex}@bench.example",
                password_hash="x",
                role="user",
                is_active=True,
            )
        )
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        vectors = rng.standard_normal((size, DIMS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        conversation_rows, message_rows, embedding_rows = [], [], []
        conversation_id = uuid.uuid4()
        for offset in range(size):
            index = start + offset
            if index % CONVERSATION_MESSAGES == 0 or offset == 0:
                conversation_id = uuid.uuid4()
                conversation_rows.append(
                    {"id": conversation_id, "owner_id": owner, "title": f"c{index}", "model": "m"}
                )
            message_id = uuid.uuid4()
            message_rows.append(
                {
                    "id": message_id,
                    "conversation_id": conversation_id,
                    "position": index,
                    "role": "user" if index % 2 == 0 else "assistant",
                    "content": f"message {index} " + "words " * 20,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            embedding_rows.append(
                {
                    "message_id": message_id,
                    "owner_id": owner,
                    "conversation_id": conversation_id,
                    "model": "m",
                    "dims": DIMS,
                    "vector": vectors[offset].astype("<f4").tobytes(),
                }
            )
        async with engine.begin() as connection:
            await connection.execute(insert(conversations), conversation_rows)
            await connection.execute(insert(messages), message_rows)
            await connection.execute(insert(embeddings), embedding_rows)


async def measure(
    url: str, size: int, others: float, repeats: int, mode: Literal["auto", "scan"]
) -> dict[str, Any]:
    config = database_config(url)
    engine = config.get_engine()
    rng = np.random.default_rng(size)
    owner = uuid.uuid4()
    started = time.perf_counter()
    await fill(engine, owner, size, rng)
    other_rows = int(size * others)
    for _ in range(4):  # other users' rows, in four users
        await fill(engine, uuid.uuid4(), other_rows // 4, rng)
    if url.startswith("postgresql"):
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    filled = time.perf_counter() - started
    index = MemoryIndex(mode)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    times = []
    method = ""
    for repeat in range(repeats + 2):
        query = rng.standard_normal(DIMS).astype(np.float32)
        async with sessions() as session:
            began = time.perf_counter()
            hits = await index.nearest(session, owner, "m", query, 10)
            elapsed = time.perf_counter() - began
            method = await index.method(session)
        assert len(hits) == 10
        if repeat >= 2:  # the first two warm the caches
            times.append(elapsed * 1000)
    await engine.dispose()
    times.sort()
    return {
        "method": method,
        "rows": size + 4 * (other_rows // 4),
        "fill_s": round(filled, 1),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
    }


async def fresh_postgres(admin: str) -> tuple[str, str]:
    name = f"bench_memory_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", name


async def drop_postgres(admin: str, name: str) -> None:
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--others", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--mode", choices=("auto", "scan"), default="auto")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print("database    user rows  all rows  method  fill s  p50 ms  p95 ms", flush=True)
    for database in args.databases.split(","):
        for size in map(int, args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as scratch:
                name = None
                if database == "sqlite":
                    url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
                else:
                    url, name = asyncio.run(fresh_postgres(args.postgres))
                try:
                    upgrade_to_head(url)
                    result = asyncio.run(measure(url, size, args.others, args.repeats, args.mode))
                finally:
                    if name is not None:
                        asyncio.run(drop_postgres(args.postgres, name))
            print(
                f"{database:<10} {size:>10} {result['rows']:>9} {result['method']:>7} "
                f"{result['fill_s']:>7} {result['p50_ms']:>7} {result['p95_ms']:>7}",
                flush=True,
            )


if __name__ == "__main__":
    main()
