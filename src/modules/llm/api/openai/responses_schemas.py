"""The Responses API's shapes (`/v1/responses`): the request as the openai SDK and the
OpenAI Agents SDK send it, and the response object they read back."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modules.llm.api.openai.schemas import ProfileName, Temperature, Tokens, TopP
from modules.llm.inference.structured import FunctionName

CallId = Annotated[str, Meta(min_length=1, max_length=64)]
TextLimit = Annotated[str, Meta(max_length=1_000_000)]

# Fields of OpenAI's Responses API that this server does not implement: refused by name,
# never ignored (README: "The OpenAI fields").
UNSUPPORTED_RESPONSE_FIELDS = {
    "background": "background responses are not supported",
    "conversation": "the Conversations API is not served; continue with previous_response_id",
    "prompt": "stored prompt templates are not supported",
    "max_tool_calls": "max_tool_calls is not supported",
    "top_logprobs": "logprobs are not returned by /v1/responses; use /v1/chat/completions",
    "context_management": "context_management is not supported",
}


class ContentPartIn(msgspec.Struct, kw_only=True):
    """A message's content part: text parts are read, other types refused by name (their
    own fields, such as an image's, are not read)."""

    type: str
    text: str | None = None


class MessageItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An input message, or an earlier output message sent back (with its id and status)."""

    role: str
    content: TextLimit | list[ContentPartIn]
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A call an earlier response made, sent back by the client."""

    type: Literal["function_call"]
    call_id: CallId
    name: FunctionName
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A tool's result for a call."""

    type: Literal["function_call_output"]
    call_id: CallId
    output: TextLimit | list[ContentPartIn]
    id: str | None = None
    status: str | None = None


class FunctionToolIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The Responses API's flat function tool."""

    type: Literal["function"]
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class TextConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    input: TextLimit | Annotated[list[dict[str, Any]], Meta(min_length=1, max_length=10_000)]
    model: str | None = None
    instructions: TextLimit | None = None
    previous_response_id: Annotated[str, Meta(max_length=64)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_output_tokens: Tokens | None = None
    text: TextConfig | None = None
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    store: bool = True
    # Accepted with no effect here: the SDKs send some by default (`include: []`), and
    # none of them changes what a model here can answer.
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    # Refused by name (UNSUPPORTED_RESPONSE_FIELDS).
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    max_tool_calls: Any = None
    top_logprobs: Any = None
    context_management: Any = None
    # Extensions, as on /v1/chat/completions: the response cache, a profile.
    use_cache: bool = True
    profile: ProfileName | None = None


class OutputText(msgspec.Struct, kw_only=True):
    text: str
    type: str = "output_text"
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class OutputMessage(msgspec.Struct, kw_only=True, tag_field="type", tag="message"):
    id: str
    content: list[OutputText]
    status: str = "completed"
    role: str = "assistant"


class FunctionCallOut(msgspec.Struct, kw_only=True, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str = "completed"


OutputItem = OutputMessage | FunctionCallOut


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)


class IncompleteDetails(msgspec.Struct):
    reason: str


class ResponseError(msgspec.Struct):
    code: str
    message: str
    request_id: str | None = None


class ResponseObject(msgspec.Struct, kw_only=True):
    """A response, as answered, streamed (`response.completed`) and retrieved. With this
    service's extension `conversation_id`: the stored conversation it continued."""

    id: str
    created_at: int
    model: str
    status: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    instructions: str | None
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None
    previous_response_id: str | None
    tool_choice: Any
    tools: list[dict[str, Any]]
    text: dict[str, Any]
    parallel_tool_calls: bool
    store: bool
    conversation_id: uuid.UUID | None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    truncation: str = "disabled"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    object: str = "response"
    background: bool = False
    reasoning: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"effort": None, "summary": None}
    )
    service_tier: str = "default"
    user: str | None = None
