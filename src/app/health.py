"""GET /health: the process, the database and the model; 503 when either is down."""

from __future__ import annotations

import os
import time
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.response import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from modules.llm import GenerationService


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", exclude_from_auth=True, cache=False)
    async def health(self, state: State) -> Response[dict[str, Any]]:
        database = await _database_health(state.db_config.get_engine())
        model = _model_health(state.get("generation_service"))
        registry = state.get("model_registry")
        models = (
            [{"alias": e.alias, "state": e.state} for e in registry.entries.values()]
            if registry is not None
            else []
        )
        cache = await state.response_cache.health()
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


def _model_health(service: GenerationService | None) -> dict[str, Any]:
    if service is None:
        return {"status": "unavailable", "error": "not loaded"}
    engine = service.engine
    return {
        "status": "ok" if engine.is_running else "unavailable",
        "name": engine.model.alias,
        "file": engine.model.options.path.name,
        "size_bytes": engine.model.size_bytes,
        "context_size": engine.model.n_ctx,
        "busy": engine.busy,
        "parallel": engine.parallel,
        "busy_slots": engine.busy_slots,
        "saved_states": engine.saved_states,
        "queue_depth": engine.queue_depth,
        "queue_size": engine.queue_size,
        "completed": engine.stats.completed,
        "cancelled": engine.stats.cancelled,
        "timed_out": engine.stats.timed_out,
        "failed": engine.stats.failed,
        "rejected": engine.stats.rejected,
    }
