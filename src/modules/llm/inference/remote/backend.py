"""A model served by OpenAI-compatible servers (llama.cpp's llama-server, vLLM, Ollama, or
another llm-service): one node, or a pool of nodes behind one alias."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from modules.llm.inference.backend import Prompt
from modules.llm.inference.chat_template import ChatMessage
from modules.llm.inference.descriptions import Capabilities, ModelDescription
from modules.llm.inference.embeddings import (
    EmbeddingInput,
    EmbeddingOptions,
    EmbeddingRequest,
    Embeddings,
    estimate_tokens,
)
from modules.llm.inference.errors import BackendUnavailableError
from modules.llm.inference.remote.control_tokens import REMOTE_CONTROL_TOKENS
from modules.llm.inference.remote.embeddings import remote_embeddings
from modules.llm.inference.remote.generation import RemoteGeneration
from modules.llm.inference.remote.node import RemoteNode, resolve_model
from modules.llm.inference.remote.routing import affinity_key, choose
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.stats import GenerationStats, Load

# Passed through: the server decides, and what it cannot do it refuses itself. Embeddings
# are not known before a server is asked, so they count as there.
REMOTE_CAPABILITIES = Capabilities(
    chat=True,
    completion=True,
    embeddings=True,
    grammar=True,  # as `response_format: json_schema`
    tools=True,
    logprobs=True,
    n=True,
)


class RemoteBackend:
    """Prompts are sent as messages: each server applies its own chat template, so token
    counts here are estimates until the server reports usage."""

    unavailable_after_start = True  # a server refuses (or is found down) after the fact
    passthrough = True
    capabilities = REMOTE_CAPABILITIES

    def __init__(self, alias: str, nodes: Sequence[RemoteNode], *, context_size: int) -> None:
        if not nodes:
            raise ValueError("a remote model needs at least one server")
        self.alias = alias
        self.nodes = list(nodes)
        self.stats = GenerationStats()
        self._context_size = context_size

    @classmethod
    def connect(
        cls,
        alias: str,
        urls: str,
        api_key: str | None,
        *,
        context_size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> RemoteBackend:
        """Blocking. `urls` is `URL[#model]|URL[#model]|...`; a URL without `#model` serves
        the first model its server lists (asked once, here). `api_key` is one key for
        every server, or `key1|key2|...`, one per server in order."""
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        servers = urls.split("|")
        keys = api_key.split("|") if api_key and "|" in api_key else [api_key] * len(servers)
        if len(keys) != len(servers):
            raise ValueError(f"{alias}: give one API key, or one per server ({len(servers)})")
        nodes = []
        for url, key in zip(servers, keys, strict=True):
            base_url, _, model = url.strip().partition("#")
            model = model or resolve_model(base_url, key, timeout=connect_timeout + 5)
            nodes.append(RemoteNode(base_url, model, key or None, timeout))
        return cls(alias, nodes, context_size=context_size)

    @property
    def context_size(self) -> int:
        return self._context_size

    @property
    def control_tokens(self) -> tuple[str, ...]:
        # A remote model's vocabulary cannot be read: every common family's are removed.
        return REMOTE_CONTROL_TOKENS

    @property
    def is_running(self) -> bool:
        return any(node.healthy for node in self.nodes)

    @property
    def tool_syntax(self) -> None:
        return None  # the server gets the tools as they were sent

    async def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> Prompt:
        return Prompt(tuple(messages), (), estimated_tokens=_estimate(messages))

    async def text_prompt(self, text: str) -> Prompt:
        messages = (ChatMessage("user", text),)
        return Prompt(messages, (), raw=True, estimated_tokens=_estimate(messages))

    def message_tokens(self, message: ChatMessage) -> int:
        """An estimate, as `chat_prompt` makes: the server's template is not known here."""
        return _estimate((message,))

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, owner: str, timeout: float
    ) -> RemoteGeneration:
        key = affinity_key(prompt.messages)
        node = choose(self.nodes, key)
        if node is None:
            self.stats.rejected += 1
            raise BackendUnavailableError(
                f"model {self.alias!r} is unavailable: its server keeps failing"
            )
        return RemoteGeneration(self, node, key, prompt, params, timeout)

    def embedding_request(
        self, inputs: Sequence[EmbeddingInput], options: EmbeddingOptions
    ) -> EmbeddingRequest:
        """Passed through as sent: the server checks the inputs (its own tokens, its own
        context), and the lengths here are estimates until it reports usage."""
        counts = tuple(estimate_tokens(item) for item in inputs)
        return EmbeddingRequest(tuple(inputs), counts, options=options)

    async def embed(self, request: EmbeddingRequest, *, within_seconds: float) -> Embeddings:
        return await remote_embeddings(self, request, within_seconds)

    def load(self) -> Load:
        return Load(
            running=self.is_running,
            slots=0,
            busy_slots=sum(node.in_flight for node in self.nodes),
            queue_depth=0,
            queue_size=0,
        )

    def describe(self) -> ModelDescription:
        return ModelDescription(
            alias=self.alias,
            kind="remote",
            backend="remote",
            context_size=self._context_size,
            slots=0,  # each server schedules its own
            capabilities=REMOTE_CAPABILITIES,
            nodes=tuple(node.describe() for node in self.nodes),
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _estimate(messages: Sequence[ChatMessage]) -> int:
    # About 4 characters a token, plus a few for each message's template.
    return sum(len(m.content) // 4 + 4 for m in messages)
