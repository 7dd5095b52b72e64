"""A fake inference backend for the fast test tier: deterministic tokens, real queueing,
cancellation and deadlines, no model. It implements the same Backend protocol as the
llama.cpp engine, so everything above the inference layer runs for real."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np

from modules.llm.inference import (
    BackendUnavailableError,
    Capabilities,
    ChatMessage,
    Event,
    Failed,
    Finished,
    FinishReason,
    GenerationStats,
    Load,
    ModelDescription,
    ModelSpec,
    Prompt,
    QueueFullError,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    UnsupportedRequestError,
)
from modules.llm.inference.chat_template import ChatPromptBuilder
from modules.llm.inference.embeddings import (
    EmbeddingInput,
    EmbeddingOptions,
    EmbeddingRequest,
    Embeddings,
    Vector,
    normalized,
)
from modules.llm.inference.events import drain
from modules.llm.inference.sequences import find_stop
from modules.llm.inference.structured import chosen_function
from modules.llm.inference.tool_format import ToolSyntax

CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
# The fake's embeddings: this many dimensions; token ids below FAKE_VOCAB.
EMBEDDING_DIMENSIONS = 16
FAKE_VOCAB = 1 << 24
WORDS = "the sea is calm and blue under a bright sky with gulls far out over waves".split()


def fake_tokenize(text: str, special: bool) -> list[int]:
    """One token per whitespace-separated word (special pieces count too)."""
    return [int(hashlib.sha256(word.encode()).hexdigest()[:6], 16) for word in text.split()]


def fake_vector(tokens: Sequence[int]) -> Vector:
    """A unit vector of EMBEDDING_DIMENSIONS: the sum of one fixed random vector per
    distinct token (a bag of words), so texts that share words are near each other and the
    same text always gives the same vector."""
    total = np.zeros(EMBEDDING_DIMENSIONS)
    for token in set(tokens):
        total += np.random.default_rng(token).standard_normal(EMBEDDING_DIMENSIONS)
    return normalized(total)


class FakeGeneration:
    def __init__(
        self, backend: FakeBackend, prompt: Prompt, params: SamplingParams, deadline: float
    ):
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.deadline = deadline
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        self.cancelled.set()

    def events(self) -> AsyncIterator[Event]:
        return drain(self.queue, self.cancel)

    def _word(self, index: int, choice: int = 0) -> str:
        """Deterministic for temperature 0 and for a seed; random otherwise. A backend with
        a `script` says its words in order instead."""
        if self.backend.script:
            return self.backend.script[index % len(self.backend.script)]
        params = self.params
        seed: object = "greedy" if params.temperature == 0 else params.seed
        if seed is None:
            seed = time.monotonic_ns()
        material = f"{self.prompt.tokens}|{seed}|{choice}|{index}".encode()
        return WORDS[int(hashlib.sha256(material).hexdigest(), 16) % len(WORDS)]

    async def _run(self) -> None:
        backend = self.backend
        submitted = time.monotonic()
        async with backend.slots:
            backend.waiting -= 1
            backend.busy += 1
            try:
                await self._generate(submitted)
            finally:
                backend.busy -= 1

    async def _generate(self, submitted: float) -> None:
        backend, params = self.backend, self.params
        if self.cancelled.is_set():
            backend.stats.cancelled += 1
            self.queue.put_nowait(Finished("cancelled", self.prompt.token_count, 0))
            return
        started = time.monotonic()
        first: float | None = None
        reasons: list[FinishReason] = []
        total = 0
        for choice in range(params.n):
            outcome = await self._choice(choice)
            if outcome is None:
                return  # failed
            reason, count, first_at = outcome
            reasons.append(reason)
            total += count
            first = first or first_at
        now = time.monotonic()
        first = first or now
        backend.stats.record(
            reasons[0],
            prompt_tokens=self.prompt.token_count,
            completion_tokens=total,
            submitted=submitted,
            first=first,
            now=now,
        )
        self.queue.put_nowait(
            Finished(
                finish_reason=reasons[0],
                prompt_tokens=self.prompt.token_count,
                completion_tokens=total,
                queue_seconds=started - submitted,
                prompt_seconds=first - started,
                generation_seconds=now - first,
                time_to_first_token=first - submitted,
                choice_reasons=tuple(reasons) if params.n > 1 else (),
            )
        )

    async def _choice(self, choice: int) -> tuple[FinishReason, int, float | None] | None:
        """One choice's words (or its structured answer, in pieces); None: it failed."""
        backend, params = self.backend, self.params
        structured = structured_answer(params)
        text, emitted, count = "", 0, 0
        reason: FinishReason = "stop"
        limit = min(params.max_tokens or 0, backend.answer_tokens)
        if structured is not None:  # a grammar's answer, five characters a token
            pieces = [structured[i : i + 5] for i in range(0, len(structured), 5)]
            limit = len(pieces)
        first: float | None = None
        while True:
            if self.cancelled.is_set():
                reason = "cancelled"
                break
            if time.monotonic() > self.deadline:
                reason = "timeout"
                break
            if count >= (params.max_tokens or 0):
                reason = "length"
                break
            if count >= limit:
                break
            await asyncio.sleep(backend.token_delay)
            if backend.fail_with is not None and count == 1:
                self.queue.put_nowait(Failed(backend.fail_with))
                return None
            first = first or time.monotonic()
            if structured is not None:
                word = pieces[count]
                text += word
            elif backend.pieces:  # exact text: newlines and spaces as they are
                word = backend.pieces[count % len(backend.pieces)]
                text += word
            else:
                word = self._word(count, choice)
                text += ("" if count == 0 else " ") + word
            count += 1
            stop_at = find_stop(text, params.stop, emitted, max(map(len, params.stop), default=0))
            if stop_at is not None:
                text = text[:stop_at]
                break
            self.queue.put_nowait(TokenDelta(text[emitted:], choice, _logprobs(word, params)))
            emitted = len(text)
        if len(text) > emitted:
            self.queue.put_nowait(TokenDelta(text[emitted:], choice))
        return reason, count, first


