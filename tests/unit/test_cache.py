"""The response cache on Litestar's memory store: keys, scope and LRU eviction."""

from __future__ import annotations

from litestar.stores.memory import MemoryStore

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
    shared = cache(scope="global")
    assert shared.key("m", [], {}, "alice") == shared.key("m", [], {}, "bob")


async def test_least_recently_used_entry_is_evicted() -> None:
    c = cache(max_entries=2)
    await c.put("a", "A", "stop", (1, 1))
    await c.put("b", "B", "stop", (1, 1))
    assert await c.get("a") is not None  # "a" is now the most recently used
    await c.put("c", "C", "stop", (1, 1))
    assert await c.get("b") is None
    hit = await c.get("a")
    assert hit is not None
    assert hit.text == "A"
    assert await c.get("c") is not None
    assert (c.stats.hits, c.stats.misses) == (3, 1)


async def test_disabled_cache_stores_nothing() -> None:
    c = cache()
    c.enabled = False
    await c.put("a", "A", "stop", (1, 1))
    c.enabled = True
    assert await c.get("a") is None
