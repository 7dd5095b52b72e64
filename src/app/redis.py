"""The one Redis client (one connection pool) of the cache and the rate limits."""

from __future__ import annotations

from redis.asyncio import Redis

from modules.config import Settings


def redis_client(settings: Settings) -> Redis | None:
    """None without REDIS_URL. Short timeouts: an unreachable Redis costs a request
    milliseconds, not seconds."""
    if not settings.redis_url:
        return None
    client: Redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1.0
    )
    return client
