"""From a validated request to model events: sanitize, build the prompt, queue, collect."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from modules.config import Settings
from modules.llm.chat import ChatMessage, ChatPromptBuilder
from modules.llm.engine import (
    EngineUnavailableError,
    Failed,
    Finished,
    GenerationHandle,
    LLMEngine,
    SamplingParams,
    TokenDelta,
    common_prefix,
)
from modules.llm.model import ModelClosedError
from modules.llm.schemas import (
    GenerateRequest,
    GenerationSettings,
    MessageSanitization,
    SanitizationReport,
    Timings,
)
from modules.sanitizer import SanitizationError, Sanitizer


class InvalidGenerationRequest(ValueError):
    """A request that is well-formed but cannot be served; `field` names the culprit."""

    def __init__(self, detail: str, field: str | None = None, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status_code = status_code


class PromptTooLongError(ValueError):
    def __init__(self, prompt_tokens: int, context_size: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens long; the model's context holds "
            f"{context_size} and needs room for at least one generated token"
        )
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


@dataclass(frozen=True, slots=True)
class PreparedGeneration:
    messages: list[ChatMessage]  # everything the model reads, in order
    new_messages: list[ChatMessage]  # this request's own messages, sanitized
    system: str | None
    prompt_tokens: list[int]
    params: SamplingParams
    sanitization: SanitizationReport
    history_turns_dropped: int = 0
    shared_prefix: int = 0  # leading tokens that are the same for every user


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    finished: Finished


def timings_of(finished: Finished) -> Timings:
    rate = (
        finished.completion_tokens / finished.generation_seconds
        if finished.generation_seconds > 0
        else 0.0
    )
    return Timings(
        queue_seconds=round(finished.queue_seconds, 4),
        prompt_seconds=round(finished.prompt_seconds, 4),
        generation_seconds=round(finished.generation_seconds, 4),
        time_to_first_token=round(finished.time_to_first_token, 4),
        tokens_per_second=round(rate, 2),
    )


class GenerationService:
    """Shared by all requests; holds no per-request state."""

    def __init__(
        self,
        settings: Settings,
        engine: LLMEngine,
        sanitizer: Sanitizer,
        prompt_builder: ChatPromptBuilder,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sanitizer = sanitizer
        self.prompt_builder = prompt_builder
        self._public_prefix_tokens: list[int] | None = None

    @property
    def model_name(self) -> str:
        return self.engine.model.alias

    def sampling_params(self, requested: GenerationSettings) -> SamplingParams:
        s = self.settings
        if requested.max_tokens is not None and requested.max_tokens > s.llm_max_tokens:
            raise InvalidGenerationRequest(
                f"settings.max_tokens is {requested.max_tokens}; this server allows at most "
                f"{s.llm_max_tokens} (LLM_MAX_TOKENS)",
                field="settings.max_tokens",
                status_code=400,
            )
        if requested.temperature is not None and requested.temperature > s.llm_max_temperature:
            raise InvalidGenerationRequest(
                f"settings.temperature is {requested.temperature}; this server allows at most "
                f"{s.llm_max_temperature} (LLM_MAX_TEMPERATURE)",
                field="settings.temperature",
                status_code=400,
            )
        return SamplingParams(
            temperature=(
                s.llm_default_temperature
                if requested.temperature is None
                else requested.temperature
            ),
            max_tokens=requested.max_tokens or s.llm_default_max_tokens,
            top_p=0.95 if requested.top_p is None else requested.top_p,
            top_k=40 if requested.top_k is None else requested.top_k,
            repeat_penalty=1.0 if requested.repeat_penalty is None else requested.repeat_penalty,
            presence_penalty=requested.presence_penalty or 0.0,
            frequency_penalty=requested.frequency_penalty or 0.0,
            stop=tuple(requested.stop or ()),
            seed=requested.seed,
        )

    def sanitize(
        self, raw: list[tuple[str, str, str]]
    ) -> tuple[list[ChatMessage], SanitizationReport]:
        """`raw` holds (role, content, field name) triples; returns clean messages + report."""
        if len(raw) > self.settings.sanitizer_max_messages:
            raise InvalidGenerationRequest(
                f"{len(raw)} messages; the limit is {self.settings.sanitizer_max_messages}",
                field="messages",
            )
        messages: list[ChatMessage] = []
        per_message: list[MessageSanitization] = []
        all_actions: list[str] = []
        for index, (role, content, field_name) in enumerate(raw):
            try:
                clean = self.sanitizer.clean(content, field_name=field_name)
            except SanitizationError as exc:
                raise InvalidGenerationRequest(str(exc), field=field_name) from exc
            messages.append(ChatMessage(role=role, content=clean.text))
            if clean.changed:
                per_message.append(
                    MessageSanitization(index=index, role=role, actions=list(clean.actions))
                )
                all_actions += [a for a in clean.actions if a not in all_actions]
        report = SanitizationReport(
            changed=bool(per_message), actions=all_actions, messages=per_message
        )
        return messages, report

    async def prepare(
        self,
        request: GenerateRequest,
        *,
        history: Sequence[ChatMessage] = (),
        stored_system: str | None = None,
    ) -> PreparedGeneration:
        """Validate, sanitize and tokenize a /llm/generate request (plus stored history)."""
        if (request.prompt is None) == (request.messages is None):
            raise InvalidGenerationRequest(
                "exactly one of 'prompt' or 'messages' is required",
                field="prompt",
                status_code=400,
            )
        if request.prompt is not None:
            new = [("user", request.prompt, "prompt")]
        else:
            assert request.messages is not None
            new = [
                (m.role, m.content, f"messages[{i}].content")
                for i, m in enumerate(request.messages)
            ]
        system = request.system or stored_system or self.settings.llm_default_system_prompt
        return await self.prepare_chat(
            new, system=system, history=history, settings=request.settings
        )

    async def prepare_chat(
        self,
        new: list[tuple[str, str, str]],
        *,
        system: str | None,
        history: Sequence[ChatMessage],
        settings: GenerationSettings,
    ) -> PreparedGeneration:
        """`new` holds (role, content, field name) of this request's messages."""
        params = self.sampling_params(settings)
        raw = ([("system", system, "system")] if system else []) + new
        cleaned, report = self.sanitize(raw)
        system_message = cleaned[0] if system else None
        new_messages = cleaned[1:] if system else cleaned
        # Stored history was sanitized when stored; cleaning it again costs little and keeps
        # the promise that everything the model reads went through the sanitizer.
        past = [m for m in (self._clean_quietly(m) for m in history) if m is not None]
        if not self.engine.is_running:
            raise EngineUnavailableError("the model is not loaded")
        n_ctx = self.engine.model.n_ctx
        # A conversation keeps room to answer; a lone prompt only has to fit.
        reserve = min(params.max_tokens, n_ctx // 4) if past else 0
        dropped = 0
        while True:
            messages = ([system_message] if system_message else []) + past + new_messages
            try:
                tokens = await asyncio.to_thread(self.prompt_builder.build, messages)
            except ModelClosedError as exc:
                raise EngineUnavailableError(str(exc)) from exc
            if len(tokens) + reserve <= n_ctx or not past:
                break
            # Drop the oldest turn: through its assistant answer (or everything left).
            cut = next((i + 1 for i, m in enumerate(past) if m.role == "assistant"), len(past))
            past = past[cut:]
            dropped += 1
        if len(tokens) >= n_ctx:
            raise PromptTooLongError(len(tokens), n_ctx)
        default_system = self.settings.llm_default_system_prompt or None
        shareable = (
            common_prefix(tokens, await self._public_prefix())
            if (system_message.content if system_message else None) == default_system
            else 0
        )
        return PreparedGeneration(
            messages=messages,
            new_messages=new_messages,
            system=system_message.content if system_message else None,
            prompt_tokens=tokens,
            params=params,
            sanitization=report,
            history_turns_dropped=dropped,
            shared_prefix=shareable,
        )

    async def _public_prefix(self) -> list[int]:
        """Tokens every prompt with the server's default system prompt starts with: the
        template and that system turn, up to where the user's own text begins."""
        if self._public_prefix_tokens is None:
            default = self.settings.llm_default_system_prompt
            probe = [ChatMessage("system", default)] if default else []
            probe.append(ChatMessage("user", "\u2063"))
            self._public_prefix_tokens = await asyncio.to_thread(self.prompt_builder.build, probe)
        return self._public_prefix_tokens

    async def prepare_raw(self, prompt: str, settings: GenerationSettings) -> PreparedGeneration:
        """A plain completion: the sanitized text, no chat template (/v1/completions)."""
        params = self.sampling_params(settings)
        cleaned, report = self.sanitize([("user", prompt, "prompt")])
        if not self.engine.is_running:
            raise EngineUnavailableError("the model is not loaded")
        model = self.engine.model
        try:
            tokens = await asyncio.to_thread(
                model.tokenize, cleaned[0].content, special=False, add_bos=model.add_bos
            )
        except ModelClosedError as exc:
            raise EngineUnavailableError(str(exc)) from exc
        if len(tokens) >= model.n_ctx:
            raise PromptTooLongError(len(tokens), model.n_ctx)
        return PreparedGeneration(
            messages=cleaned,
            new_messages=cleaned,
            system=None,
            prompt_tokens=tokens,
            params=params,
            sanitization=report,
        )

    def _clean_quietly(self, message: ChatMessage) -> ChatMessage | None:
        try:
            return ChatMessage(message.role, self.sanitizer.clean(message.content).text)
        except SanitizationError:
            return None

    def start(self, prepared: PreparedGeneration, owner: str) -> GenerationHandle:
        return self.engine.submit(
            prepared.prompt_tokens,
            prepared.params,
            owner=owner,
            timeout=self.settings.llm_request_timeout_seconds,
            shared_prefix=prepared.shared_prefix,
        )

    async def collect(self, handle: GenerationHandle) -> GenerationResult:
        """Join a whole generation; re-raises the engine's error if it failed."""
        parts: list[str] = []
        # A margin over the engine's own deadline, in case a prompt evaluation overruns it.
        async with asyncio.timeout(self.settings.llm_request_timeout_seconds + 30):
            async for event in handle.events():
                if isinstance(event, TokenDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    return GenerationResult("".join(parts), event)
                elif isinstance(event, Failed):
                    raise event.error
        raise RuntimeError("generation ended without a result")
