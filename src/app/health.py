"""GET /health: each component's status, for anyone (load balancers, readiness probes);
GET /health/live: the process answers, whatever its dependencies do (liveness probes); and
GET /health/details: the same as /health with what is behind it (versions, counters, busy
slots, remote nodes, redacted errors), for admins.

The public answer holds status words only: it is unauthenticated, and counters, slots and
error texts tell an attacker how busy the service is and where its files and servers are."""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from modules.auth import requires_admin
from modules.cache import ResponseCache
from modules.llm.inference import ModelRegistry, ModelStatus, NodeDescription
from modules.llm.inference.descriptions import redact
from modules.ratelimit import RateLimiter


class ComponentStatus(msgspec.Struct):
    status: str  # ok, degraded or unavailable


class ModelStatusWord(msgspec.Struct):
    """One configured model in the public report: its alias, status and state."""

    name: str
    status: str  # ok or unavailable
    state: str  # unloaded, loading, loaded or failed


class PublicHealth(msgspec.Struct):
    """GET /health: each component's status and nothing else."""

    status: str  # ok, degraded (the cache or the shared limits are down) or unavailable
    process: ComponentStatus
    database: ComponentStatus
    model: ModelStatusWord  # the default model
    models: list[ModelStatusWord]
    cache: ComponentStatus
    limits: ComponentStatus


class ProcessHealth(msgspec.Struct):
    status: str
    pid: int
    uptime_seconds: float
    version: str


class DatabaseHealth(msgspec.Struct, omit_defaults=True):
    status: str
    dialect: str
    latency_ms: float | None = None
    error: str | None = None


class NodeHealth(msgspec.Struct):
    """One server of a remote model's pool."""

    url: str
    breaker: str
    in_flight: int
    turns: int  # generations sent to it: its share of the model's
    latency_ms: float | None


class ModelHealth(msgspec.Struct, omit_defaults=True):
    """One configured model; the load and outcome counts are there while it is loaded."""

    status: str
    name: str
    state: str
    error: str | None = None
    backend: str | None = None
    file: str | None = None
    size_bytes: int | None = None
    context_size: int | None = None
    saved_states: int | None = None
    gpu_layers: int | None = None
    breaker: str | None = None  # a remote model's circuit breaker: closed or open
    latency_ms: float | None = None  # a remote model's last time to first token
    nodes: list[NodeHealth] | None = None  # a remote model's servers
    layers: int | None = None
    busy: bool | None = None
    parallel: int | None = None
    busy_slots: int | None = None
    queue_depth: int | None = None
    queue_size: int | None = None
    completed: int | None = None
    cancelled: int | None = None
    timed_out: int | None = None
    failed: int | None = None
    rejected: int | None = None


