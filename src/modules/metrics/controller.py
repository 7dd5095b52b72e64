"""GET /metrics (Prometheus text) and GET /llm/metrics (admin JSON summary)."""

from __future__ import annotations

import hmac
import os
import resource
import time
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from modules.auth import requires_admin
from modules.cache import ResponseCache
from modules.config import Settings
from modules.llm.inference import GenerationStats, ModelRegistry
from modules.metrics.collector import OUTCOMES

SUMMED = (
    *OUTCOMES,
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "request_seconds",
)


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
    async def metrics(
        self,
        request: Request[Any, Any, Any],
        metrics_registry: NamedDependency[CollectorRegistry],
        settings: NamedDependency[Settings],
    ) -> Response[bytes]:
        """Prometheus text format: HTTP metrics, then every model's and the cache's. With
        METRICS_TOKEN set, only for `Authorization: Bearer <METRICS_TOKEN>`."""
        if settings.metrics_token:
            presented = request.headers.get("authorization", "")
            expected = f"Bearer {settings.metrics_token}"
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                raise NotAuthorizedException("/metrics needs the metrics token (METRICS_TOKEN)")
        body = generate_latest(REGISTRY) + generate_latest(metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class SummaryController(Controller):
    path = "/llm/metrics"
    tags = ("metrics",)
    guards = [requires_admin]  # noqa: RUF012

    @get("/", cache=False)
    async def summary(
        self,
        state: State,
        model_registry: NamedDependency[ModelRegistry],
        response_cache: NamedDependency[ResponseCache],
    ) -> dict[str, Any]:
        """A JSON summary for people: requests, cache hit rate, speed, models, memory, uptime.
        Request and token counts are summed over every loaded model."""
        backends = [e.backend for e in model_registry.loaded if e.backend is not None]
        totals = GenerationStats()
        for backend in backends:
            for name in SUMMED:
                setattr(totals, name, getattr(totals, name) + getattr(backend.stats, name))
        cache = response_cache.stats
        lookups = cache.hits + cache.misses
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        finished = totals.finished
        return {
            "requests_total": finished + totals.failed + totals.rejected,
            "requests": {name: getattr(totals, name) for name in OUTCOMES},
            "cache_hit_rate": round(cache.hits / lookups, 4) if lookups else 0.0,
            "cache": {"hits": cache.hits, "misses": cache.misses},
            "average_response_time": (
                round(totals.request_seconds / finished, 4) if finished else 0.0
            ),
            "tokens": {
                "prompt": totals.prompt_tokens,
                "cached_prompt": totals.cached_prompt_tokens,
                "completion": totals.completion_tokens,
            },
            "model": _model_summary(model_registry),
            "models": [
                {"alias": e.alias, "state": e.state} for e in model_registry.entries.values()
            ],
            "memory": {
                "rss_bytes": _current_rss_bytes(),
                "peak_rss_bytes": rss_kib * 1024,
            },
            "uptime_seconds": round(time.monotonic() - state.started_at, 1),
        }


def _model_summary(registry: ModelRegistry) -> dict[str, Any]:
    backend = registry.default
    load = backend.load() if backend is not None else None
    return {
        "name": registry.default_alias,
        "status": "loaded" if load is not None and load.running else "unavailable",
        "slots": load.slots if load else 0,
        "busy_slots": load.busy_slots if load else 0,
        "queue_depth": load.queue_depth if load else 0,
    }


def _current_rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
