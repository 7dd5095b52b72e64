"""Response cache on Litestar's stores: in memory, or Redis when REDIS_URL is set.

Key: SHA-256 of the model and its file (or server), the sanitized messages the model would
read and the sampling settings, scoped to the user unless CACHE_SCOPE=global. Each model's
entries live in a namespace of their own, so one model's can be cleared and the others
stay (replicas share a Redis). A broken Redis never fails a request: the cache answers
"miss", counts the error, and /health says so."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import structlog
from litestar.stores.base import NamespacedStore, Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore

from modules.config import Settings

logger = structlog.get_logger(__name__)


class CachedAnswer(msgspec.Struct):
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    created_at: float


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0


@dataclass(kw_only=True)
class ResponseCache:
    store: Store
    backend: Literal["memory", "redis"]
    ttl_seconds: int
    max_entries: int
    scope: Literal["user", "global"]
    enabled: bool = True
    stats: CacheStats = field(default_factory=CacheStats)
    available: bool = True
    last_error: str | None = None
    # The memory store has expiry but no size bound: keep the LRU order here.
    _recent: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    _stores: dict[str, Store] = field(default_factory=dict)

    def key(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        params: Mapping[str, Any],
        owner: str,
        model_file: str = "",
    ) -> str:
        """`messages` are (role, sanitized content) pairs; `params` the sampling settings;
        `model_file` what identifies the model's weights (file, size, time; or server)."""
        material = {
            "model": model,
            "model_file": model_file,
            "messages": [list(m) for m in messages],
            "params": dict(params),
            "scope": owner if self.scope == "user" else "global",
        }
        encoded = json.dumps(material, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(encoded).hexdigest()

    def _store(self, model: str) -> Store:
        """The model's own namespace: a fixed-length digest of its alias, so that clearing
        one never matches another's keys by prefix."""
        store = self._stores.get(model)
        if store is None:
            name = hashlib.sha256(model.encode()).hexdigest()[:16]
            store = (
                self.store.with_namespace(name)
                if isinstance(self.store, NamespacedStore)
                else MemoryStore()
            )
            self._stores[model] = store
        return store

    async def get(self, model: str, key: str) -> CachedAnswer | None:
        if not self.enabled:
            return None
        try:
            raw = await self._store(model).get(key)
        except Exception as exc:
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            self.stats.misses += 1
            self._recent.pop((model, key), None)
            return None
        self.stats.hits += 1
        if (model, key) in self._recent:
            self._recent.move_to_end((model, key))
        return msgspec.json.decode(raw, type=CachedAnswer)

    async def put(
        self, model: str, key: str, text: str, finish_reason: str, usage: tuple[int, int]
    ) -> None:
        if not self.enabled:
            return
        answer = CachedAnswer(text, finish_reason, usage[0], usage[1], time.time())
        try:
            encoded = msgspec.json.encode(answer)
            await self._store(model).set(key, encoded, expires_in=self.ttl_seconds)
            self._recent[(model, key)] = None
            self._recent.move_to_end((model, key))
            while len(self._recent) > self.max_entries:
                (oldest_model, oldest), _ = self._recent.popitem(last=False)
                await self._store(oldest_model).delete(oldest)
        except Exception as exc:
            self._failed(exc)
            return
        self._ok()

    async def clear(self, model: str | None = None) -> None:
        """Every model's entries, or one model's (on every replica sharing the store)."""
        stores = [self._store(model)] if model is not None else [self.store, *self._stores.values()]
        try:
            for store in stores:
                await store.delete_all()
        except Exception as exc:
            self._failed(exc)
            raise
        for entry in [e for e in self._recent if model is None or e[0] == model]:
            del self._recent[entry]
        self._ok()

    async def health(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "enabled": self.enabled,
            "backend": self.backend,
            "scope": self.scope,
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "errors": self.stats.errors,
        }
        if self.backend == "redis" and self.enabled:
            try:
                await self.store.exists("health-probe")
                self._ok()
            except Exception as exc:
                self._failed(exc)
        status["status"] = "ok" if self.available else "unavailable"
        if not self.available:
            status["error"] = self.last_error
            status["note"] = "answering without the cache"
        return status

    def _failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        if self.available:
            logger.warning("response cache unavailable", error=str(exc))
        self.available = False
        self.last_error = type(exc).__name__

    def _ok(self) -> None:
        self.available = True
        self.last_error = None


def response_cache_from_settings(settings: Settings, redis: Any | None) -> ResponseCache:
    """On `redis` (a redis.asyncio client) when given, else in memory."""
    store: Store
    backend: Literal["memory", "redis"]
    if redis is not None:
        store, backend = RedisStore(redis, namespace="llm-service:response-cache"), "redis"
    else:
        store, backend = MemoryStore(), "memory"
    return ResponseCache(
        store=store,
        backend=backend,
        ttl_seconds=settings.cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
        scope=settings.cache_scope,
        enabled=settings.cache_enabled,
    )
