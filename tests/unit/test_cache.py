"""The response cache on Litestar's memory store and on Redis: keys, scope, LRU eviction,
and each model's entries cleared alone."""

from __future__ import annotations

import uuid

from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore

from modules.cache import ResponseCache


def cache(max_entries: int = 2, scope: str = "user") -> ResponseCache:
    return ResponseCache(
        store=MemoryStore(),
        backend="memory",
        ttl_seconds=60,
        max_entries=max_entries,
        scope=scope,  # type: ignore[arg-type]
    )


def test_keys_depend_on_everything_the_model_reads() -> None:
    c = cache()
    base = c.key("m", [("user", "hi")], {"temperature": 0}, "alice")
    assert base == c.key("m", [("user", "hi")], {"temperature": 0}, "alice")
    assert base != c.key("m2", [("user", "hi")], {"temperature": 0}, "alice")
    assert base != c.key("m", [("user", "hi!")], {"temperature": 0}, "alice")
    assert base != c.key("m", [("user", "hi")], {"temperature": 1}, "alice")
    assert base != c.key("m", [("user", "hi")], {"temperature": 0}, "bob")
    # Another file under the same alias: its own answers.
    assert base != c.key("m", [("user", "hi")], {"temperature": 0}, "alice", model_file="v2")
    shared = cache(scope="global")
    assert shared.key("m", [], {}, "alice") == shared.key("m", [], {}, "bob")


async def test_least_recently_used_entry_is_evicted() -> None:
    c = cache(max_entries=2)
    await c.put("m", "a", "A", "stop", (1, 1))
    await c.put("m", "b", "B", "stop", (1, 1))
    assert await c.get("m", "a") is not None  # "a" is now the most recently used
    await c.put("other", "c", "C", "stop", (1, 1))  # the bound counts every model's
    assert await c.get("m", "b") is None
    hit = await c.get("m", "a")
    assert hit is not None
    assert hit.text == "A"
    assert await c.get("other", "c") is not None
    assert (c.stats.hits, c.stats.misses) == (3, 1)


async def test_disabled_cache_stores_nothing() -> None:
    c = cache()
    c.enabled = False
    await c.put("m", "a", "A", "stop", (1, 1))
    c.enabled = True
    assert await c.get("m", "a") is None


async def test_clearing_one_model_keeps_the_others() -> None:
    c = cache(max_entries=10)
    for model in ("m", "m2", "other"):
        await c.put(model, "k", model.upper(), "stop", (1, 1))
    await c.clear("m")
    assert await c.get("m", "k") is None
    assert [await c.get(m, "k") is not None for m in ("m2", "other")] == [True, True]
    await c.clear()
    assert await c.get("other", "k") is None


async def test_on_redis_one_models_entries_go_and_no_other_replicas() -> None:
    from redis.asyncio import Redis

    client = Redis.from_url("redis://127.0.0.1:6379/0")
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    # Two replicas' caches on one Redis; model names that share a prefix.
    replicas = [
        ResponseCache(
            store=RedisStore(client, namespace=namespace),
            backend="redis",
            ttl_seconds=60,
            max_entries=10,
            scope="user",
        )
        for _ in range(2)
    ]
    try:
        for model in ("chat", "chat-large"):
            await replicas[0].put(model, "k", model, "stop", (1, 1))
        await replicas[1].clear("chat")  # an operator reloads "chat" on the other replica
        assert await replicas[0].get("chat", "k") is None
        kept = await replicas[0].get("chat-large", "k")
        assert kept is not None
        assert kept.text == "chat-large"
    finally:
        await replicas[0].clear()
        await client.aclose()
