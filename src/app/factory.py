"""`create_app(settings)`: the one place that knows every module and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.logging.config import StructLoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.database import database_config
from app.errors import problem_details_config
from app.health import HealthController
from app.request_log import RequestLogMiddleware
from modules import auth, conversations, llm, profiles, users
from modules.auth import PasswordHasher, TokenCodec, build_jwt_auth
from modules.cache import build_response_cache
from modules.config import Settings
from modules.conversations import ConversationService, provide_conversation_service
from modules.llm import GenerationService
from modules.llm.engine import EngineUnavailableError
from modules.llm.registry import ModelRegistry
from modules.llm.turns import ConversationTurns
from modules.metrics import AppCollector, MetricsController, SummaryController, prometheus_config
from modules.profiles import provide_profile_service
from modules.ratelimit import Limits, MemoryCounters, RateLimiter, RedisCounters
from modules.users.models import User

logger = structlog.get_logger("app")

# Regular expressions matched against the path: anchored, so /llm/metrics stays private.
PUBLIC_PATHS = (
    "^/health$",
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


def _redis_client(settings: Settings) -> Redis | None:
    """One client (one connection pool) for the cache and the rate limits; short timeouts,
    so an unreachable Redis costs a request milliseconds, not seconds."""
    if not settings.redis_url:
        return None
    client: Redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1.0
    )
    return client


def _rate_limiter(settings: Settings, redis: Redis | None) -> RateLimiter:
    counters = MemoryCounters() if redis is None else RedisCounters(redis)
    default = Limits(
        requests_per_minute=settings.rate_limit_requests_per_minute,
        tokens_per_minute=settings.rate_limit_tokens_per_minute,
        tokens_per_day=settings.rate_limit_tokens_per_day,
    )
    return RateLimiter(
        counters,
        default=default,
        # A role's override replaces only the limits it names.
        per_role={
            role: dataclasses.replace(default, **values)
            for role, values in settings.rate_limit_role_overrides.items()
        },
        login_per_ip_per_minute=settings.login_attempts_per_minute_per_ip,
        login_failures_per_account=settings.login_failures_per_account,
        login_failure_window_seconds=settings.login_failure_window_seconds,
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app. Nothing heavy happens here: the model loads in the lifespan."""
    settings = settings or Settings()
    db_config = database_config(settings.effective_database_url, echo=settings.database_echo)
    codec = TokenCodec(
        settings.resolve_jwt_secret(),
        issuer=settings.jwt_issuer,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    hasher = PasswordHasher()

    def session_for(connection: ASGIConnection[Any, Any, Any, Any]) -> AsyncSession:
        return db_config.provide_session(connection.app.state, connection.scope)

    jwt_auth = build_jwt_auth(codec, session_for, exclude=PUBLIC_PATHS)
    errors = problem_details_config()
    redis = _redis_client(settings)
    response_cache = build_response_cache(
        redis=redis,
        ttl_seconds=settings.cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
        scope=settings.cache_scope,
        enabled=settings.cache_enabled,
    )
    rate_limiter = _rate_limiter(settings, redis)
    state = State(
        {
            "rate_limiter": rate_limiter,
            "started_at": time.monotonic(),
            "version": _package_version(),
            "settings": settings,
            "db_config": db_config,
            "response_cache": response_cache,
            "generation_service": None,
        }
    )
    # One registry per app: several apps can live in one process (tests) without clashes.
    metrics_registry = CollectorRegistry(auto_describe=True)
    metrics_registry.register(
        AppCollector(
            lambda: state.generation_service.engine if state.generation_service else None,
            lambda: {"hits": response_cache.stats.hits, "misses": response_cache.stats.misses},
            lambda: [
                (entry.alias, entry.state == "loaded")
                for entry in (
                    state.model_registry.entries.values() if state.get("model_registry") else []
                )
            ],
        )
    )
    state["metrics_registry"] = metrics_registry

    async def clear_cache_quietly() -> None:
        with contextlib.suppress(Exception):  # counted and shown in /health by the cache
            await response_cache.clear()

    @asynccontextmanager
    async def model_lifespan(app: Litestar) -> AsyncIterator[None]:
        def changed(alias: str) -> None:
            # The default model's service is what handlers without a model name use; a
            # loaded or unloaded model also invalidates the cached answers.
            app.state.generation_service = registry.default
            asyncio.get_running_loop().create_task(clear_cache_quietly())
            logger.info("model state changed", model=alias, state=registry.entry(alias).state)

        registry = ModelRegistry(settings, settings.model_specs(), on_change=changed)
        app.state.model_registry = registry
        await registry.load_all()
        if not any(entry.state == "loaded" for entry in registry.entries.values()):
            errors = "; ".join(f"{e.alias}: {e.error}" for e in registry.entries.values())
            raise RuntimeError(f"no model could be loaded ({errors})")
        try:
            yield
        finally:
            await registry.stop_all()
            app.state.generation_service = None

    def provide_generation_service(state: State) -> GenerationService:
        service: GenerationService | None = state.get("generation_service")
        if service is None:
            raise EngineUnavailableError("the default model is not loaded")
        return service

    def provide_model_registry(state: State) -> ModelRegistry:
        registry: ModelRegistry | None = state.get("model_registry")
        if registry is None:
            raise EngineUnavailableError("the models are not loaded yet")
        return registry

    def provide_conversation_turns(
        request: Request[User, Any, Any],
        state: State,
        conversation_service: NamedDependency[ConversationService],
    ) -> ConversationTurns:
        # The handler points it at the model the request names.
        return ConversationTurns(
            state.get("generation_service"),
            conversation_service,
            db_config.get_session,
            request.user.id,
        )

    def provide_settings() -> Settings:
        return settings

    def provide_hasher() -> PasswordHasher:
        return hasher

    def provide_codec() -> TokenCodec:
        return codec

    return Litestar(
        route_handlers=[
            HealthController,
            auth.create_router(),
            users.create_router(),
            llm.create_router(),
            llm.create_openai_router(errors.exception_to_problem_detail_map),
            conversations.create_router(),
            profiles.create_router(),
            MetricsController,
            SummaryController,
        ],
        dependencies={
            "settings": Provide(provide_settings, sync_to_thread=False, use_cache=True),
            "password_hasher": Provide(provide_hasher, sync_to_thread=False, use_cache=True),
            "token_codec": Provide(provide_codec, sync_to_thread=False, use_cache=True),
            "generation_service": Provide(provide_generation_service, sync_to_thread=False),
            "model_registry": Provide(provide_model_registry, sync_to_thread=False),
            "conversation_service": Provide(provide_conversation_service, sync_to_thread=False),
            "conversation_turns": Provide(provide_conversation_turns, sync_to_thread=False),
            "profile_service": Provide(provide_profile_service),
            "rate_limiter": Provide(lambda: rate_limiter, sync_to_thread=False, use_cache=True),
            "response_cache": Provide(lambda: response_cache, sync_to_thread=False, use_cache=True),
        },
        plugins=[
            SQLAlchemyPlugin(config=db_config),
            ProblemDetailsPlugin(errors),
            StructlogPlugin(
                StructlogConfig(
                    structlog_logging_config=StructLoggingConfig(
                        log_exceptions="debug",
                        wrapper_class=structlog.make_filtering_bound_logger(
                            logging.getLevelName(settings.log_level.upper())
                        ),
                    ),
                    enable_middleware_logging=False,  # RequestLogMiddleware writes the line
                )
            ),
        ],
        on_app_init=[jwt_auth.on_app_init],
        lifespan=[model_lifespan],
        state=state,
        middleware=[RequestLogMiddleware(), prometheus_config().middleware],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="llm-service", version=_package_version()),
        logging_config=None,
        debug=False,
    )