def _logprobs(word: str, params: SamplingParams) -> tuple[TokenLogprob, ...]:
    """A made-up log-probability per token, and `top_logprobs` worse alternatives."""
    if not params.logprobs:
        return ()
    top = tuple(
        TopLogprob(token=alternative, logprob=-0.25 * (rank + 1), bytes=tuple(alternative.encode()))
        for rank, alternative in enumerate([word, *WORDS][: params.top_logprobs])
    )
    return (TokenLogprob(token=word, logprob=-0.25, bytes=tuple(word.encode()), top=top),)


def fake_prompt_builder(template: str | None) -> ChatPromptBuilder:
    """A chat template (None: ChatML) over the fake tokenizer."""
    return ChatPromptBuilder(
        template, bos_token="", eos_token="<|im_end|>", tokenize=fake_tokenize, bos_id=None
    )


def structured_answer(params: SamplingParams) -> str | None:
    """What a model under the request's grammar would say: a call of the named (or first)
    tool with the least valid arguments, a schema's least instance, or a JSON object. None
    without a grammar: the fake's free words."""
    if params.grammar is None:
        return None
    if params.tools and params.tool_choice != "none":
        named = chosen_function(params.tool_choice)
        function = next(
            (t.function for t in params.tools if named in (None, t.function.name)),
            params.tools[0].function,
        )
        parameters = function.parameters or {"type": "object"}
        call = {"name": function.name, "arguments": example_of(parameters, parameters)}
        if "<tool_call>" in params.grammar:  # the template's own format (Hermes)
            return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return json.dumps({"tool_calls": [call]})
    response_format = params.response_format
    if response_format is not None and response_format.json_schema is not None:
        schema = response_format.json_schema.schema or {"type": "object"}
        return json.dumps(example_of(schema, schema))
    return json.dumps({"answer": "the sea is calm"})


