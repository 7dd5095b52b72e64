"""A Prometheus collector reading every model's and the cache's counters at scrape time.

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

from modules.cache import ResponseCache
from modules.llm.inference import Histogram, ModelRegistry

OUTCOMES = ("completed", "cancelled", "timed_out", "failed", "rejected")


def _histogram(
    family: HistogramMetricFamily, model: str, histogram: Histogram
) -> HistogramMetricFamily:
    buckets = [
        (str(bound), float(count))
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", float(histogram.count)))
    family.add_metric([model], buckets, histogram.sum)
    return family


class AppCollector(Collector):
    def __init__(self, registry: Callable[[], ModelRegistry | None], cache: ResponseCache) -> None:
        self._registry = registry
        self._cache = cache

    def collect(self) -> Iterator[Any]:
        registry = self._registry()
        entries = list(registry.entries.values()) if registry is not None else []
        loaded = GaugeMetricFamily(
            "llm_model_loaded", "1 when the model is loaded and serving", labels=["model"]
        )
        prompt = CounterMetricFamily(
            "llm_prompt_tokens", "Prompt tokens of finished requests", labels=["model"]
        )
        cached = CounterMetricFamily(
            "llm_cached_prompt_tokens",
            "Prompt tokens served from the KV cache instead of evaluated",
            labels=["model"],
        )
        completion = CounterMetricFamily(
            "llm_completion_tokens", "Generated tokens", labels=["model"]
        )
        outcomes = CounterMetricFamily(
            "llm_requests", "Generation requests by outcome", labels=["model", "outcome"]
        )
        queue = GaugeMetricFamily(
            "llm_queue_depth", "Requests waiting for a slot", labels=["model"]
        )
        busy = GaugeMetricFamily(
            "llm_busy_slots", "Sequence slots generating now", labels=["model"]
        )
        slots = GaugeMetricFamily("llm_slots", "Sequence slots", labels=["model"])
        steps = CounterMetricFamily(
            "llm_engine_steps", "Batches the engine decoded (local models)", labels=["model"]
        )
        decoding = CounterMetricFamily(
            "llm_engine_decode_seconds", "Time in llama.cpp's decode", labels=["model"]
        )
        between = CounterMetricFamily(
            "llm_engine_between_decodes_seconds",
            "Time between two decodes while working: sampling, hand-off, batch building",
            labels=["model"],
        )
        ttft = HistogramMetricFamily(
            "llm_time_to_first_token_seconds", "Submit to first generated token", labels=["model"]
        )
        rate = HistogramMetricFamily(
            "llm_tokens_per_second", "Generation speed per request", labels=["model"]
        )
        node_turns = CounterMetricFamily(
            "llm_remote_node_turns",
            "Generations sent to each server of a remote model (its share)",
            labels=["model", "node"],
        )
        node_up = GaugeMetricFamily(
            "llm_remote_node_up",
            "1 while the server's circuit breaker is closed",
            labels=["model", "node"],
        )
        node_busy = GaugeMetricFamily(
            "llm_remote_node_in_flight",
            "Generations running on the server",
            labels=["model", "node"],
        )
        node_latency = GaugeMetricFamily(
            "llm_remote_node_latency_seconds",
            "The server's last time to first token",
            labels=["model", "node"],
        )
        for entry in entries:
            loaded.add_metric([entry.alias], 1 if entry.state == "loaded" else 0)
            for node in entry.backend.describe().get("nodes", []) if entry.backend else []:
                labels = [entry.alias, node["url"]]
                node_turns.add_metric(labels, node["turns"])
                node_up.add_metric(labels, 1 if node["breaker"] == "closed" else 0)
                node_busy.add_metric(labels, node["in_flight"])
                if node["latency_ms"] is not None:
                    node_latency.add_metric(labels, node["latency_ms"] / 1000)
            backend = entry.backend
            if backend is None:
                continue
            stats, load = backend.stats, backend.load()
            prompt.add_metric([entry.alias], stats.prompt_tokens)
            cached.add_metric([entry.alias], stats.cached_prompt_tokens)
            completion.add_metric([entry.alias], stats.completion_tokens)
            for outcome in OUTCOMES:
                outcomes.add_metric([entry.alias, outcome], getattr(stats, outcome))
            queue.add_metric([entry.alias], load.queue_depth)
            busy.add_metric([entry.alias], load.busy_slots)
            slots.add_metric([entry.alias], load.slots)
            _histogram(ttft, entry.alias, stats.time_to_first_token)
            _histogram(rate, entry.alias, stats.tokens_per_second)
            if stats.steps:
                steps.add_metric([entry.alias], stats.steps)
                decoding.add_metric([entry.alias], stats.decode_seconds)
                between.add_metric([entry.alias], stats.between_decodes_seconds)
        yield from (loaded, prompt, cached, completion, outcomes, queue, busy, slots, ttft, rate)
        yield from (steps, decoding, between)
        yield from (node_turns, node_up, node_busy, node_latency)
        fallbacks = CounterMetricFamily(
            "llm_fallbacks",
            "Turns handed to a fallback model because theirs was unavailable",
            labels=["model", "fallback"],
        )
        taken = registry.fallbacks_taken.items() if registry is not None else []
        for (origin, fallback), count in taken:
            fallbacks.add_metric([origin, fallback], count)
        yield fallbacks
        yield CounterMetricFamily(
            "llm_cache_hits", "Response cache hits", value=self._cache.stats.hits
        )
        yield CounterMetricFamily(
            "llm_cache_misses", "Response cache misses", value=self._cache.stats.misses
        )
