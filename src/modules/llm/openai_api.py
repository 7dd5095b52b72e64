"""OpenAI-compatible API under /v1: chat completions, completions, models.

Bodies are decoded here rather than by Litestar so that every mistake, an unsupported field
included, is answered in OpenAI's error shape that the official clients understand."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import ServerSentEventMessage
from msgspec import Meta

from modules.llm.chat import ChatMessage
from modules.llm.controller import EventStream, watching_disconnect
from modules.llm.engine import Failed, Finished, GenerationHandle, TokenDelta
from modules.llm.registry import ModelNotFoundError, ModelRegistry
from modules.llm.schemas import GenerationSettings
from modules.llm.service import GenerationService, PreparedGeneration
from modules.llm.turns import ConversationTurns, Turn
from modules.ratelimit import RateLimiter
from modules.users.models import User

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
# Accepted with no effect on a single local model.
IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "reasoning_effort"}

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Tokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Stop = str | Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(max_length=4)]


class OpenAIError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.error_type = error_type
        self.headers = headers


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    text: str


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    # Known to OpenAI clients; refused with a clear message below rather than as unknown.
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str


class SamplingFields(msgspec.Struct, kw_only=True):
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
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessageIn], Meta(min_length=1)]
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None
    # Extension: continue a stored conversation.
    conversation_id: uuid.UUID | None = None


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=1)]


def _decode(
    body: bytes, target: type[msgspec.Struct], unsupported: Mapping[str, str]
) -> tuple[Any, dict[str, Any]]:
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise OpenAIError(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(raw, dict):
        raise OpenAIError("The request body must be a JSON object.")
    for field, reason in unsupported.items():
        if raw.get(field) not in (None, False):
            raise OpenAIError(
                f"'{field}' is not supported by this server: {reason}.",
                param=field,
                code="unsupported_parameter",
            )
    known = set(target.__struct_fields__)
    for field in raw:
        if field not in known:
            raise OpenAIError(
                f"Unrecognized request argument supplied: {field}",
                param=field,
                code="unknown_parameter",
            )
    try:
        return msgspec.convert(raw, target), raw
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$.")
        param = where.rstrip("`") or None
        raise OpenAIError(
            f"Invalid value for '{param}': {message}" if param else message,
            param=param,
            code="invalid_value",
        ) from exc


def _check_common(request: SamplingFields) -> None:
    if request.n not in (None, 1):
        raise OpenAIError(
            "Only n=1 is supported: this server generates one choice per request.",
            param="n",
            code="unsupported_value",
        )
    if request.stream_options is not None and not request.stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def _model(registry: ModelRegistry, name: str | None) -> GenerationService:
    try:
        return registry.get(name)
    except ModelNotFoundError as exc:
        raise OpenAIError(
            f"The model '{exc.name}' does not exist. Available: {', '.join(exc.available)}.",
            status=404,
            param="model",
            code="model_not_found",
        ) from exc


def _settings(request: SamplingFields, max_tokens: int | None) -> GenerationSettings:
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    # OpenAI allows any 64-bit seed; llama.cpp takes 32 bits.
    seed = None if request.seed is None else request.seed % 2**32
    return GenerationSettings(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )


def _chat_messages(messages: Sequence[ChatMessageIn]) -> list[tuple[str, str, str]]:
    converted = []
    for index, message in enumerate(messages):
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
        converted.append((role, content, f"messages[{index}].content"))
    return converted


def _usage(finished: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": finished.cached_tokens},
    }


def _finish_reason(finished: Finished) -> str:
    # OpenAI knows "stop" and "length"; a deadline cut is closest to "length".
    return "stop" if finished.finish_reason == "stop" else "length"


def _data(payload: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=msgspec.json.encode(payload).decode())


def openai_error_body(error: OpenAIError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


async def _openai_events(
    handle: GenerationHandle,
    chunk: Callable[[dict[str, Any], str | None], dict[str, Any]],
    include_usage: bool,
    on_finished: Callable[[str, Finished], Any] | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    parts: list[str] = []
    async for event in handle.events():
        if isinstance(event, TokenDelta):
            parts.append(event.text)
            yield _data(chunk({"content": event.text}, None))
        elif isinstance(event, Finished):
            if on_finished is not None and event.finish_reason != "cancelled":
                await on_finished("".join(parts), event)
            yield _data(chunk({}, _finish_reason(event)))
            if include_usage:
                final = chunk({}, None)
                final["choices"] = []
                final["usage"] = _usage(event)
                yield _data(final)
        elif isinstance(event, Failed):
            error = OpenAIError(
                f"generation failed: {event.error}", status=500, error_type="server_error"
            )
            yield _data(openai_error_body(error))
            return
    yield ServerSentEventMessage(data="[DONE]")


def _after_stream(
    turn: Turn, turns: ConversationTurns, limiter: RateLimiter, user_id: str
) -> Callable[[str, Finished], Awaitable[None]]:
    async def finish(text: str, finished: Finished) -> None:
        await limiter.add_tokens(user_id, finished.completion_tokens)
        await turns.store_detached(turn, text, finished)

    return finish


class OpenAIController(Controller):
    path = "/v1"
    tags = ("openai",)

    @get("/models")
    async def models(self, model_registry: NamedDependency[ModelRegistry]) -> dict[str, Any]:
        """The loaded models, as OpenAI's model list."""
        return {
            "object": "list",
            "data": [
                {
                    "id": entry.alias,
                    "object": "model",
                    "created": int(entry.path.stat().st_mtime),
                    "owned_by": "llm-service",
                }
                for entry in model_registry.entries.values()
                if entry.state == "loaded"
            ],
        }

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        self,
        request: Request[User, Any, Any],
        model_registry: NamedDependency[ModelRegistry],
        conversation_turns: NamedDependency[ConversationTurns],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[Any] | EventStream:
        """OpenAI chat completions, whole or streamed; `conversation_id` (an extension)
        continues a stored conversation."""
        user_id = str(request.user.id)
        await rate_limiter.check_request(user_id, request.user.role)
        body, _ = _decode(await request.body(), ChatCompletionRequest, UNSUPPORTED_CHAT_FIELDS)
        assert isinstance(body, ChatCompletionRequest)
        _check_common(body)
        generation_service = _model(model_registry, body.model)
        conversation_turns.generation = generation_service
        if body.response_format is not None and body.response_format.type != "text":
            raise OpenAIError(
                "Only response_format type 'text' is supported.",
                param="response_format",
                code="unsupported_value",
            )
        settings = _settings(body, body.max_completion_tokens or body.max_tokens)
        new = _chat_messages(body.messages)
        system_parts = [content for role, content, _ in new if role == "system"]
        rest = [m for m in new if m[0] != "system"]
        if not rest:
            raise OpenAIError("At least one non-system message is required.", param="messages")

        async def prepare(
            history: Sequence[ChatMessage], stored_system: str | None
        ) -> PreparedGeneration:
            system = (
                "\n\n".join(system_parts)
                or stored_system
                or (generation_service.settings.llm_default_system_prompt or None)
            )
            return await generation_service.prepare_chat(
                rest, system=system, history=history, settings=settings
            )

        turn = await conversation_turns.begin(body.conversation_id, prepare)
        assert turn.handle is not None
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = generation_service.model_name
        headers = {"X-Conversation-Id": str(turn.conversation_id)}

        if body.stream:
            first = True

            def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                nonlocal first
                if first:
                    delta = {"role": "assistant", **delta}
                    first = False
                return {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "conversation_id": str(turn.conversation_id),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventStream(
                _openai_events(
                    turn.handle,
                    chunk,
                    include_usage,
                    _after_stream(turn, conversation_turns, rate_limiter, user_id),
                ),
                headers=headers,
            )

        async with watching_disconnect(request, turn.handle):
            result = await generation_service.collect(turn.handle)
        await rate_limiter.add_tokens(user_id, result.finished.completion_tokens)
        if result.finished.finish_reason != "cancelled":
            await conversation_turns.store(turn, result.text, result.finished)
        return Response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "conversation_id": str(turn.conversation_id),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": _finish_reason(result.finished),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(result.finished),
                "system_fingerprint": None,
            },
            headers=headers,
        )

    @post("/completions", status_code=200)
    async def completions(
        self,
        request: Request[User, Any, Any],
        model_registry: NamedDependency[ModelRegistry],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[Any] | EventStream:
        """OpenAI text completions: the prompt continued as is, without a chat template."""
        user_id = str(request.user.id)
        await rate_limiter.check_request(user_id, request.user.role)
        body, _ = _decode(await request.body(), CompletionRequest, UNSUPPORTED_COMPLETION_FIELDS)
        assert isinstance(body, CompletionRequest)
        _check_common(body)
        generation_service = _model(model_registry, body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        settings = _settings(body, body.max_tokens)
        prepared = await generation_service.prepare_raw(prompt, settings)
        handle = generation_service.start(prepared, owner=str(request.user.id))
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = generation_service.model_name

        if body.stream:

            def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                return {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "text": delta.get("content", ""),
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                }

            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventStream(
                _openai_events(
                    handle,
                    chunk,
                    include_usage,
                    lambda _, finished: rate_limiter.add_tokens(
                        user_id, finished.completion_tokens
                    ),
                )
            )

        async with watching_disconnect(request, handle):
            result = await generation_service.collect(handle)
        await rate_limiter.add_tokens(user_id, result.finished.completion_tokens)
        return Response(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": result.text,
                        "finish_reason": _finish_reason(result.finished),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(result.finished),
            }
        )


def openai_exception_handlers(
    to_problem: Mapping[type[Exception], Callable[[Any], ProblemDetailsException]],
) -> dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]]:
    """The app's error mapping, answered in OpenAI's shape on /v1."""

    def respond(error: OpenAIError) -> Response[Any]:
        return Response(openai_error_body(error), status_code=error.status, headers=error.headers)

    def from_problem(problem: ProblemDetailsException) -> OpenAIError:
        status = problem.status_code
        error_type = {
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "server_error" if status >= 500 else "invalid_request_error")
        extra = problem.extra if isinstance(problem.extra, dict) else {}
        errors = extra.get("errors") or [{}]
        param = errors[0].get("key") if isinstance(errors[0], dict) else None
        return OpenAIError(
            problem.detail,
            status=status,
            param=param,
            error_type=error_type,
            headers=dict(problem.headers or {}) or None,
        )

    handlers: dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
        OpenAIError: lambda _, exc: respond(exc),
    }

    def handler_for(
        convert: Callable[[Any], ProblemDetailsException],
    ) -> Callable[[Request[Any, Any, Any], Any], Response[Any]]:
        return lambda _, exc: respond(from_problem(convert(exc)))

    for exc_type, convert in to_problem.items():
        handlers[exc_type] = handler_for(convert)
    handlers.setdefault(
        HTTPException,
        lambda _, exc: respond(OpenAIError(exc.detail, status=exc.status_code)),
    )
    return handlers
