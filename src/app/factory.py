"""`create_app(settings)`: the one place that knows every module; it composes them."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging.config import StructLoggingConfig
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from sqlalchemy.ext.asyncio import AsyncSession

from app import docs
from app.database import database_config
from app.errors import UnroutedErrors, problem_details_config
from app.health import HealthController
from app.redis import redis_client
from app.request_log import RequestLogMiddleware
from app.requests import CheckedRequest
from modules import (
    auth,
    cache,
    conversations,
    memory,
    metrics,
    profiles,
    ratelimit,
    users,
    web,
)
from modules.config import Settings
from modules.llm import LLMModule, rate_limit_headers
from modules.llm.api.openai import openai_exception_handlers
from modules.llm.inference import BackendFactory

# Regular expressions matched against the path: anchored, so /llm/metrics stays private.
PUBLIC_PATHS = (
    "^/health$",
    "^/health/live$",
    "^/metrics$",
    "^/schema",
    "^/auth/register$",
    "^/auth/login$",
    "^/auth/refresh$",
)


def _package_version() -> str:
    try:
        return version("llm-service")
    except PackageNotFoundError:
        return "dev"


def _logging(settings: Settings) -> StructlogPlugin:
    return StructlogPlugin(
        StructlogConfig(
            structlog_logging_config=StructLoggingConfig(
                log_exceptions="debug",
                wrapper_class=structlog.make_filtering_bound_logger(
                    logging.getLevelName(settings.log_level.upper())
                ),
            ),
            enable_middleware_logging=False,  # RequestLogMiddleware writes the line
        )
    )


def _request_log_outermost(config: AppConfig) -> AppConfig:
    """The request id and log line wrap everything, authentication included, so a 401
    names its request too."""
    config.middleware.insert(0, RequestLogMiddleware())
    return config


def create_app(
    settings: Settings | None = None,
    *,
    backend_factory: BackendFactory | None = None,
    password_hasher: auth.PasswordHasher | None = None,
) -> Litestar:
    """Build the app. Nothing heavy happens here: models load in the lifespan.

    `backend_factory` replaces how models are loaded and `password_hasher` the argon2
    parameters: the fast tests pass a fake backend and a cheap hasher."""
    settings = settings or Settings()
    db_config = database_config(settings.effective_database_url, echo=settings.database_echo)
    codec = auth.TokenCodec(
        settings.resolve_jwt_secret(),
        issuer=settings.jwt_issuer,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    redis = redis_client(settings)
    response_cache = cache.response_cache_from_settings(settings, redis)
    rate_limiter = ratelimit.rate_limiter_from_settings(settings, redis)
    llm = LLMModule(
        settings,
        sessions=db_config.get_session,
        cache=response_cache,
        limiter=rate_limiter,
        backend_factory=backend_factory,
    )

    def session_for(connection: ASGIConnection[Any, Any, Any, Any]) -> AsyncSession:
        return db_config.provide_session(connection.app.state, connection.scope)

    jwt_auth = auth.build_jwt_auth(
        codec, session_for, exclude=PUBLIC_PATHS, before_reading=rate_limiter.refusals.check
    )
    errors = problem_details_config()
    errors_map = errors.exception_to_problem_detail_map
    return Litestar(
        route_handlers=[
            HealthController,
            auth.create_router(),
            users.create_router(),
            *llm.routers(errors_map),
            conversations.create_router(),
            memory.create_router(),
            profiles.create_router(),
            ratelimit.create_router(),
            metrics.create_router(),
            docs.assets_router(),
            web.create_router(),
        ],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            **users.providers(),
            **auth.providers(settings, codec, password_hasher or auth.PasswordHasher()),
            **profiles.providers(),
            **cache.providers(response_cache),
            **ratelimit.providers(rate_limiter),
            **llm.providers(),
            **metrics.providers(lambda: llm.registry, response_cache, rate_limiter),
        },
        plugins=[
            SQLAlchemyPlugin(config=db_config),
            ProblemDetailsPlugin(errors),
            # After the problem-details plugin: it wraps that plugin's handlers.
            UnroutedErrors({"/v1": openai_exception_handlers(errors_map)}),
            _logging(settings),
        ],
        on_app_init=[jwt_auth.on_app_init, _request_log_outermost],
        before_send=[rate_limit_headers],
        lifespan=[llm.lifespan],
        state=State(
            {
                "started_at": time.monotonic(),
                "version": _package_version(),
                "settings": settings,
                "db_config": db_config,
                "llm": llm,
            }
        ),
        middleware=[metrics.prometheus_config().middleware],
        request_max_body_size=settings.max_body_bytes,
        request_class=CheckedRequest,
        openapi_config=docs.openapi_config(_package_version()),
        logging_config=None,
        debug=False,
    )