def example_of(schema: Any, root: dict[str, Any]) -> Any:
    """The least instance of a JSON schema (what the fake answers under its grammar)."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example_of({**root.get("$defs", {}), **root.get("definitions", {})}[name], root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example_of(schema[key][0], root)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: example_of(properties[name], root)
            for name in schema.get("required", [])
            if name in properties
        }
    if kind == "array":
        return [example_of(schema.get("items", {}), root)] * schema.get("minItems", 0)
    return {"string": "sea", "integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]


class FakeBackend:
    """`answer_tokens` words per answer (fewer with max_tokens or a stop string), one every
    `token_delay` seconds; `parallel` at once and `queue_size` waiting, like the engine."""

    unavailable_after_start = False
    passthrough = False
    # Tools: the generic tool format, as for a local model.
    capabilities = Capabilities(grammar=True, logprobs=True, n=True, embeddings=True)

    def __init__(
        self,
        alias: str,
        *,
        context_size: int = 2048,
        parallel: int = 4,
        queue_size: int = 4,
        token_delay: float = 0.001,
        answer_tokens: int = 12,
    ) -> None:
        self.alias = alias
        self.stats = GenerationStats()
        self._context_size = context_size
        self.parallel = parallel
        self.queue_size = queue_size
        self.token_delay = token_delay
        self.answer_tokens = answer_tokens
        self.prompts: list[Prompt] = []
        self.params: list[SamplingParams] = []  # what each stream() was asked with
        self.fail_with: Exception | None = None  # set: generations fail after one token
        self.script: list[str] = []  # set: the answer's words, in order (as a model's output)
        # set: the answer's pieces, one a token, joined as they are (Markdown, code, newlines)
        self.pieces: list[str] = []
        self.owners: list[str] = []
        self.embedded: list[EmbeddingRequest] = []  # what each embed() was asked
        self.waiting = 0
        self.busy = 0
        self.closed = False
        self._slots: asyncio.Semaphore | None = None
        self.builder = fake_prompt_builder(None)
        self.template_tools: list[Mapping[str, Any]] = []  # the last prompt's, for a template

    @property
    def slots(self) -> asyncio.Semaphore:
        # Made on first use, on the serving loop (the backend is built in a worker thread).
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.parallel)
        return self._slots

    @property
    def context_size(self) -> int:
        return self._context_size

    @property
    def control_tokens(self) -> tuple[str, ...]:
        return CONTROL_TOKENS

    @property
    def is_running(self) -> bool:
        return not self.closed

    @property
    def tool_syntax(self) -> ToolSyntax | None:
        return self.builder.tool_syntax

    async def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> Prompt:
        self.template_tools = list(tools)
        return Prompt(tuple(messages), tuple(self.builder.build(messages, tools)))

    async def text_prompt(self, text: str) -> Prompt:
        return Prompt((ChatMessage("user", text),), tuple(fake_tokenize(text, False)), raw=True)

    def message_tokens(self, message: ChatMessage) -> int:
        return self.builder.message_tokens(message)

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, owner: str, timeout: float
    ) -> FakeGeneration:
        if self.closed:
            raise BackendUnavailableError(f"model {self.alias!r} is not loaded")
        if self.waiting + self.busy >= self.parallel + self.queue_size:
            self.stats.rejected += 1
            raise QueueFullError(retry_after=1)
        self.waiting += 1
        self.prompts.append(prompt)
        self.params.append(params)
        self.owners.append(owner)
        return FakeGeneration(self, prompt, params, time.monotonic() + timeout)

    def embedding_request(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingOptions
    ) -> EmbeddingRequest:
        """As a local model: fake tokens, each input within the context, token ids within
        the fake vocabulary, no other `dimensions` than its own."""
        if options.dimensions not in (None, EMBEDDING_DIMENSIONS):
            raise UnsupportedRequestError("the fake cannot shorten its vectors", "dimensions")
        tokens = []
        for index, item in enumerate(inputs):
            ids = tuple(fake_tokenize(item, False)) if isinstance(item, str) else item
            if any(not 0 <= t < FAKE_VOCAB for t in ids):
                where = f"input[{index}]"
                raise UnsupportedRequestError(f"{where} is outside the vocabulary", where)
            if not ids or len(ids) > self._context_size:
                raise UnsupportedRequestError(
                    f"input[{index}] is {len(ids)} tokens long; the model embeds at most "
                    f"{self._context_size} tokens an input",
                    f"input[{index}]",
                )
            tokens.append(ids)
        return EmbeddingRequest(tuple(inputs), tuple(map(len, tokens)), tuple(tokens), options)

    async def embed(self, request: EmbeddingRequest, *, within_seconds: float) -> Embeddings:
        """A vector from each input's hash: the same input, the same vector."""
        if self.closed:
            raise BackendUnavailableError(f"model {self.alias!r} is not loaded")
        self.embedded.append(request)
        await asyncio.sleep(self.token_delay)
        return Embeddings(tuple(map(fake_vector, request.tokens)), request.total_tokens)

    def load(self) -> Load:
        return Load(
            running=not self.closed,
            slots=self.parallel,
            busy_slots=self.busy,
            queue_depth=self.waiting,
            queue_size=self.queue_size,
        )

    def describe(self) -> ModelDescription:
        return ModelDescription(
            alias=self.alias,
            kind="local",
            backend="fake",
            context_size=self._context_size,
            slots=self.parallel,
            capabilities=self.capabilities,
        )

    def close(self) -> None:
        self.closed = True


class FakeBackends:
    """A backend factory for create_app that keeps what it made, by alias."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.made: dict[str, FakeBackend] = {}

    def __call__(self, spec: ModelSpec) -> FakeBackend:
        backend = FakeBackend(spec.alias, **self.options)
        self.made[spec.alias] = backend
        return backend
