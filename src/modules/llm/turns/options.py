"""Generation settings as clients send them, and the server's rules that turn them into
sampling parameters (defaults, caps)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from modules.config import Settings
from modules.llm.inference import SamplingParams

StopString = Annotated[str, Meta(min_length=1, max_length=64)]


class InvalidTurnRequest(ValueError):
    """A request that is well-formed but cannot be served; `field` names the culprit."""

    def __init__(self, detail: str, field: str | None = None, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status_code = status_code


class GenerationSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Sampling settings; absent ones take the server's defaults, all are capped by it."""

    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=1000)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.5, le=2.0)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    stop: Annotated[list[StopString], Meta(max_length=8)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None


def merge_settings(base: GenerationSettings, override: GenerationSettings) -> GenerationSettings:
    """Fields set in `override` win; the others come from `base`."""
    values = {
        name: getattr(override, name)
        if getattr(override, name) is not None
        else getattr(base, name)
        for name in GenerationSettings.__struct_fields__
    }
    return GenerationSettings(**values)


def sampling_params(settings: Settings, requested: GenerationSettings) -> SamplingParams:
    """The server's defaults for what the request leaves out; a 400 for what it caps."""
    caps = (
        ("max_tokens", requested.max_tokens, settings.llm_max_tokens, "LLM_MAX_TOKENS"),
        ("temperature", requested.temperature, settings.llm_max_temperature, "LLM_MAX_TEMPERATURE"),
    )
    for name, value, cap, setting in caps:
        if value is not None and value > cap:
            raise InvalidTurnRequest(
                f"settings.{name} is {value}; this server allows at most {cap} ({setting})",
                field=f"settings.{name}",
                status_code=400,
            )
    return SamplingParams(
        temperature=(
            settings.llm_default_temperature
            if requested.temperature is None
            else requested.temperature
        ),
        max_tokens=requested.max_tokens or settings.llm_default_max_tokens,
        top_p=0.95 if requested.top_p is None else requested.top_p,
        top_k=40 if requested.top_k is None else requested.top_k,
        repeat_penalty=1.0 if requested.repeat_penalty is None else requested.repeat_penalty,
        presence_penalty=requested.presence_penalty or 0.0,
        frequency_penalty=requested.frequency_penalty or 0.0,
        stop=tuple(requested.stop or ()),
        seed=requested.seed,
    )
