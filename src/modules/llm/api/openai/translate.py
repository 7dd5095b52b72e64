"""OpenAI request bodies to turn requests, and turn results to OpenAI's numbers."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from modules.llm.api.openai.errors import OpenAIError
from modules.llm.api.openai.schemas import (
    UNSUPPORTED_CHAT_FIELDS,
    UNSUPPORTED_COMPLETION_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIRequest,
)
from modules.llm.inference import Finished, SamplingParams
from modules.llm.turns import InputMessage, TurnRequest


def _refuse_unsupported(body: msgspec.Struct, unsupported: Mapping[str, str]) -> None:
    for name, reason in unsupported.items():
        if getattr(body, name, None) not in (None, False):
            raise OpenAIError(
                f"'{name}' is not supported by this server: {reason}.",
                param=name,
                code="unsupported_parameter",
            )


def _check_common(body: OpenAIRequest) -> None:
    if body.n not in (None, 1):
        raise OpenAIError(
            "Only n=1 is supported: this server generates one choice per request.",
            param="n",
            code="unsupported_value",
        )
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def _settings(body: OpenAIRequest, max_tokens: int | None) -> SamplingParams:
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
    }
    # What the client left out takes SamplingParams' defaults.
    given = {name: value for name, value in sent.items() if value is not None}
    return msgspec.convert(given, SamplingParams)


def chat_turn(body: ChatCompletionRequest) -> TurnRequest:
    _refuse_unsupported(body, UNSUPPORTED_CHAT_FIELDS)
    _check_common(body)
    if body.response_format is not None and body.response_format.type != "text":
        raise OpenAIError(
            "Only response_format type 'text' is supported.",
            param="response_format",
            code="unsupported_value",
        )
    system_parts: list[str] = []
    messages: list[InputMessage] = []
    for index, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant"):
            raise OpenAIError(
                f"Messages with role '{message.role}' are not supported "
                "(supported: system, developer, user, assistant).",
                param=f"messages[{index}].role",
                code="unsupported_value",
            )
        if message.tool_calls:
            raise OpenAIError(
                "Tool calls are not supported by this server.",
                param=f"messages[{index}].tool_calls",
                code="unsupported_value",
            )
        if message.content is None:
            raise OpenAIError("Message content is required.", param=f"messages[{index}].content")
        content = (
            message.content
            if isinstance(message.content, str)
            else "\n".join(part.text for part in message.content)
        )
        if role == "system":
            system_parts.append(content)
        else:
            messages.append(InputMessage(role, content, f"messages[{index}].content"))
    if not messages:
        raise OpenAIError("At least one non-system message is required.", param="messages")
    return TurnRequest(
        messages=messages,
        system="\n\n".join(system_parts) or None,
        settings=_settings(body, body.max_completion_tokens or body.max_tokens),
        model=body.model,
        conversation_id=body.conversation_id,
        use_cache=body.use_cache,
        profile=body.profile,
    )


def completion_turn(body: CompletionRequest) -> TurnRequest:
    _refuse_unsupported(body, UNSUPPORTED_COMPLETION_FIELDS)
    _check_common(body)
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return TurnRequest(
        messages=[InputMessage("user", prompt, "prompt")],
        settings=_settings(body, body.max_tokens),
        model=body.model,
        use_cache=body.use_cache,
        raw=True,
    )


def finish_reason(finished: Finished) -> str:
    # OpenAI knows "stop" and "length"; a deadline or a cancel is closest to "length".
    return "stop" if finished.finish_reason == "stop" else "length"
