"""GET /health: the process, the database, every model and the cache."""

from __future__ import annotations

import os
import time
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from modules.cache import ResponseCache
from modules.llm.inference import ModelEntry, ModelRegistry


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", exclude_from_auth=True, cache=False)
    async def health(
        self,
        state: State,
        model_registry: NamedDependency[ModelRegistry],
        response_cache: NamedDependency[ResponseCache],
    ) -> Response[dict[str, Any]]:
        """The process, the database, every model and the cache; 503 when the database or
        the default model is down."""
        database = await _database_health(state.db_config.get_engine())
        models = [_model_health(entry) for entry in model_registry.entries.values()]
        model = models[0]  # the default model comes first
        cache = await response_cache.health()
        healthy = database["status"] == "ok" and model["status"] == "ok"
        # A cache outage degrades the service but it keeps answering: still 200.
        status = "unavailable" if not healthy else "ok" if cache["status"] == "ok" else "degraded"
        body = {
            "status": status,
            "process": {
                "status": "ok",
                "pid": os.getpid(),
                "uptime_seconds": round(time.monotonic() - state.started_at, 1),
                "version": state.version,
            },
            "database": database,
            "model": model,
            "models": models,
            "cache": cache,
        }
        return Response(body, status_code=200 if healthy else 503)


async def _database_health(engine: AsyncEngine) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return {
            "status": "unavailable",
            "dialect": engine.dialect.name,
            "error": type(exc).__name__,
        }
    return {
        "status": "ok",
        "dialect": engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def _model_health(entry: ModelEntry) -> dict[str, Any]:
    backend = entry.backend
    if backend is None:
        return {
            "status": "unavailable",
            "name": entry.alias,
            "state": entry.state,
            "error": entry.error or "not loaded",
        }
    load, stats = backend.load(), backend.stats
    return {
        "status": "ok" if load.running else "unavailable",
        "name": entry.alias,
        "state": entry.state,
        **backend.describe(),
        "busy": load.busy_slots > 0,
        "parallel": load.slots,
        "busy_slots": load.busy_slots,
        "queue_depth": load.queue_depth,
        "queue_size": load.queue_size,
        "completed": stats.completed,
        "cancelled": stats.cancelled,
        "timed_out": stats.timed_out,
        "failed": stats.failed,
        "rejected": stats.rejected,
    }
