"""Response cache (Litestar stores: memory or Redis)."""

from modules.cache.service import CachedAnswer, ResponseCache, build_response_cache

__all__ = ["CachedAnswer", "ResponseCache", "build_response_cache"]
