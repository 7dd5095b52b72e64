"""/llm/models: list, load and unload models; /llm/validate-model: try one out (admin)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from modules.auth.security import requires_admin
from modules.llm.registry import ModelEntry, ModelRegistry
from modules.llm.schemas import GenerationSettings


class ValidateRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)] = (
        "Write one sentence about the sea."
    )
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=256)] = 32


def _describe(entry: ModelEntry, default: str) -> dict[str, Any]:
    engine = entry.service.engine if entry.service else None
    return {
        "alias": entry.alias,
        "state": entry.state,
        "default": entry.alias == default,
        "file": entry.path.name,
        "size_bytes": entry.size_bytes,
        "context_size": engine.model.n_ctx if engine else None,
        "slots": engine.parallel if engine else None,
        "error": entry.error,
    }


class ModelsController(Controller):
    path = "/llm"
    tags = ("models",)

    @get("/models")
    async def list_models(self, model_registry: NamedDependency[ModelRegistry]) -> dict[str, Any]:
        """Every configured model with its state and size."""
        default = model_registry.default_alias
        return {
            "default": default,
            "models": [_describe(e, default) for e in model_registry.entries.values()],
        }

    @post("/models/{alias:str}/load", status_code=200, guards=[requires_admin])
    async def load_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> dict[str, Any]:
        """Load a configured model (admin); its cached answers are dropped."""
        entry = await model_registry.load(alias)
        return _describe(entry, model_registry.default_alias)

    @post("/models/{alias:str}/unload", status_code=200, guards=[requires_admin])
    async def unload_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> dict[str, Any]:
        """Unload a model (admin): its memory is freed, its requests get 503."""
        entry = await model_registry.unload(alias)
        return _describe(entry, model_registry.default_alias)

    @post("/validate-model", status_code=200, guards=[requires_admin])
    async def validate_model(
        self, data: JSONBody[ValidateRequest], model_registry: NamedDependency[ModelRegistry]
    ) -> dict[str, Any]:
        """Load the model if needed, run a short generation, report what it can do."""
        entry = model_registry.entry(data.model)
        if entry.state != "loaded":
            entry = await model_registry.load(entry.alias)
        report = _describe(entry, model_registry.default_alias)
        if entry.service is None:
            return {**report, "available": False}
        service = entry.service
        prepared = await service.prepare_chat(
            [("user", data.prompt, "prompt")],
            system=None,
            history=[],
            settings=GenerationSettings(max_tokens=data.max_tokens, temperature=0.0),
        )
        started = time.monotonic()
        result = await service.collect(service.start(prepared, owner="validate-model"))
        elapsed = time.monotonic() - started
        finished = result.finished
        rate = (
            finished.completion_tokens / finished.generation_seconds
            if finished.generation_seconds > 0
            else 0.0
        )
        return {
            **report,
            "available": True,
            "sample": result.text,
            "completion_tokens": finished.completion_tokens,
            "time_to_first_token": round(finished.time_to_first_token, 4),
            "tokens_per_second": round(rate, 2),
            "seconds": round(elapsed, 4),
        }
