"""OpenAI request bodies to turn requests, and turn results to OpenAI's numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from modules.llm.api.openai.errors import OpenAIError
from modules.llm.api.openai.schemas import (
    UNSUPPORTED_CHAT_FIELDS,
    UNSUPPORTED_COMPLETION_FIELDS,
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    OpenAIRequest,
)
from modules.llm.inference import FinishReason, SamplingParams, ToolCall
from modules.llm.turns import InputMessage, TurnRequest


def refuse_unsupported(body: msgspec.Struct, unsupported: Mapping[str, str]) -> None:
    for name, reason in unsupported.items():
        if getattr(body, name, None) not in (None, False):
            raise OpenAIError(
                f"'{name}' is not supported by this server: {reason}.",
                param=name,
                code="unsupported_parameter",
            )


def _check_common(body: OpenAIRequest) -> None:
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def _settings(body: OpenAIRequest, max_tokens: int | None, **more: Any) -> SamplingParams:
    """The request's sampling fields; `more`: fields of its kind (None: left out)."""
    stop = (body.stop,) if isinstance(body.stop, str) else body.stop
    # OpenAI allows any 64-bit seed; llama.cpp takes 32 bits.
    seed = None if body.seed is None else body.seed % 2**32
    sent = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": max_tokens,
        "stop": None if stop is None else tuple(stop),
        "seed": seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "n": body.n,
        **more,
    }
    # What the client left out takes SamplingParams' defaults.
    given = {name: value for name, value in sent.items() if value is not None}
    return SamplingParams(**given)


def chat_turn(body: ChatCompletionRequest) -> TurnRequest:
    refuse_unsupported(body, UNSUPPORTED_CHAT_FIELDS)
    _check_common(body)
    _check_tools(body)
    system_parts: list[str] = []
    messages: list[InputMessage] = []
    for index, message in enumerate(body.messages):
        converted = _message(index, message)
        if converted.role == "system":
            system_parts.append(converted.content)
        else:
            messages.append(converted)
    if not messages:
        raise OpenAIError("At least one non-system message is required.", param="messages")
    settings = _settings(
        body,
        body.max_completion_tokens or body.max_tokens,
        response_format=body.response_format,
        tools=None if body.tools is None else tuple(body.tools),
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs,
    )
    return TurnRequest(
        messages=messages,
        system="\n\n".join(system_parts) or None,
        settings=settings,
        model=body.model,
        conversation_id=body.conversation_id,
        use_cache=body.use_cache,
        profile=body.profile,
        memory=body.memory,
    )


def completion_turn(body: CompletionRequest) -> TurnRequest:
    refuse_unsupported(body, UNSUPPORTED_COMPLETION_FIELDS)
    _check_common(body)
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    settings = _settings(
        body,
        body.max_tokens,
        response_format=body.response_format,
        logprobs=None if body.logprobs is None else True,
        top_logprobs=body.logprobs,
    )
    return TurnRequest(
        messages=[InputMessage("user", prompt, "prompt")],
        settings=settings,
        model=body.model,
        use_cache=body.use_cache,
        raw=True,
    )


def finish_reason(reason: FinishReason) -> str:
    # OpenAI knows "stop", "length" and "tool_calls"; a deadline or a cancel is closest to
    # "length".
    return reason if reason in ("stop", "tool_calls") else "length"


_ROLES = ("system", "developer", "user", "assistant", "tool")


def _message(index: int, message: ChatMessageIn) -> InputMessage:
    where = f"messages[{index}]"
    if message.role not in _ROLES:
        raise OpenAIError(
            f"Messages with role '{message.role}' are not supported "
            f"(supported: {', '.join(_ROLES)}).",
            param=f"{where}.role",
            code="unsupported_value",
        )
    role = "system" if message.role == "developer" else message.role
    if message.tool_calls and role != "assistant":
        raise OpenAIError("Only assistant messages carry tool_calls.", param=f"{where}.tool_calls")
    if role == "tool" and not message.tool_call_id:
        raise OpenAIError("A tool message needs its tool_call_id.", param=f"{where}.tool_call_id")
    if message.content is None and not message.tool_calls:
        raise OpenAIError("Message content is required.", param=f"{where}.content")
    content = message.content or ""
    if not isinstance(content, str):
        content = "\n".join(part.text for part in content)
    calls = tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
        for call in message.tool_calls or ()
    )
    tool_call_id = message.tool_call_id if role == "tool" else None
    return InputMessage(role, content, f"{where}.content", calls, tool_call_id)


def check_tool_options(
    tools: Sequence[object] | None, tool_choice: object, parallel: object
) -> None:
    """`tool_choice` and `parallel_tool_calls` only beside `tools` (chat and Responses)."""
    if tool_choice is not None and not tools:
        raise OpenAIError(
            "'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice"
        )
    if parallel is not None and not tools:
        raise OpenAIError(
            "'parallel_tool_calls' is only allowed when 'tools' are specified.",
            param="parallel_tool_calls",
        )


def _check_tools(body: ChatCompletionRequest) -> None:
    check_tool_options(body.tools, body.tool_choice, body.parallel_tool_calls)
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError("'top_logprobs' needs 'logprobs' set to true.", param="top_logprobs")
    names = [tool.function.name for tool in body.tools or ()]
    if len(set(names)) != len(names):
        raise OpenAIError("Tool function names must be unique.", param="tools")
