"""GET /metrics (Prometheus text) and GET /llm/metrics (admin JSON summary)."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from modules.auth.security import requires_admin


def prometheus_config() -> PrometheusConfig:
    """HTTP request counts and latencies, by Litestar's Prometheus middleware."""
    return PrometheusConfig(
        app_name="llm_service",
        prefix="http",
        group_path=True,  # label by route template, not by every id in a path
        exclude=["/metrics", "/health"],
    )


class MetricsController(Controller):
    path = "/metrics"
    tags = ("metrics",)

    @get("/", exclude_from_auth=True, cache=False, include_in_schema=True)
    async def metrics(self, state: State) -> Response[bytes]:
        """Prometheus text format: HTTP metrics, then the engine's and the cache's."""
        registry: CollectorRegistry = state.metrics_registry
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class SummaryController(Controller):
    path = "/llm/metrics"
    tags = ("metrics",)
    guards = [requires_admin]  # noqa: RUF012

    @get("/", cache=False)
    async def summary(self, state: State) -> dict[str, Any]:
        """A JSON summary for people: requests, cache hit rate, speed, model, memory, uptime."""
        service = state.get("generation_service")
        cache = state.response_cache
        engine = service.engine if service is not None else None
        stats = engine.stats if engine is not None else None
        finished = (stats.completed + stats.cancelled + stats.timed_out) if stats else 0
        lookups = cache.stats.hits + cache.stats.misses
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "requests_total": finished + (stats.failed + stats.rejected if stats else 0),
            "requests": {
                "completed": stats.completed if stats else 0,
                "cancelled": stats.cancelled if stats else 0,
                "timed_out": stats.timed_out if stats else 0,
                "failed": stats.failed if stats else 0,
                "rejected": stats.rejected if stats else 0,
            },
            "cache_hit_rate": round(cache.stats.hits / lookups, 4) if lookups else 0.0,
            "cache": {"hits": cache.stats.hits, "misses": cache.stats.misses},
            "average_response_time": (
                round(stats.request_seconds / finished, 4) if stats and finished else 0.0
            ),
            "tokens": {
                "prompt": stats.prompt_tokens if stats else 0,
                "cached_prompt": stats.cached_prompt_tokens if stats else 0,
                "completion": stats.completion_tokens if stats else 0,
            },
            "model": {
                "name": engine.model.alias if engine else None,
                "status": "loaded" if engine and engine.is_running else "unavailable",
                "slots": engine.parallel if engine else 0,
                "busy_slots": engine.busy_slots if engine else 0,
                "queue_depth": engine.queue_depth if engine else 0,
            },
            "memory": {
                "rss_bytes": _current_rss_bytes(),
                "peak_rss_bytes": rss_kib * 1024,
            },
            "uptime_seconds": round(time.monotonic() - state.started_at, 1),
        }


def _current_rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
