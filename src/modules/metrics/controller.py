"""GET /metrics (Prometheus text) and GET /llm/metrics (admin JSON summary)."""

from __future__ import annotations

import hmac
import os
import resource
import time
from collections.abc import Sequence
from typing import Any

import msgspec
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
from modules.llm.inference import GenerationStats, ModelRegistry, ModelStatus


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


class RequestCounts(msgspec.Struct):
    completed: int
    cancelled: int
    timed_out: int
    failed: int
    rejected: int


class CacheCounts(msgspec.Struct):
    hits: int
    misses: int


class TokenCounts(msgspec.Struct):
    prompt: int
    cached_prompt: int
    completion: int


class DefaultModelSummary(msgspec.Struct):
    name: str
    status: str  # loaded or unavailable
    slots: int
    busy_slots: int
    queue_depth: int


class ModelStateSummary(msgspec.Struct):
    alias: str
    state: str


class MemoryUsage(msgspec.Struct):
    rss_bytes: int
    peak_rss_bytes: int


class MetricsSummary(msgspec.Struct):
    requests_total: int
    requests: RequestCounts
    cache_hit_rate: float
    cache: CacheCounts
    average_response_time: float  # seconds, over finished requests
    tokens: TokenCounts
    model: DefaultModelSummary
    models: list[ModelStateSummary]
    memory: MemoryUsage
    uptime_seconds: float


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
    ) -> MetricsSummary:
        """A JSON summary for people: requests, cache hit rate, speed, models, memory, uptime.
        Request and token counts are summed over every loaded model."""
        models = model_registry.describe_all()
        stats = [m.stats for m in models if m.state == "loaded" and m.stats is not None]
        requests = _requests(stats)
        finished = requests.completed + requests.cancelled + requests.timed_out
        request_seconds = sum(s.request_seconds for s in stats)
        cache = response_cache.stats
        lookups = cache.hits + cache.misses
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return MetricsSummary(
            requests_total=finished + requests.failed + requests.rejected,
            requests=requests,
            cache_hit_rate=round(cache.hits / lookups, 4) if lookups else 0.0,
            cache=CacheCounts(hits=cache.hits, misses=cache.misses),
            average_response_time=round(request_seconds / finished, 4) if finished else 0.0,
            tokens=TokenCounts(
                prompt=sum(s.prompt_tokens for s in stats),
                cached_prompt=sum(s.cached_prompt_tokens for s in stats),
                completion=sum(s.completion_tokens for s in stats),
            ),
            model=_default_model(models[0]),  # the default model comes first
            models=[ModelStateSummary(alias=m.alias, state=m.state) for m in models],
            memory=MemoryUsage(rss_bytes=_current_rss_bytes(), peak_rss_bytes=rss_kib * 1024),
            uptime_seconds=round(time.monotonic() - state.started_at, 1),
        )


def _requests(stats: Sequence[GenerationStats]) -> RequestCounts:
    return RequestCounts(
        completed=sum(s.completed for s in stats),
        cancelled=sum(s.cancelled for s in stats),
        timed_out=sum(s.timed_out for s in stats),
        failed=sum(s.failed for s in stats),
        rejected=sum(s.rejected for s in stats),
    )


def _default_model(model: ModelStatus) -> DefaultModelSummary:
    load = model.load
    return DefaultModelSummary(
        name=model.alias,
        status="loaded" if load is not None and load.running else "unavailable",
        slots=load.slots if load else 0,
        busy_slots=load.busy_slots if load else 0,
        queue_depth=load.queue_depth if load else 0,
    )


def _current_rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
