"""A Responses API request as a turn request: input items as chat messages (function
calls and their outputs as an assistant's tool calls and tool messages), `instructions` as
the system prompt, flat function tools and `text.format` as the chat shapes the turn
service reads."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, TypeVar

import msgspec

from modules.llm.api.openai.errors import OpenAIError, from_validation
from modules.llm.api.openai.responses_schemas import (
    UNSUPPORTED_RESPONSE_FIELDS,
    ContentPartIn,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolIn,
    MessageItem,
    ResponsesRequest,
    TextFormat,
)
from modules.llm.api.openai.translate import check_tool_options, refuse_unsupported
from modules.llm.inference import ResponseFormat, SamplingParams, Tool, ToolCall, ToolChoice
from modules.llm.inference.structured import (
    FunctionSpec,
    JsonSchemaSpec,
    NamedFunction,
    NamedToolChoice,
)
from modules.llm.turns import InputMessage, TurnRequest

S = TypeVar("S", bound=msgspec.Struct)
_NO_LOGPROBS = UNSUPPORTED_RESPONSE_FIELDS["top_logprobs"]
_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")
_REFUSED_INCLUDES = ("message.output_text.logprobs",)


def response_turn(body: ResponsesRequest, conversation_id: uuid.UUID | None) -> TurnRequest:
    """The turn of a request; `conversation_id`: the one `previous_response_id` names."""
    refuse_unsupported(body, UNSUPPORTED_RESPONSE_FIELDS)
    _check(body)
    system_parts = [body.instructions] if body.instructions else []
    messages: list[InputMessage] = []
    if isinstance(body.input, str):
        messages.append(InputMessage("user", body.input, "input"))
    else:
        for index, item in enumerate(body.input):
            _add_item(index, item, system_parts, messages)
    if not messages:
        raise OpenAIError(
            "At least one input item besides system messages is required.", param="input"
        )
    return TurnRequest(
        messages=messages,
        system="\n\n".join(system_parts) or None,
        settings=_settings(body),
        model=body.model,
        conversation_id=conversation_id,
        use_cache=body.use_cache,
        profile=body.profile,
        store=body.store,
    )


def function_tools(body: ResponsesRequest) -> list[FunctionToolIn]:
    """The request's tools: function tools only (hosted tools are refused by type)."""
    tools = []
    for index, tool in enumerate(body.tools or ()):
        kind = tool.get("type")
        if kind != "function":
            raise OpenAIError(
                f"Tools of type '{kind}' are not supported by this server (only 'function').",
                param=f"tools[{index}].type",
                code="unsupported_value",
            )
        tools.append(_convert(tool, FunctionToolIn, f"tools[{index}]"))
    return tools


def _check(body: ResponsesRequest) -> None:
    for name in body.include or ():
        if name in _REFUSED_INCLUDES:
            raise OpenAIError(
                f"include '{name}' is not supported: {_NO_LOGPROBS}.",
                param="include",
                code="unsupported_value",
            )
    if body.text is not None and body.text.verbosity not in (None, "medium"):
        raise OpenAIError(
            "text.verbosity is not supported by this server.",
            param="text.verbosity",
            code="unsupported_parameter",
        )
    check_tool_options(body.tools, body.tool_choice, body.parallel_tool_calls)


def _settings(body: ResponsesRequest) -> SamplingParams:
    tools = tuple(
        Tool(
            function=FunctionSpec(
                name=tool.name,
                description=tool.description,
                parameters=tool.parameters,
                strict=tool.strict,
            )
        )
        for tool in function_tools(body)
    )
    names = [tool.function.name for tool in tools]
    if len(set(names)) != len(names):
        raise OpenAIError("Tool function names must be unique.", param="tools")
    sent: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_output_tokens,
        "response_format": _response_format(body.text.format if body.text else None),
        "tools": tools or None,
        "tool_choice": _tool_choice(body.tool_choice),
        "parallel_tool_calls": body.parallel_tool_calls,
    }
    # What the client left out takes SamplingParams' defaults.
    return SamplingParams(**{name: value for name, value in sent.items() if value is not None})


def _response_format(text_format: TextFormat | None) -> ResponseFormat | None:
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return ResponseFormat(type="json_object")
    if text_format.schema is None:
        raise OpenAIError("A json_schema format needs its 'schema'.", param="text.format.schema")
    spec = JsonSchemaSpec(
        name=text_format.name or "response",
        schema=text_format.schema,
        strict=text_format.strict,
        description=text_format.description,
    )
    return ResponseFormat(type="json_schema", json_schema=spec)


def _tool_choice(choice: str | dict[str, Any] | None) -> ToolChoice | None:
    if choice is None or isinstance(choice, str):
        return choice  # type: ignore[return-value]  # the schema allows only the literals
    name = choice.get("name")
    if choice.get("type") != "function" or not isinstance(name, str):
        raise OpenAIError(
            "Only 'none', 'auto', 'required' or {'type': 'function', 'name': ...} are "
            "supported as tool_choice.",
            param="tool_choice",
            code="unsupported_value",
        )
    return NamedToolChoice(function=_convert({"name": name}, NamedFunction, "tool_choice"))


def _add_item(
    index: int, item: dict[str, Any], system: list[str], messages: list[InputMessage]
) -> None:
    where = f"input[{index}]"
    kind = item.get("type", "message")
    if kind == "message":
        message = _convert(item, MessageItem, where)
        role = _role(message.role, where)
        text = _text(message.content, f"{where}.content")
        if role == "system":
            system.append(text)
        else:
            messages.append(InputMessage(role, text, f"{where}.content"))
    elif kind == "function_call":
        call = _convert(item, FunctionCallItem, where)
        _add_call(messages, ToolCall(id=call.call_id, name=call.name, arguments=call.arguments))
    elif kind == "function_call_output":
        result = _convert(item, FunctionCallOutputItem, where)
        text = _text(result.output, f"{where}.output")
        messages.append(InputMessage("tool", text, f"{where}.output", (), result.call_id))
    else:
        raise OpenAIError(
            f"Input items of type '{kind}' are not supported by this server "
            "(supported: message, function_call, function_call_output).",
            param=f"{where}.type",
            code="unsupported_value",
        )


def _add_call(messages: list[InputMessage], call: ToolCall) -> None:
    """A function call joins the assistant message just before it (the calls of one
    answer are one assistant message, as the chat shape has them)."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        messages[-1] = replace(last, tool_calls=(*last.tool_calls, call))
    else:
        messages.append(InputMessage("assistant", "", f"input[{len(messages)}]", (call,)))


def _role(role: str, where: str) -> str:
    if role not in _ROLES:
        raise OpenAIError(
            f"Messages with role '{role}' are not supported (supported: {', '.join(_ROLES)}).",
            param=f"{where}.role",
            code="unsupported_value",
        )
    return "system" if role == "developer" else role


def _text(content: str | list[ContentPartIn], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise OpenAIError(
                f"Content parts of type '{part.type}' are not supported: this server reads "
                "text only.",
                param=f"{where}[{index}].type",
                code="unsupported_value",
            )
        texts.append(part.text)
    return "\n".join(texts)


def _convert(value: dict[str, Any], kind: type[S], where: str) -> S:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        error = from_validation(message, f"{where}{path.rstrip('`')}")
        if error.code == "unknown_parameter":
            error.param = f"{where}.{error.param}"
        raise error from None
