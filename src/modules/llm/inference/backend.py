"""The backend protocol: what the turn service needs from any model, local or remote."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modules.llm.inference.answers import AnswerBuilder, Choice
from modules.llm.inference.chat_template import ChatMessage
from modules.llm.inference.descriptions import Capabilities, ModelDescription
from modules.llm.inference.embeddings import (
    EmbeddingInput,
    EmbeddingOptions,
    EmbeddingRequest,
    Embeddings,
)
from modules.llm.inference.events import Failed, Finished, Generation, TokenDelta, ToolCallDelta
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.stats import GenerationStats, Load
from modules.llm.inference.tool_format import ToolSyntax


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a backend will read: the messages and, for a local model, their tokens."""

    messages: tuple[ChatMessage, ...]
    tokens: tuple[int, ...]
    # Leading tokens that are the same for every user (the server's system prompt).
    shared_prefix: int = 0
    # A plain completion: the text as is, no chat template.
    raw: bool = False
    # Where the tokens are not known here (a remote model): an estimate.
    estimated_tokens: int = 0

    @property
    def token_count(self) -> int:
        return len(self.tokens) or self.estimated_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer: `text` is the first choice's; `choices` every choice (with its tool
    calls and logprobs) where the generation was gathered by `AnswerBuilder`."""

    text: str
    finished: Finished
    choices: tuple[Choice, ...] = ()

    @property
    def all_choices(self) -> tuple[Choice, ...]:
        return self.choices or (Choice(0, self.text, self.finished.finish_reason),)


class Backend(Protocol):
    """One model behind one alias. Blocking work never runs on the event loop."""

    alias: str
    stats: GenerationStats
    # True where a model can turn out unavailable after `stream()` accepted the turn (a
    # remote server that refuses it): a fallback then waits for the first event.
    unavailable_after_start: bool
    # True for a remote server: OpenAI's answer fields (`response_format`, `tools`,
    # `logprobs`, `n`) reach it as the client sent them. False: the turn service compiles
    # them for this process's sampler (a grammar, the generic tool format).
    passthrough: bool

    @property
    def context_size(self) -> int: ...

    @property
    def control_tokens(self) -> tuple[str, ...]:
        """Strings that spell special tokens of the model's vocabulary."""
        ...

    @property
    def is_running(self) -> bool: ...

    @property
    def capabilities(self) -> Capabilities:
        """What it can be asked for (`describe().capabilities`, without the rest)."""
        ...

    @property
    def tool_syntax(self) -> ToolSyntax | None:
        """The tool format its chat template writes itself; None: the generic one (or, for
        a remote server, whatever it does with the tools it is sent)."""
        ...

    async def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> Prompt:
        """The messages rendered with the model's chat template and tokenized; `tools`
        (OpenAI's JSON) for a template that renders them (`tool_syntax`)."""
        ...

    async def text_prompt(self, text: str) -> Prompt: ...

    def message_tokens(self, message: ChatMessage) -> int:
        """Blocking (it tokenizes): call it from a worker thread. The tokens this message
        adds to a `chat_prompt` (an estimate where the tokens are not known here). The
        turn service keeps it with the message's cleaned text and fits a history by
        summing, instead of rendering the history again for every turn it drops."""
        ...

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, owner: str, timeout: float
    ) -> Generation:
        """Queue a generation; raises QueueFullError at once when there is no place.
        `owner` scopes cache reuse: one owner's state never serves another."""
        ...

    def embedding_request(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingOptions
    ) -> EmbeddingRequest:
        """Blocking (it tokenizes): call it from a worker thread. The inputs as the model
        reads them, with their lengths in tokens; an input it cannot read (longer than
        its embedding context, a token outside its vocabulary) is an
        UnsupportedRequestError naming `input[i]`. Only where `capabilities.embeddings`."""
        ...

    async def embed(self, request: EmbeddingRequest, *, within_seconds: float) -> Embeddings:
        """One vector per input, in order; QueueFullError at once when there is no place."""
        ...

    def load(self) -> Load: ...

    def describe(self) -> ModelDescription:
        """The model as it is now: what serves it, its limits, its capabilities."""
        ...

    def close(self) -> None:
        """Blocking: stop generating and free the model."""
        ...


async def collect(generation: Generation, within_seconds: float) -> Completion:
    """Join a whole generation; re-raises the backend's error if it failed."""
    answers = AnswerBuilder()
    async with asyncio.timeout(within_seconds):
        async for event in generation.events():
            if isinstance(event, TokenDelta | ToolCallDelta):
                answers.add(event)
            elif isinstance(event, Finished):
                return Completion(answers.text(), event, answers.choices(event))
            elif isinstance(event, Failed):
                raise event.error
    raise RuntimeError("generation ended without a result")
