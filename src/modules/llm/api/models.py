"""/llm/models: list, load and unload models; /llm/validate-model: try one out (admin)."""

from __future__ import annotations

import time

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from modules.auth import requires_admin
from modules.llm.api.schemas import ModelInfo, ModelList, ValidateReport, ValidateRequest
from modules.llm.inference import ChatMessage, ModelEntry, ModelRegistry, SamplingParams, collect
from modules.llm.inference.remote import public_url


def describe(entry: ModelEntry, default: str) -> ModelInfo:
    backend = entry.backend
    return ModelInfo(
        alias=entry.alias,
        state=entry.state,
        default=entry.alias == default,
        file=entry.spec.path.name
        if entry.spec.path
        else "|".join(public_url(url) for url in (entry.spec.url or "").split("|")),
        size_bytes=entry.size_bytes,
        context_size=backend.context_size if backend else None,
        slots=backend.load().slots if backend else None,
        error=entry.error,
    )


class ModelsController(Controller):
    path = "/llm"
    tags = ("models",)

    @get("/models")
    async def list_models(self, model_registry: NamedDependency[ModelRegistry]) -> ModelList:
        """Every configured model with its state and size."""
        default = model_registry.default_alias
        return ModelList(
            default=default,
            models=[describe(e, default) for e in model_registry.entries.values()],
        )

    @post("/models/{alias:str}/load", status_code=200, guards=[requires_admin])
    async def load_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelInfo:
        """Load a configured model (admin); its cached answers are dropped."""
        entry = await model_registry.load(alias)
        return describe(entry, model_registry.default_alias)

    @post("/models/{alias:str}/unload", status_code=200, guards=[requires_admin])
    async def unload_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelInfo:
        """Unload a model (admin): its memory is freed, its requests get 503."""
        entry = await model_registry.unload(alias)
        return describe(entry, model_registry.default_alias)

    @post("/validate-model", status_code=200, guards=[requires_admin])
    async def validate_model(
        self, data: JSONBody[ValidateRequest], model_registry: NamedDependency[ModelRegistry]
    ) -> ValidateReport:
        """Load the model if needed, run a short greedy generation, report what it can do."""
        entry = model_registry.entry(data.model)
        if entry.state != "loaded":
            entry = await model_registry.load(entry.alias)
        info = describe(entry, model_registry.default_alias)
        fields = {name: getattr(info, name) for name in ModelInfo.__struct_fields__}
        backend = entry.backend
        if backend is None:
            return ValidateReport(**fields, available=False)
        prompt = await backend.chat_prompt([ChatMessage("user", data.prompt)])
        started = time.monotonic()
        params = SamplingParams(temperature=0.0, max_tokens=data.max_tokens)
        completion = await collect(
            backend.stream(prompt, params, owner="validate-model", timeout=60), within_seconds=90
        )
        finished = completion.finished
        seconds = finished.generation_seconds
        return ValidateReport(
            **fields,
            available=True,
            sample=completion.text,
            completion_tokens=finished.completion_tokens,
            time_to_first_token=round(finished.time_to_first_token, 4),
            tokens_per_second=round(finished.completion_tokens / seconds, 2) if seconds else 0.0,
            seconds=round(time.monotonic() - started, 4),
        )
