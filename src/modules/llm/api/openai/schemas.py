"""OpenAI's request and response shapes for /v1, with this service's extension fields
(`conversation_id`, `profile`, `use_cache`), which the openai SDK sends with `extra_body`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modules.llm.api.schemas import Usage
from modules.llm.inference import ResponseFormat, Tool, ToolChoice
from modules.llm.inference.structured import FunctionName

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Tokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# The same bounds for a single stop string as for each one of a list.
StopString = Annotated[str, Meta(min_length=1, max_length=64)]
Stop = StopString | Annotated[list[StopString], Meta(max_length=4)]
ProfileName = Annotated[str, Meta(min_length=1, max_length=100)]

# Fields OpenAI defines that this server does not implement: refused by name, never ignored
# (README: "The OpenAI fields").
UNSUPPORTED_CHAT_FIELDS = {
    "functions": "the legacy functions API is not supported; send tools",
    "function_call": "the legacy functions API is not supported; send tool_choice",
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
UNSUPPORTED_COMPLETION_FIELDS = {
    "echo": "echo is not supported",
    "best_of": "best_of is not supported",
    "suffix": "suffix (insertion) is not supported",
    "logit_bias": "logit_bias is not supported",
}


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    text: str


class FunctionCallIn(msgspec.Struct, forbid_unknown_fields=True):
    name: FunctionName
    arguments: str


class ToolCallIn(msgspec.Struct, forbid_unknown_fields=True):
    """A call an assistant message made earlier, as the client sends it back."""

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    function: FunctionCallIn
    type: Literal["function"] = "function"


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Annotated[str, Meta(max_length=64)] | None = None
    refusal: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class OpenAIRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields OpenAI's chat and text completion bodies share."""

    model: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: Tokens | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    # Accepted with no effect here.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    logit_bias: Any = None
    # Extension: answer from the response cache when the same request was answered before.
    use_cache: bool = True


class ChatCompletionRequest(OpenAIRequest, kw_only=True):
    messages: Annotated[list[ChatMessageIn], Meta(min_length=1)]
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Meta(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: list[Literal["text"]] | None = None
    prediction: Any = None
    web_search_options: Any = None
    # Extensions: continue a stored conversation; apply an admin-managed profile.
    conversation_id: uuid.UUID | None = None
    profile: ProfileName | None = None
    # Extension: recall this many of the user's earlier messages from their other
    # conversations into the prompt (MEMORY_MAX_RECALL at most).
    memory: Annotated[int, Meta(ge=0, le=64)] = 0


class CompletionRequest(OpenAIRequest, kw_only=True):
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=1)]
    # The number of alternatives with each token's log-probability (OpenAI allows 0 to 5).
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    # Honoured on a local model (a grammar); passed through to a remote one.
    response_format: ResponseFormat | None = None
    echo: Any = None
    best_of: Any = None
    suffix: Any = None


class AssistantMessage(msgspec.Struct):
    content: str | None
    role: str = "assistant"
    tool_calls: list[dict[str, Any]] | None = None
    refusal: None = None


class TopLogprobOut(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(msgspec.Struct):
    content: list[TokenLogprobOut] | None
    refusal: None = None


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    conversation_id: uuid.UUID | None
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"
    system_fingerprint: None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct):
    """One `data:` line of a streamed chat completion; the stream ends with `[DONE]`."""

    id: str
    created: int
    model: str
    conversation_id: uuid.UUID | None
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None = None


class TextLogprobs(msgspec.Struct):
    """The legacy completions shape: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class TextChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: TextLogprobs | None = None


class TextCompletion(msgspec.Struct):
    """A text completion, or one `data:` line of a streamed one."""

    id: str
    created: int
    model: str
    choices: list[TextChoice]
    object: str = "text_completion"
    usage: Usage | None = None


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str = "llm-service"
    object: str = "model"
    # Extension: what the model can be asked for ("chat", "embeddings", ...); OpenAI's
    # clients keep unknown fields of a card.
    capabilities: list[str] = msgspec.field(default_factory=list)


class ModelCards(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None
    request_id: str | None = None


class ErrorBody(msgspec.Struct):
    """Every /v1 error, in OpenAI's shape."""

    error: ErrorDetail


# A token id as the client sends it: the model checks it against its vocabulary.
TokenId = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]


class EmbeddingsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenAI's embeddings body. `input`: a text, a list of texts, one token array, or a
    list of token arrays (a list is of one kind; msgspec takes one array type in a union,
    so the kinds are told apart after decoding)."""

    input: str | list[str | TokenId | list[TokenId]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


class EmbeddingItem(msgspec.Struct, kw_only=True):
    object: str = "embedding"
    index: int
    # Floats, or base64 of their little-endian float32 bytes (`encoding_format`).
    embedding: list[float] | str


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
