"""One structured log line per request, and the X-Request-ID header.

The line holds the request id (the client's `X-Request-ID` when it is sane, else a new
one; returned on every answer), user id, method, route, status, latency and, for
generation, tokens and cache hit. Never bodies: no passwords, tokens, keys or prompt text,
unless LOG_PROMPTS=true adds the prompt (as the model read it, sanitized)."""

from __future__ import annotations

import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from modules.ratelimit import QUIET_STATE

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The request being served, for error bodies and SSE error events to name it.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
logger = structlog.get_logger("llm_service.requests")


def request_id_for(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestLogMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = request_id_for(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await next_app(scope, receive, send_with_id)
        except Exception as exc:  # answered by Litestar's outer exception handler
            status = getattr(exc, "status_code", 500)
            raise
        finally:
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": scope.get("method"),
                "route": scope.get("path_template"),
                "path": scope.get("path"),
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                # Set at authentication: the ORM user may be detached by now.
                "user_id": state.get("user_id"),
            }
            for key in ("tokens", "cache_hit", "prompt"):
                if key in state:
                    fields[key] = state[key]
            if not state.get(QUIET_STATE):  # a refusal repeated again and again: counted only
                logger.info("request", **fields)
