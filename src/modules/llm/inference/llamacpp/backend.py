"""The local backend: a GGUF file loaded in this process, served by the batching engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp

from modules.llm.inference.backend import Prompt
from modules.llm.inference.chat_template import ChatMessage, ChatPromptBuilder
from modules.llm.inference.descriptions import Capabilities, LocalDetails, ModelDescription
from modules.llm.inference.embeddings import (
    EmbeddingInput,
    EmbeddingOptions,
    EmbeddingRequest,
    Embeddings,
)
from modules.llm.inference.errors import (
    BackendUnavailableError,
    PromptTooLongError,
    UnsupportedRequestError,
)
from modules.llm.inference.llamacpp.embeddings import Embedder, EmbedderOptions, input_tokens
from modules.llm.inference.llamacpp.engine import LLMEngine
from modules.llm.inference.llamacpp.jobs import GenerationHandle
from modules.llm.inference.llamacpp.model import LoadedModel, ModelClosedError, ModelOptions
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.sequences import common_prefix
from modules.llm.inference.stats import Load
from modules.llm.inference.tool_format import ToolSyntax

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """How to load and serve a local model (from the service's settings)."""

    model: ModelOptions
    queue_size: int
    prefill_chunk: int
    state_cache_bytes: int
    burst_wait_seconds: float = 0.0
    stream_interval_seconds: float = 0.0
    # Prompts that start with this system turn share its cached state across users.
    default_system_prompt: str = ""
    # Embeddings on a second context (see llamacpp/embeddings.py); None: the model embeds not.
    embeddings: EmbedderOptions | None = None
    # Chat templates that replace a GGUF's own, by alias (LLM_CHAT_TEMPLATES).
    chat_templates: Mapping[str, str] = field(default_factory=dict)


class LlamaCppBackend:
    """One model, one context with `parallel` slots, one engine thread."""

    unavailable_after_start = False  # a full queue is refused by stream() itself
    passthrough = False

    def __init__(
        self,
        model: LoadedModel,
        engine: LLMEngine,
        default_system_prompt: str,
        embedder: Embedder | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.model = model
        self.engine = engine
        self.alias = model.alias
        self.stats = engine.stats
        self.default_system_prompt = default_system_prompt or None
        self.prompt_builder = self.prompt_builder_for(model, chat_template)
        self._public_prefix: list[int] | None = None
        # Read once: the context is freed on close, and a description is asked for after.
        self.capabilities = local_capabilities(model)
        self.embedder = embedder
        if embedder is not None:  # its own context: the engine's has embeddings off
            self.capabilities = replace(self.capabilities, embeddings=True)

    @staticmethod
    def prompt_builder_for(model: LoadedModel, template: str | None = None) -> ChatPromptBuilder:
        """The model's own chat template (or `template`) over its tokenizer."""
        return ChatPromptBuilder(
            template or model.chat_template,
            bos_token=model.bos_text,
            eos_token=model.eos_text,
            tokenize=lambda text, special: model.tokenize(text, special=special),
            bos_id=model.bos_id if model.add_bos else None,
        )

    @classmethod
    def from_file(
        cls,
        alias: str,
        path: Path,
        options: LocalOptions,
        on_progress: Callable[[float], None] | None = None,
    ) -> LlamaCppBackend:
        """Blocking: reads the GGUF (telling `on_progress` how far) and starts the engine
        thread."""
        model = LoadedModel(path, alias, options.model, on_progress)
        engine = LLMEngine(
            model,
            queue_size=options.queue_size,
            prefill_chunk=options.prefill_chunk,
            state_cache_bytes=options.state_cache_bytes,
            gather_seconds=options.burst_wait_seconds,
            stream_interval=options.stream_interval_seconds,
        )
        engine.start()
        embedder = Embedder(model, options.embeddings) if options.embeddings else None
        template = options.chat_templates.get(alias)
        return cls(model, engine, options.default_system_prompt, embedder, template)

    @property
    def context_size(self) -> int:
        return self.model.n_ctx

    @property
    def control_tokens(self) -> tuple[str, ...]:
        return self.model.control_tokens

    @property
    def is_running(self) -> bool:
        return self.engine.is_running

    @property
    def tool_syntax(self) -> ToolSyntax | None:
        return self.prompt_builder.tool_syntax

    async def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> Prompt:
        tokens = await self._off_loop(self.prompt_builder.build, messages, tools)
        system = messages[0].content if messages and messages[0].role == "system" else None
        shared = 0
        if system == self.default_system_prompt:
            shared = common_prefix(tokens, await self._shared_prefix())
        return Prompt(tuple(messages), tuple(tokens), shared_prefix=shared)

    async def text_prompt(self, text: str) -> Prompt:
        model = self.model
        tokens = await self._off_loop(
            lambda: model.tokenize(text, special=False, add_bos=model.add_bos)
        )
        return Prompt((ChatMessage("user", text),), tuple(tokens), raw=True)

    def message_tokens(self, message: ChatMessage) -> int:
        """Blocking: from a worker thread. The message's own tokens in a chat prompt: its
        content tokenized as plain text, plus its role's template tokens (measured once)."""
        if not self.engine.is_running:
            raise BackendUnavailableError(f"model {self.alias!r} is not loaded")
        try:
            return self.prompt_builder.message_tokens(message)
        except ModelClosedError as exc:
            raise BackendUnavailableError(str(exc)) from exc

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, owner: str, timeout: float
    ) -> GenerationHandle:
        """Queue a generation. Refused before it is queued: a prompt the context cannot
        hold, more choices than slots (`n`), a grammar llama.cpp cannot parse (parsed once
        per grammar text, on first use)."""
        if prompt.token_count >= self.context_size:
            raise PromptTooLongError(prompt.token_count, self.context_size)
        slots = self.engine.parallel
        if params.n > slots:
            raise UnsupportedRequestError(
                f"n is {params.n}; this model serves at most {slots} choices at once", field="n"
            )
        if params.grammar:
            self.engine.grammars.check(params.grammar)
        return self.engine.submit(
            list(prompt.tokens),
            params,
            owner=owner,
            timeout=timeout,
            shared_prefix=prompt.shared_prefix,
        )

    def load(self) -> Load:
        engine = self.engine
        return Load(
            running=engine.is_running,
            slots=engine.parallel,
            busy_slots=engine.busy_slots,
            queue_depth=engine.queue_depth,
            queue_size=engine.queue_size,
        )

    def describe(self) -> ModelDescription:
        model = self.model
        return ModelDescription(
            alias=self.alias,
            kind="local",
            backend="llama.cpp",
            context_size=model.n_ctx,
            slots=self.engine.parallel,
            capabilities=self.capabilities,
            local=LocalDetails(
                file=model.path.name,
                size_bytes=model.size_bytes,
                saved_states=self.engine.saved_states,
                gpu_layers=model.gpu_layers,
                layers=model.n_layers,
            ),
            path=model.path,
        )

    def embedding_request(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingOptions
    ) -> EmbeddingRequest:
        """Blocking: from a worker thread. Each input's tokens (see `input_tokens`)."""
        embedder = self._embedder()
        if options.dimensions is not None and options.dimensions != embedder.dimensions:
            raise UnsupportedRequestError(
                f"model {self.alias!r} gives {embedder.dimensions}-dimensional embeddings and "
                "cannot shorten them",
                field="dimensions",
            )
        try:
            tokens = tuple(
                input_tokens(self.model, item, index, embedder.context_size)
                for index, item in enumerate(inputs)
            )
        except ModelClosedError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        counts = tuple(len(t) for t in tokens)
        return EmbeddingRequest(tuple(inputs), counts, tokens, options)

    async def embed(self, request: EmbeddingRequest, *, within_seconds: float) -> Embeddings:
        vectors = await self._embedder().embed(request.tokens, within_seconds)
        return Embeddings(vectors, request.total_tokens)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise UnsupportedRequestError(
                f"model {self.alias!r} does not support embeddings", field="model"
            )
        return self.embedder

    def close(self) -> None:
        if self.embedder is not None:  # its context goes before the model it reads
            self.embedder.close()
        self.engine.stop()

    async def _shared_prefix(self) -> list[int]:
        """Tokens every prompt with the server's default system prompt starts with: the
        template and that system turn, up to where the user's own text begins."""
        if self._public_prefix is None:
            probe = (
                [ChatMessage("system", self.default_system_prompt)]
                if self.default_system_prompt
                else []
            )
            probe.append(ChatMessage("user", "\u2063"))
            self._public_prefix = await self._off_loop(self.prompt_builder.build, probe)
        return self._public_prefix

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        if not self.engine.is_running:
            raise BackendUnavailableError(f"model {self.alias!r} is not loaded")
        try:
            return await asyncio.to_thread(function, *args)
        except ModelClosedError as exc:
            raise BackendUnavailableError(str(exc)) from exc


def local_capabilities(model: LoadedModel) -> Capabilities:
    """What a model in this process can do: chat and completion always; a grammar (llama.cpp's
    grammar sampler), logprobs (from the logits) and `n` choices (one slot each, the prompt
    read once) always; embeddings only from a context made with embeddings on and a pooling
    type. Not `tools`: the turn service gives a local model the generic tool format, which
    a grammar enforces."""
    context = model.context
    pooled = llama_cpp.llama_pooling_type(context.ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE
    return Capabilities(
        chat=True,
        completion=True,
        embeddings=bool(context.params.embeddings) and pooled,
        grammar=True,
        tools=False,
        logprobs=True,
        n=True,
    )
