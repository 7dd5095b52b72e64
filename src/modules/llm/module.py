"""The llm module's wiring in one place: its routers, its providers, and the lifespan that
loads the models into the registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any, cast

import structlog
from litestar import Litestar, Request, Router
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency, Provide
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import Message, Scope

from modules.cache import ResponseCache
from modules.config import Settings
from modules.llm.api.generate import LLMController
from modules.llm.api.models import ModelsController
from modules.llm.api.openai import (
    EmbeddingsController,
    OpenAIController,
    ResponsesController,
    openai_exception_handlers,
)
from modules.llm.inference import (
    Backend,
    BackendFactory,
    BackendUnavailableError,
    LoadOverrides,
    ModelRegistry,
    ModelSpec,
    RemoteBackend,
)
from modules.llm.inference.llamacpp import (
    EmbedderOptions,
    LlamaCppBackend,
    LocalOptions,
    ModelOptions,
)
from modules.llm.inference.llamacpp.embeddings import Pooling
from modules.llm.turns import (
    Admission,
    Caller,
    EmbeddingService,
    ProfileStore,
    PromptPreparer,
    SessionFactory,
    TurnService,
    quota_headers,
)
from modules.llm.turns.memory import Memory, MemorySearcher
from modules.memory import MemorySearch
from modules.models.catalog import ModelCatalog
from modules.ratelimit import RateLimiter
from modules.responses import ResponseStore

logger = structlog.get_logger(__name__)
# At shutdown, how long the last turns' embeddings (memory search) may still take.
MEMORY_DRAIN_SECONDS = 3.0


def local_backend_factory(settings: Settings) -> BackendFactory:
    """GGUF files loaded in this process (llama.cpp), and OpenAI-compatible servers."""
    options = LocalOptions(
        ModelOptions(
            n_ctx=settings.llm_context_size,
            n_threads=settings.effective_threads,
            n_batch=settings.llm_batch_size,
            n_gpu_layers=settings.llm_gpu_layers,
            parallel=settings.llm_parallel,
            cpu_extra_buffers=settings.llm_cpu_extra_buffers,
            flash_attention=settings.llm_flash_attention,
        ),
        queue_size=settings.llm_queue_size,
        prefill_chunk=settings.llm_prefill_chunk,
        burst_wait_seconds=settings.llm_burst_wait_ms / 1000,
        stream_interval_seconds=settings.llm_stream_interval_ms / 1000,
        state_cache_bytes=settings.llm_state_cache_mb * 1024 * 1024,
        default_system_prompt=settings.llm_default_system_prompt,
        embeddings=embedder_options(settings),
        chat_templates=settings.chat_templates(),
    )

    def load(spec: ModelSpec) -> Backend:
        if spec.url is not None:
            return RemoteBackend.connect(
                spec.alias,
                spec.url,
                spec.api_key,
                context_size=settings.llm_context_size,
                connect_timeout=settings.llm_remote_connect_timeout_seconds,
                read_timeout=settings.llm_remote_read_timeout_seconds,
            )
        assert spec.path is not None
        return LlamaCppBackend.from_file(
            spec.alias, spec.path, with_overrides(options, spec.overrides), spec.on_load_progress
        )

    return load


def with_overrides(options: LocalOptions, overrides: LoadOverrides) -> LocalOptions:
    """A catalog model's own context size, slots, GPU layers and embeddings' pooling over
    the settings'."""
    model = options.model
    embeddings = options.embeddings
    if overrides.pooling == "none":
        embeddings = None
    elif overrides.pooling is not None:
        pooling = cast(Pooling, overrides.pooling)  # checked by the API's schema
        embeddings = replace(embeddings or EmbedderOptions(), pooling=pooling)
    return replace(
        options,
        embeddings=embeddings,
        model=replace(
            model,
            n_ctx=overrides.context_size or model.n_ctx,
            parallel=overrides.slots or model.parallel,
            n_gpu_layers=model.n_gpu_layers
            if overrides.gpu_layers is None
            else overrides.gpu_layers,
        ),
    )


def embedder_options(settings: Settings) -> EmbedderOptions | None:
    """How a local model embeds (None: LLM_EMBEDDING_POOLING=none, it does not)."""
    pooling = settings.llm_embedding_pooling
    if pooling == "none":
        return None
    return EmbedderOptions(
        pooling=pooling,
        context_size=settings.llm_embedding_context_size,
        batch_inputs=settings.llm_embedding_batch_inputs,
        queue_size=settings.llm_queue_size,
        threads=settings.effective_threads,
    )


def model_specs(settings: Settings) -> list[ModelSpec]:
    keys = dict(
        item.strip().split("=", 1)
        for item in settings.llm_remote_api_keys.split(",")
        if "=" in item
    )
    return [
        ModelSpec(alias, url=target, api_key=keys.get(alias))
        if isinstance(target, str)
        else ModelSpec(alias, path=target)
        for alias, target in settings.model_specs()
    ]


async def rate_limit_headers(message: Message, scope: Scope) -> None:
    """A `before_send` hook: an admitted request's answer, streamed or whole, starts with
    OpenAI's rate-limit headers (what the caller has left)."""
    if message["type"] == "http.response.start":
        headers = quota_headers(scope.get("state", {}))
        if headers:
            mutable = MutableScopeHeaders.from_message(message)
            for name, value in headers.items():
                mutable[name] = value


