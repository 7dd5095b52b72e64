"""Response cache (Litestar stores: memory or Redis)."""

from litestar.di import Provide

from modules.cache.service import CachedAnswer, ResponseCache, response_cache_from_settings


def providers(cache: ResponseCache) -> dict[str, Provide]:
    return {"response_cache": Provide(lambda: cache, sync_to_thread=False, use_cache=True)}


__all__ = ["CachedAnswer", "ResponseCache", "providers", "response_cache_from_settings"]
