"""Metrics: Prometheus exposition (HTTP metrics from Litestar's plugin, every model's and
the cache's counters from this app) and the admin JSON summary."""

from collections.abc import Callable

from litestar import Router
from litestar.di import Provide
from prometheus_client import CollectorRegistry

from modules.cache import ResponseCache
from modules.llm.inference import ModelRegistry
from modules.metrics.collector import AppCollector
from modules.metrics.controller import MetricsController, SummaryController, prometheus_config
from modules.ratelimit import RateLimiter


def create_router() -> Router:
    return Router(path="/", route_handlers=[MetricsController, SummaryController])


def providers(
    model_registry: Callable[[], ModelRegistry | None],
    cache: ResponseCache,
    limiter: RateLimiter | None = None,
) -> dict[str, Provide]:
    # One registry per app: several apps can live in one process (tests) without clashes.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AppCollector(model_registry, cache, limiter))
    return {"metrics_registry": Provide(lambda: registry, sync_to_thread=False, use_cache=True)}


__all__ = ["AppCollector", "create_router", "prometheus_config", "providers"]
