"""A Prometheus collector reading every model's and the cache's counters at scrape time.

Each app gets its own registry (several apps may live in one process, in tests), so
nothing is registered globally and nothing is counted twice. Every model's figures come
from the registry's typed records (`ModelRegistry.describe_all`), one scrape one read; each
group of families is built by its own function. The rate limiter's one gauge says whether
its shared store (Redis) was lost and limits are counted per process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modules.cache import ResponseCache
from modules.llm.inference import (
    GenerationStats,
    Histogram,
    Load,
    ModelRegistry,
    ModelStatus,
    NodeDescription,
)
from modules.ratelimit import RateLimiter

MODEL = ["model"]
NODE = ["model", "node"]


@dataclass(frozen=True, slots=True)
class Serving:
    """A model with a backend: its counters and its load, read once per scrape."""

    alias: str
    stats: GenerationStats
    load: Load
    nodes: tuple[NodeDescription, ...]


class AppCollector(Collector):
    def __init__(
        self,
        registry: Callable[[], ModelRegistry | None],
        cache: ResponseCache,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._registry = registry
        self._cache = cache
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        registry = self._registry()
        models = registry.describe_all() if registry is not None else []
        serving = _serving(models)
        yield _loaded(models)
        yield from _tokens(serving)
        yield _outcomes(serving)
        yield from _load(serving)
        yield from _latency(serving)
        yield from _engine(serving)
        yield from _nodes(serving)
        yield _fallbacks(registry)
        yield from _cache(self._cache)
        yield _limits(self._limiter)


def _serving(models: Iterable[ModelStatus]) -> list[Serving]:
    return [
        Serving(model.alias, model.stats, model.load, model.description.nodes)
        for model in models
        if model.stats is not None and model.load is not None and model.description is not None
    ]


def _loaded(models: Iterable[ModelStatus]) -> Metric:
    loaded = GaugeMetricFamily(
        "llm_model_loaded", "1 when the model is loaded and serving", labels=MODEL
    )
    for model in models:
        loaded.add_metric([model.alias], 1 if model.state == "loaded" else 0)
    return loaded


def _tokens(serving: Sequence[Serving]) -> tuple[Metric, ...]:
    prompt = CounterMetricFamily(
        "llm_prompt_tokens", "Prompt tokens of finished requests", labels=MODEL
    )
    cached = CounterMetricFamily(
        "llm_cached_prompt_tokens",
        "Prompt tokens served from the KV cache instead of evaluated",
        labels=MODEL,
    )
    completion = CounterMetricFamily("llm_completion_tokens", "Generated tokens", labels=MODEL)
    for model in serving:
        prompt.add_metric([model.alias], model.stats.prompt_tokens)
        cached.add_metric([model.alias], model.stats.cached_prompt_tokens)
        completion.add_metric([model.alias], model.stats.completion_tokens)
    return prompt, cached, completion


def _outcomes(serving: Sequence[Serving]) -> Metric:
    outcomes = CounterMetricFamily(
        "llm_requests", "Generation requests by outcome", labels=["model", "outcome"]
    )
    for model in serving:
        for outcome, count in model.stats.outcomes().items():
            outcomes.add_metric([model.alias, outcome], count)
    return outcomes


def _load(serving: Sequence[Serving]) -> tuple[Metric, ...]:
    queue = GaugeMetricFamily("llm_queue_depth", "Requests waiting for a slot", labels=MODEL)
    busy = GaugeMetricFamily("llm_busy_slots", "Sequence slots generating now", labels=MODEL)
    slots = GaugeMetricFamily("llm_slots", "Sequence slots", labels=MODEL)
    for model in serving:
        queue.add_metric([model.alias], model.load.queue_depth)
        busy.add_metric([model.alias], model.load.busy_slots)
        slots.add_metric([model.alias], model.load.slots)
    return queue, busy, slots


def _latency(serving: Sequence[Serving]) -> tuple[Metric, ...]:
    ttft = HistogramMetricFamily(
        "llm_time_to_first_token_seconds", "Submit to first generated token", labels=MODEL
    )
    rate = HistogramMetricFamily(
        "llm_tokens_per_second", "Generation speed per request", labels=MODEL
    )
    for model in serving:
        _observe(ttft, model.alias, model.stats.time_to_first_token)
        _observe(rate, model.alias, model.stats.tokens_per_second)
    return ttft, rate


def _observe(family: HistogramMetricFamily, model: str, histogram: Histogram) -> None:
    buckets = [
        (str(bound), float(count))
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", float(histogram.count)))
    family.add_metric([model], buckets, histogram.sum)


def _engine(serving: Sequence[Serving]) -> tuple[Metric, ...]:
    """The local engine's steps; a model that takes none (remote) has no samples."""
    steps = CounterMetricFamily(
        "llm_engine_steps", "Batches the engine decoded (local models)", labels=MODEL
    )
    decoding = CounterMetricFamily(
        "llm_engine_decode_seconds", "Time in llama.cpp's decode", labels=MODEL
    )
    between = CounterMetricFamily(
        "llm_engine_between_decodes_seconds",
        "Time between two decodes while working: sampling, hand-off, batch building",
        labels=MODEL,
    )
    for model in serving:
        if model.stats.steps:
            steps.add_metric([model.alias], model.stats.steps)
            decoding.add_metric([model.alias], model.stats.decode_seconds)
            between.add_metric([model.alias], model.stats.between_decodes_seconds)
    return steps, decoding, between


def _nodes(serving: Sequence[Serving]) -> tuple[Metric, ...]:
    """Each server of a remote model's pool, labelled by its public URL."""
    turns = CounterMetricFamily(
        "llm_remote_node_turns",
        "Generations sent to each server of a remote model (its share)",
        labels=NODE,
    )
    up = GaugeMetricFamily(
        "llm_remote_node_up", "1 while the server's circuit breaker is closed", labels=NODE
    )
    in_flight = GaugeMetricFamily(
        "llm_remote_node_in_flight", "Generations running on the server", labels=NODE
    )
    latency = GaugeMetricFamily(
        "llm_remote_node_latency_seconds", "The server's last time to first token", labels=NODE
    )
    for model in serving:
        for node in model.nodes:
            labels = [model.alias, node.url]
            turns.add_metric(labels, node.turns)
            up.add_metric(labels, 1 if node.up else 0)
            in_flight.add_metric(labels, node.in_flight)
            if node.latency_seconds is not None:
                latency.add_metric(labels, node.latency_seconds)
    return turns, up, in_flight, latency


def _fallbacks(registry: ModelRegistry | None) -> Metric:
    fallbacks = CounterMetricFamily(
        "llm_fallbacks",
        "Turns handed to a fallback model because theirs was unavailable",
        labels=["model", "fallback"],
    )
    taken = registry.fallbacks_taken.items() if registry is not None else []
    for (origin, fallback), count in taken:
        fallbacks.add_metric([origin, fallback], count)
    return fallbacks


def _cache(cache: ResponseCache) -> tuple[Metric, ...]:
    return (
        CounterMetricFamily("llm_cache_hits", "Response cache hits", value=cache.stats.hits),
        CounterMetricFamily("llm_cache_misses", "Response cache misses", value=cache.stats.misses),
    )


def _limits(limiter: RateLimiter | None) -> Metric:
    """1 while the shared store (Redis) is unreachable: limits then hold per process only."""
    degraded = limiter is not None and limiter.degraded
    return GaugeMetricFamily(
        "llm_ratelimit_degraded",
        "1 while the rate limits' shared store is unreachable (counted per process)",
        value=1 if degraded else 0,
    )
