"""Request and response bodies of the /llm routes."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from modules.llm.inference import Finished, SamplingParams
from modules.llm.turns import SanitizationReport

# A static bound that a body under the 1 MiB limit can hold; the configured limits
# (SANITIZER_MAX_CHARS, tokens) are checked next, before any cleaning.
Content = Annotated[str, Meta(max_length=100_000)]
ProfileName = Annotated[str, Meta(min_length=1, max_length=100)]
ModelName = Annotated[str, Meta(min_length=1, max_length=200)]


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: Content


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Either `prompt` (one user message) or `messages` (a chat), not both."""

    prompt: Content | None = None
    messages: Annotated[list[MessageIn], Meta(min_length=1, max_length=1000)] | None = None
    # A model alias from GET /llm/models; absent: the default model.
    model: ModelName | None = None
    system: Content | None = None
    settings: SamplingParams = msgspec.field(default_factory=SamplingParams)
    stream: bool = False
    # Continue a stored conversation; absent: a new one is made and its id returned.
    conversation_id: uuid.UUID | None = None
    # Answer from the response cache when the same request was answered before.
    use_cache: bool = True
    # A profile's system prompt and default settings (admin-managed); `character_name` is
    # the same thing under the name game clients use.
    profile: ProfileName | None = None
    character_name: ProfileName | None = None
    # Recall this many of the user's earlier messages, nearest in meaning to this turn's
    # question, from their other conversations into the system turn (MEMORY_MAX_RECALL).
    memory: Annotated[int, Meta(ge=0, le=64)] = 0


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class Usage(msgspec.Struct):
    """A turn's token counts, the same in this service's answers and OpenAI's."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Prompt tokens whose KV cache was reused (a conversation's earlier turns); OpenAI's
    # clients read them from `prompt_tokens_details`.
    cached_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)

    @classmethod
    def of(cls, finished: Finished) -> Usage:
        return cls(
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            total_tokens=finished.prompt_tokens + finished.completion_tokens,
            cached_tokens=finished.cached_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=finished.cached_tokens),
        )


class Timings(msgspec.Struct):
    queue_seconds: float
    prompt_seconds: float
    generation_seconds: float
    time_to_first_token: float
    tokens_per_second: float

    @classmethod
    def of(cls, finished: Finished) -> Timings:
        seconds = finished.generation_seconds
        return cls(
            queue_seconds=round(finished.queue_seconds, 4),
            prompt_seconds=round(finished.prompt_seconds, 4),
            generation_seconds=round(seconds, 4),
            time_to_first_token=round(finished.time_to_first_token, 4),
            tokens_per_second=round(finished.completion_tokens / seconds, 2)
            if seconds > 0
            else 0.0,
        )


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


class StreamStart(msgspec.Struct):
    """The `start` event of a /llm/generate stream."""

    model: str
    conversation_id: uuid.UUID | None
    history_turns_dropped: int
    cache_hit: bool
    sanitization: SanitizationReport


class StreamDone(msgspec.Struct):
    """The `done` event of a /llm/generate stream (`token` events carry `{"text": ...}`)."""

    model: str
    conversation_id: uuid.UUID | None
    finish_reason: str
    cache_hit: bool
    usage: Usage
    timings: Timings


class CacheCleared(msgspec.Struct):
    cleared: bool
    backend: str


class ModelCapabilities(msgspec.Struct):
    """What a model can be asked for; a request needing one it lacks is refused by name."""

    chat: bool
    completion: bool
    embeddings: bool
    grammar: bool  # constrained output (JSON schema)
    tools: bool
    logprobs: bool
    n: bool  # several choices for one prompt


class ModelInfo(msgspec.Struct):
    alias: str
    # unloaded, downloading, loading, ready, failed
    state: str
    default: bool
    # A local model's file name (never its directory); a remote model's servers' public
    # URLs for admins, null for other users.
    file: str | None
    size_bytes: int | None
    context_size: int | None
    slots: int | None
    # Why it failed to load: redacted for admins, a fixed sentence for other users.
    error: str | None
    capabilities: ModelCapabilities | None  # while loaded
    # "settings" (LLM_MODELS, fixed) or "catalog" (added at run time, deletable).
    origin: str = "settings"
    # Downloading or loading: how far (0 to 1, null when not known); downloading: bytes.
    progress: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None


Alias = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class AddModelRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /llm/models: exactly one of path (under MODELS_DIR), url (a GGUF to download,
    sha256 optional) and remote (an OpenAI-compatible server, `http://host:port/v1#model`,
    api_key optional); load options optional."""

    alias: Alias
    path: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    url: Annotated[str, Meta(pattern=r"^https?://", max_length=2048)] | None = None
    sha256: Annotated[str, Meta(pattern=r"^[0-9A-Fa-f]{64}$")] | None = None
    remote: Annotated[str, Meta(pattern=r"^https?://", max_length=2048)] | None = None
    api_key: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    context_size: Annotated[int, Meta(ge=256, le=131072)] | None = None
    slots: Annotated[int, Meta(ge=1, le=64)] | None = None
    gpu_layers: Annotated[int, Meta(ge=-1, le=100000)] | None = None
    pooling: Literal["gguf", "mean", "cls", "last", "none"] | None = None


class ModelList(msgspec.Struct):
    default: str
    models: list[ModelInfo]


class ValidateRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelName | None = None
    prompt: Annotated[str, Meta(min_length=1, max_length=2000)] = (
        "Write one sentence about the sea."
    )
    max_tokens: Annotated[int, Meta(ge=1, le=256)] = 32


class ValidateReport(ModelInfo, kw_only=True):
    available: bool
    sample: str | None = None
    completion_tokens: int | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    seconds: float | None = None
