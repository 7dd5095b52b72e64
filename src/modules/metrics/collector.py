"""A Prometheus collector reading the engine's and the cache's counters at scrape time.

Each app gets its own registry (several apps may live in one process, in tests), so
nothing is registered globally and nothing is counted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from modules.llm.engine import Histogram, LLMEngine


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [
        (str(bound), float(count))
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", float(histogram.count)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.sum)


class AppCollector(Collector):
    def __init__(
        self,
        engine: Callable[[], LLMEngine | None],
        cache_stats: Callable[[], dict[str, Any]],
        models: Callable[[], list[tuple[str, bool]]] = list,
    ) -> None:
        self._engine = engine
        self._cache_stats = cache_stats
        self._models = models

    def collect(self) -> Iterator[Any]:
        engine = self._engine()
        loaded = GaugeMetricFamily(
            "llm_model_loaded", "1 when the model is loaded and serving", labels=["model"]
        )
        for alias, is_loaded in self._models():
            loaded.add_metric([alias], 1 if is_loaded else 0)
        yield loaded
        if engine is not None:
            # Engine metrics are the default model's.
            stats = engine.stats
            yield CounterMetricFamily(
                "llm_prompt_tokens", "Prompt tokens of finished requests", value=stats.prompt_tokens
            )
            yield CounterMetricFamily(
                "llm_cached_prompt_tokens",
                "Prompt tokens served from the KV cache instead of evaluated",
                value=stats.cached_prompt_tokens,
            )
            yield CounterMetricFamily(
                "llm_completion_tokens", "Generated tokens", value=stats.completion_tokens
            )
            outcomes = CounterMetricFamily(
                "llm_requests", "Generation requests by outcome", labels=["outcome"]
            )
            for outcome in ("completed", "cancelled", "timed_out", "failed", "rejected"):
                outcomes.add_metric([outcome], getattr(stats, outcome))
            yield outcomes
            yield GaugeMetricFamily(
                "llm_queue_depth", "Requests waiting for a slot", value=engine.queue_depth
            )
            yield GaugeMetricFamily(
                "llm_busy_slots", "Sequence slots generating now", value=engine.busy_slots
            )
            yield GaugeMetricFamily("llm_slots", "Sequence slots", value=engine.parallel)
            yield _histogram(
                "llm_time_to_first_token_seconds",
                "Submit to first generated token",
                stats.time_to_first_token,
            )
            yield _histogram(
                "llm_tokens_per_second", "Generation speed per request", stats.tokens_per_second
            )
        cache = self._cache_stats()
        yield CounterMetricFamily("llm_cache_hits", "Response cache hits", value=cache["hits"])
        yield CounterMetricFamily(
            "llm_cache_misses", "Response cache misses", value=cache["misses"]
        )
