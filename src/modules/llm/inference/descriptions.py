"""What a backend says about itself: typed records, read by /health, /llm/models, /v1/models
and /metrics through the registry (`ModelRegistry.describe_all`).

The records are plain values (frozen, no methods with side effects). Fields that must never
reach a client are marked private (`path`); the public views are built from the rest, so a
public answer can drop them without knowing where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Capability = Literal["chat", "completion", "embeddings", "grammar", "tools", "logprobs", "n"]
ModelKind = Literal["local", "remote"]
CAPABILITIES: tuple[Capability, ...] = (
    "chat",
    "completion",
    "embeddings",
    "grammar",
    "tools",
    "logprobs",
    "n",
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can be asked for. A request that needs one it lacks is refused by name.

    - chat, completion: chat turns (the model's template) and raw text completions.
    - embeddings: vectors for text (a local model only when loaded with embedding pooling).
    - grammar: constrained sampling (llama.cpp's grammar sampler; a remote server's
      `response_format: json_schema`, passed through).
    - tools: tool calls in the model's own syntax (remote servers: passed through).
    - logprobs: token log-probabilities in the answer.
    - n: several choices for one prompt.
    """

    chat: bool = True
    completion: bool = True
    embeddings: bool = False
    grammar: bool = False
    tools: bool = False
    logprobs: bool = False
    n: bool = False

    def missing(self, *needed: Capability) -> tuple[Capability, ...]:
        """Which of `needed` the model lacks, in the order asked: empty when it has them."""
        return tuple(name for name in needed if not getattr(self, name))

    def names(self) -> tuple[Capability, ...]:
        """The capabilities it has, in declaration order."""
        return tuple(name for name in CAPABILITIES if getattr(self, name))


@dataclass(frozen=True, slots=True)
class NodeDescription:
    """One server of a remote model's pool, as it is now."""

    url: str  # scheme://host:port/path: never credentials, never the `#model` part
    model: str  # the model the server is asked for
    up: bool  # its circuit breaker is closed
    in_flight: int
    turns: int  # generations sent to it: its share of the model's
    latency_seconds: float | None  # its last time to first token; None before the first


@dataclass(frozen=True, slots=True)
class LocalDetails:
    """A GGUF file loaded in this process."""

    file: str  # the file's name
    size_bytes: int
    saved_states: int  # KV states kept for reuse
    gpu_layers: int  # layers offloaded to a GPU...
    layers: int  # ...of how many


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """A loaded model: what serves it, its limits and what it can do.

    `path` is private (a local file's place on disk): public views leave it out."""

    alias: str
    kind: ModelKind
    backend: str  # which implementation: llama.cpp, remote (or a test's fake)
    context_size: int  # tokens per sequence
    slots: int  # sequences generated at once; 0 where the servers decide (remote)
    capabilities: Capabilities
    local: LocalDetails | None = None
    nodes: tuple[NodeDescription, ...] = ()
    path: Path | None = field(default=None, repr=False)  # private: kept out of logs too

    @property
    def source(self) -> str:
        """What serves it, safe to show: the file's name, or the servers' public URLs."""
        if self.local is not None:
            return self.local.file
        return "|".join(node.url for node in self.nodes)

    @property
    def latency_seconds(self) -> float | None:
        """The best last time to first token over its servers (remote models)."""
        latencies = [n.latency_seconds for n in self.nodes if n.latency_seconds is not None]
        return min(latencies) if latencies else None

    @property
    def any_node_up(self) -> bool:
        return any(node.up for node in self.nodes)
