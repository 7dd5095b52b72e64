"""Request and response bodies of the /llm routes."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from modules.llm.engine import Finished

# Generous static bounds; the configured limits (characters, tokens) are checked later.
Content = Annotated[str, Meta(max_length=1_000_000)]
StopString = Annotated[str, Meta(min_length=1, max_length=64)]


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


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: Content


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Either `prompt` (one user message) or `messages` (a chat), not both."""

    prompt: Content | None = None
    messages: Annotated[list[MessageIn], Meta(min_length=1, max_length=1000)] | None = None
    # A model alias from GET /llm/models; absent: the default model.
    model: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    system: Content | None = None
    settings: GenerationSettings = msgspec.field(default_factory=GenerationSettings)
    stream: bool = False
    # Continue a stored conversation; absent: a new one is made and its id returned.
    conversation_id: uuid.UUID | None = None
    # Answer from the response cache when the same request was answered before.
    use_cache: bool = True
    # A profile's system prompt and default settings (admin-managed); `character_name` is
    # the same thing under the name game clients use.
    profile: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    character_name: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


def merge_settings(base: GenerationSettings, override: GenerationSettings) -> GenerationSettings:
    """Fields set in `override` win; the others come from `base`."""
    values = {
        name: getattr(override, name)
        if getattr(override, name) is not None
        else getattr(base, name)
        for name in GenerationSettings.__struct_fields__
    }
    return GenerationSettings(**values)


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Prompt tokens whose KV cache was reused (a conversation's earlier turns).
    cached_tokens: int = 0

    @classmethod
    def of(cls, finished: Finished) -> Usage:
        return cls(
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            total_tokens=finished.prompt_tokens + finished.completion_tokens,
            cached_tokens=finished.cached_tokens,
        )


class MessageSanitization(msgspec.Struct):
    index: int
    role: str
    actions: list[str]


class SanitizationReport(msgspec.Struct):
    changed: bool
    actions: list[str]
    messages: list[MessageSanitization]


class Timings(msgspec.Struct):
    queue_seconds: float
    prompt_seconds: float
    generation_seconds: float
    time_to_first_token: float
    tokens_per_second: float


class GenerateResponse(msgspec.Struct):
    response: str
    model: str
    conversation_id: uuid.UUID
    history_turns_dropped: int
    cache_hit: bool
    finish_reason: str
    generation_time: float
    usage: Usage
    timings: Timings
    sanitization: SanitizationReport
