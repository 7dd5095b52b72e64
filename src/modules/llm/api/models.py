"""/llm/models: list, load and unload models; add models at run time, follow their
download and load, delete them (admin: the model catalog, modules/models);
/llm/validate-model: try one out (admin)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from modules.auth import requires_admin
from modules.llm.api.schemas import (
    AddModelRequest,
    ModelCapabilities,
    ModelInfo,
    ModelList,
    ValidateReport,
    ValidateRequest,
)
from modules.llm.inference import Capabilities, ModelRegistry, ModelStatus, SamplingParams
from modules.llm.turns import InputMessage, TurnRequest, TurnService
from modules.models.catalog import ModelCatalog, NewModel
from modules.users import ROLE_ADMIN

# What a user who is not an admin reads of a load error: that it failed, not its text.
LOAD_FAILED = "the model failed to load (an admin sees why)"


def model_info(model: ModelStatus, *, admin: bool = False) -> ModelInfo:
    """A model as a user sees it: a local model's file name (never its directory); for an
    admin also a remote model's servers (public URLs, never credentials) and why it failed
    to load (redacted by the registry)."""
    described = model.description
    shows_servers = admin or model.kind == "local"
    error = model.error if admin or model.error is None else LOAD_FAILED
    return ModelInfo(
        alias=model.alias,
        state="ready" if model.state == "loaded" else model.state,
        default=model.default,
        file=model.source if shows_servers else None,
        size_bytes=model.size_bytes,
        context_size=described.context_size if described else None,
        slots=model.load.slots if model.load else None,
        error=error,
        capabilities=_capabilities(described.capabilities) if described else None,
        origin=model.origin,
        progress=None if model.progress is None else round(model.progress, 4),
        bytes_done=model.bytes_done,
        bytes_total=model.bytes_total,
    )


def _is_admin(request: Request[Any, Any, Any]) -> bool:
    return getattr(request.user, "role", None) == ROLE_ADMIN


def _capabilities(capabilities: Capabilities) -> ModelCapabilities:
    return msgspec.convert(capabilities, ModelCapabilities, from_attributes=True)


class ModelsController(Controller):
    path = "/llm"
    tags = ("models",)

    @get("/models")
    async def list_models(
        self, request: Request[Any, Any, Any], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelList:
        """Every configured model with its state and size; admins also see remote servers
        and load errors."""
        admin = _is_admin(request)
        return ModelList(
            default=model_registry.default_alias,
            models=[model_info(model, admin=admin) for model in model_registry.describe_all()],
        )

    @post("/models", status_code=202, guards=[requires_admin])
    async def add_model(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AddModelRequest],
        model_catalog: NamedDependency[ModelCatalog],
    ) -> Response[ModelInfo]:
        """Add a model at run time (admin): a file under MODELS_DIR, a download, or a
        remote server. Answered at once (202); GET its Location, or its /events, to follow
        the download and the load. Every replica serves it within MODEL_SYNC_SECONDS."""
        fields = {name: getattr(data, name) for name in AddModelRequest.__struct_fields__}
        entry = await model_catalog.add(NewModel(**fields), request.user.id)
        info = model_info(model_catalog.registry.describe(entry.alias), admin=True)
        return Response(info, status_code=202, headers={"Location": f"/llm/models/{entry.alias}"})

    @get("/models/{alias:str}", guards=[requires_admin])
    async def get_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelInfo:
        """One model's state (admin): downloading and loading with their progress."""
        return model_info(model_registry.describe(alias), admin=True)

    @get("/models/{alias:str}/events", guards=[requires_admin])
    async def model_events(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> Stream:
        """Server-sent events (admin): `event: state` with the model's state now and at
        each change, until it is ready or failed (or deleted); a comment line every 15 s
        keeps the stream open (Litestar's SSE writes an empty `data:` with a comment, which
        clients would read as an event, so the bytes are written here)."""
        model_registry.describe(alias)  # unknown: a 404 before the stream starts

        async def states() -> AsyncIterator[bytes]:
            async for status in model_registry.watch(alias):
                if status is None:
                    yield b": waiting\n\n"
                    continue
                info = model_info(status, admin=True)
                yield b"event: state\ndata: " + msgspec.json.encode(info) + b"\n\n"
                if info.state in ("ready", "failed"):
                    return

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Stream(states(), media_type="text/event-stream", headers=headers)

    @delete("/models/{alias:str}", status_code=204, guards=[requires_admin])
    async def delete_model(
        self, alias: FromPath[str], model_catalog: NamedDependency[ModelCatalog]
    ) -> None:
        """Delete a catalog model (admin): unloaded on every replica, its downloaded file
        removed, its cached answers dropped. Models from settings stay (409)."""
        await model_catalog.delete(alias)

    @post("/models/{alias:str}/load", status_code=200, guards=[requires_admin])
    async def load_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelInfo:
        """Load a configured model (admin); its cached answers are dropped."""
        entry = await model_registry.load(alias)
        return model_info(model_registry.describe(entry.alias), admin=True)

    @post("/models/{alias:str}/unload", status_code=200, guards=[requires_admin])
    async def unload_model(
        self, alias: FromPath[str], model_registry: NamedDependency[ModelRegistry]
    ) -> ModelInfo:
        """Unload a model (admin): its memory is freed, its requests get 503."""
        entry = await model_registry.unload(alias)
        return model_info(model_registry.describe(entry.alias), admin=True)

    @post("/validate-model", status_code=200, guards=[requires_admin])
    async def validate_model(
        self,
        data: JSONBody[ValidateRequest],
        model_registry: NamedDependency[ModelRegistry],
        turn_service: NamedDependency[TurnService],
    ) -> ValidateReport:
        """Load the model if needed, run a short greedy generation, report what it can do.
        The generation is a turn like any other (admitted, sanitized, charged), on this
        model only, and nothing of it is stored or cached."""
        entry = model_registry.entry(data.model)
        if entry.state != "loaded":
            entry = await model_registry.load(entry.alias)
        info = model_info(model_registry.describe(entry.alias), admin=True)
        fields = {name: getattr(info, name) for name in ModelInfo.__struct_fields__}
        if entry.backend is None:
            return ValidateReport(**fields, available=False)
        started = time.monotonic()
        turn = await turn_service.start(
            TurnRequest(
                messages=[InputMessage("user", data.prompt, "prompt")],
                settings=SamplingParams(temperature=0.0, max_tokens=data.max_tokens),
                model=entry.alias,
                use_cache=False,
                probe=True,
            )
        )
        completion = await turn.result()
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
