"""OpenAI's request and response shapes for /v1, with this service's extension fields
(`conversation_id`, `profile`, `use_cache`), which the openai SDK sends with `extra_body`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modules.llm.api.schemas import Usage

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Tokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# The same bounds for a single stop string as for each one of a list.
StopString = Annotated[str, Meta(min_length=1, max_length=64)]
Stop = StopString | Annotated[list[StopString], Meta(max_length=4)]
ProfileName = Annotated[str, Meta(min_length=1, max_length=100)]

# Fields OpenAI defines that this server does not implement: refused by name, never ignored.
UNSUPPORTED_CHAT_FIELDS = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
UNSUPPORTED_COMPLETION_FIELDS = {
    "echo": "echo is not supported",
    "best_of": "best_of is not supported",
    "logprobs": "logprobs are not supported",
    "suffix": "suffix (insertion) is not supported",
    "logit_bias": "logit_bias is not supported",
}


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    text: str


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    # Known to OpenAI clients; refused with a clear message rather than as unknown.
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str


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
    n: Annotated[int, Meta(ge=1)] | None = None
    # Accepted with no effect here.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    logprobs: Any = None
    logit_bias: Any = None
    # Extension: answer from the response cache when the same request was answered before.
    use_cache: bool = True


class ChatCompletionRequest(OpenAIRequest, kw_only=True):
    messages: Annotated[list[ChatMessageIn], Meta(min_length=1)]
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    top_logprobs: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    # Extensions: continue a stored conversation; apply an admin-managed profile.
    conversation_id: uuid.UUID | None = None
    profile: ProfileName | None = None


class CompletionRequest(OpenAIRequest, kw_only=True):
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=1)]
    echo: Any = None
    best_of: Any = None
    suffix: Any = None


class AssistantMessage(msgspec.Struct):
    content: str
    role: str = "assistant"


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


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
    delta: dict[str, str]
    finish_reason: str | None


class ChatCompletionChunk(msgspec.Struct):
    """One `data:` line of a streamed chat completion; the stream ends with `[DONE]`."""

    id: str
    created: int
    model: str
    conversation_id: uuid.UUID | None
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None = None


class TextChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


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