class HealthReport(msgspec.Struct):
    """GET /health/details (admins): what is behind each status."""

    status: str  # ok, degraded (the cache is down) or unavailable
    process: ProcessHealth
    database: DatabaseHealth
    model: ModelHealth  # the default model
    models: list[ModelHealth]
    cache: dict[str, Any]
    limits: dict[str, Any]  # where rate limits are counted; degraded: per process


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", exclude_from_auth=True, cache=False)
    async def health(
        self,
        state: State,
        model_registry: NamedDependency[ModelRegistry],
        response_cache: NamedDependency[ResponseCache],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[PublicHealth]:
        """Each component's status (process, database, every model by alias, cache, limits);
        503 when the database or the default model is down. No authentication: status words
        only, the details are at /health/details (admins)."""
        report = await _report(state, model_registry, response_cache, rate_limiter)
        return Response(_public(report), status_code=_status_code(report))

    @get("/live", exclude_from_auth=True, cache=False)
    async def live(self) -> ComponentStatus:
        """200 while the process answers. Nothing else is checked: a restart mends neither
        a database nor a model server that is down, so a liveness probe must not fail for
        them (/health, the readiness probe, takes the replica out of service instead)."""
        return ComponentStatus("ok")

    @get("/details", guards=[requires_admin], cache=False)
    async def details(
        self,
        state: State,
        model_registry: NamedDependency[ModelRegistry],
        response_cache: NamedDependency[ResponseCache],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[HealthReport]:
        """The process, the database, every model (backend, slots, queue, outcome counts,
        remote nodes, why it failed to load) and the cache (admin). Errors are redacted:
        no credentials, no directories. 503 as /health."""
        report = await _report(state, model_registry, response_cache, rate_limiter)
        return Response(report, status_code=_status_code(report))


async def _report(
    state: State,
    model_registry: ModelRegistry,
    response_cache: ResponseCache,
    rate_limiter: RateLimiter,
) -> HealthReport:
    database = await _database_health(state.db_config.get_engine())
    models = [_model_health(model) for model in model_registry.describe_all()]
    model = models[0]  # the default model comes first
    cache = _redacted(await response_cache.health())
    limits = _redacted(rate_limiter.health())
    healthy = database.status == "ok" and model.status == "ok"
    # A Redis outage degrades the service but it keeps answering: still 200.
    redis_ok = cache["status"] == "ok" and limits["status"] == "ok"
    status = "unavailable" if not healthy else "ok" if redis_ok else "degraded"
    return HealthReport(
        status=status,
        process=ProcessHealth(
            status="ok",
            pid=os.getpid(),
            uptime_seconds=round(time.monotonic() - state.started_at, 1),
            version=state.version,
        ),
        database=database,
        model=model,
        models=models,
        cache=cache,
        limits=limits,
    )


def _status_code(report: HealthReport) -> int:
    return 503 if report.status == "unavailable" else 200


def _public(report: HealthReport) -> PublicHealth:
    models = [ModelStatusWord(m.name, m.status, m.state) for m in report.models]
    return PublicHealth(
        status=report.status,
        process=ComponentStatus(report.process.status),
        database=ComponentStatus(report.database.status),
        model=models[0],
        models=models,
        cache=ComponentStatus(str(report.cache["status"])),
        limits=ComponentStatus(str(report.limits["status"])),
    )


def _redacted(component: dict[str, Any]) -> dict[str, Any]:
    """A Redis error's text may name the server as configured (a URL with a password)."""
    if isinstance(component.get("error"), str):
        component = {**component, "error": redact(component["error"])}
    return component


async def _database_health(engine: AsyncEngine) -> DatabaseHealth:
    started = time.perf_counter()
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return DatabaseHealth("unavailable", engine.dialect.name, error=type(exc).__name__)
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DatabaseHealth("ok", engine.dialect.name, latency_ms=latency)


def _model_health(model: ModelStatus) -> ModelHealth:
    described, load, stats = model.description, model.load, model.stats
    if described is None or load is None or stats is None:
        error = model.error or "not loaded"  # the registry keeps it redacted
        return ModelHealth("unavailable", model.alias, model.state, error=error)
    local, remote = described.local, described.kind == "remote"
    return ModelHealth(
        status="ok" if load.running else "unavailable",
        name=model.alias,
        state=model.state,
        backend=described.backend,
        file=described.source or None,
        size_bytes=local.size_bytes if local else None,
        context_size=described.context_size,
        saved_states=local.saved_states if local else None,
        # Which llama.cpp device runs it: layers offloaded to a GPU, of how many.
        gpu_layers=local.gpu_layers if local else None,
        layers=local.layers if local else None,
        breaker=_breaker(described.any_node_up) if remote else None,
        latency_ms=_milliseconds(described.latency_seconds),
        nodes=[_node_health(node) for node in described.nodes] if remote else None,
        busy=load.busy_slots > 0,
        parallel=load.slots,
        busy_slots=load.busy_slots,
        queue_depth=load.queue_depth,
        queue_size=load.queue_size,
        completed=stats.completed,
        cancelled=stats.cancelled,
        timed_out=stats.timed_out,
        failed=stats.failed,
        rejected=stats.rejected,
    )


def _node_health(node: NodeDescription) -> NodeHealth:
    return NodeHealth(
        url=node.url,
        breaker=_breaker(node.up),
        in_flight=node.in_flight,
        turns=node.turns,
        latency_ms=_milliseconds(node.latency_seconds),
    )


def _breaker(up: bool) -> str:
    return "closed" if up else "open"


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