class LLMModule:
    def __init__(
        self,
        settings: Settings,
        *,
        sessions: SessionFactory,
        cache: ResponseCache,
        limiter: RateLimiter,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.cache = cache
        self.limiter = limiter
        self.backend_factory = backend_factory or local_backend_factory(settings)
        self.preparer = PromptPreparer(settings)
        self.memory = Memory(settings, sessions, self.preparer)
        self.registry: ModelRegistry | None = None
        self.catalog: ModelCatalog | None = None
        self._background: set[asyncio.Task[None]] = set()

    def routers(
        self, to_problem: Mapping[type[Exception], Callable[[Any], ProblemDetailsException]]
    ) -> list[Router]:
        return [
            Router(path="/", route_handlers=[LLMController, ModelsController]),
            # /v1 answers errors in OpenAI's shape, converted from the app's own mapping.
            Router(
                path="/",
                route_handlers=[OpenAIController, EmbeddingsController, ResponsesController],
                exception_handlers=openai_exception_handlers(to_problem),  # type: ignore[arg-type]
            ),
        ]

    def providers(self) -> dict[str, Provide]:
        def provide_model_registry() -> ModelRegistry:
            if self.registry is None:
                raise BackendUnavailableError("the models are not loaded yet")
            return self.registry

        def provide_turn_service(
            request: Request[Any, Any, Any],
            model_registry: NamedDependency[ModelRegistry],
            profile_service: NamedDependency[ProfileStore],
        ) -> TurnService:
            state = request.scope.setdefault("state", {})
            return TurnService(
                settings=self.settings,
                registry=model_registry,
                preparer=self.preparer,
                admission=Admission.of(
                    self.settings, self.limiter, request.user.id, request.user.role, state
                ),
                cache=self.cache,
                profiles=profile_service,
                sessions=self.sessions,
                caller=Caller(request.user.id, request.user.role),
                log=state,
                memory=self.memory,
            )

        def provide_embedding_service(
            request: Request[Any, Any, Any], model_registry: NamedDependency[ModelRegistry]
        ) -> EmbeddingService:
            state = request.scope.setdefault("state", {})
            return EmbeddingService(
                settings=self.settings,
                registry=model_registry,
                preparer=self.preparer,
                admission=Admission.of(
                    self.settings, self.limiter, request.user.id, request.user.role, state
                ),
                owner=str(request.user.id),
                log=state,
            )

        def provide_memory_search(
            request: Request[Any, Any, Any],
            model_registry: NamedDependency[ModelRegistry],
            embedding_service: NamedDependency[EmbeddingService],
        ) -> MemorySearch:
            return MemorySearcher(self.memory, model_registry, embedding_service, request.user.id)

        def provide_model_catalog() -> ModelCatalog:
            if self.catalog is None:
                raise BackendUnavailableError("the models are not loaded yet")
            return self.catalog

        def provide_response_store(request: Request[Any, Any, Any]) -> ResponseStore:
            return ResponseStore(self.sessions, request.user.id)

        return {
            "model_registry": Provide(provide_model_registry, sync_to_thread=False),
            "model_catalog": Provide(provide_model_catalog, sync_to_thread=False),
            "turn_service": Provide(provide_turn_service, sync_to_thread=False),
            "embedding_service": Provide(provide_embedding_service, sync_to_thread=False),
            "response_store": Provide(provide_response_store, sync_to_thread=False),
            "memory_search": Provide(provide_memory_search, sync_to_thread=False),
        }

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        specs = model_specs(self.settings)
        registry = ModelRegistry(
            specs,
            self.backend_factory,
            on_change=self._models_changed,
            fallbacks=self.settings.fallbacks([spec.alias for spec in specs]),
        )
        self.registry = registry
        catalog = ModelCatalog(self.settings, self.sessions, registry)
        syncing: asyncio.Task[None] | None = None
        try:
            await registry.load_all()
            # Models added at run time: made to serve in the background, kept in step.
            self.catalog = catalog
            syncing = asyncio.get_running_loop().create_task(catalog.run())
            yield
        finally:
            if syncing is not None:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing
            await catalog.stop()
            self.catalog = None
            # Turns stored last (streams the drain ended included) are embedded too, within a
            # bound: the process still exits soon after SHUTDOWN_GRACE_SECONDS.
            await self.memory.drain(within_seconds=MEMORY_DRAIN_SECONDS)
            await registry.stop_all()
            self.registry = None
            self.preparer.close()

    def _models_changed(self, alias: str) -> None:
        # An operator loaded or unloaded this model: its cached answers go, the others stay.
        task = asyncio.get_running_loop().create_task(self._clear_cache_quietly(alias))
        self._background.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)
        if self.registry is not None:
            logger.info("model state changed", model=alias, state=self.registry.entry(alias).state)

    async def _clear_cache_quietly(self, alias: str) -> None:
        with contextlib.suppress(Exception):  # counted and shown in /health by the cache
            await self.cache.clear(alias)
