"""The server's rules that turn a client's sampling settings into the ones a backend reads
(its defaults, its caps)."""

from __future__ import annotations

from modules.config import Settings
from modules.llm.inference import SamplingParams


class InvalidTurnRequest(ValueError):
    """A request that is well-formed but cannot be served; `field` names the culprit."""

    def __init__(self, detail: str, field: str | None = None, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status_code = status_code


def sampling_params(settings: Settings, requested: SamplingParams) -> SamplingParams:
    """The server's defaults for what the request leaves out; a 400 for what it caps."""
    if requested.grammar is not None:
        raise InvalidTurnRequest(
            "settings.grammar is the server's: ask for JSON with response_format",
            field="settings.grammar",
            status_code=400,
        )
    caps = (
        ("max_tokens", requested.max_tokens, settings.llm_max_tokens, "LLM_MAX_TOKENS"),
        ("temperature", requested.temperature, settings.llm_max_temperature, "LLM_MAX_TEMPERATURE"),
        ("n", requested.n, settings.llm_max_choices, "LLM_MAX_CHOICES"),
    )
    for name, value, cap, setting in caps:
        if value is not None and value > cap:
            raise InvalidTurnRequest(
                f"settings.{name} is {value}; this server allows at most {cap} ({setting})",
                field=f"settings.{name}",
                status_code=400,
            )
    return requested.resolved(
        temperature=settings.llm_default_temperature, max_tokens=settings.llm_default_max_tokens
    )
