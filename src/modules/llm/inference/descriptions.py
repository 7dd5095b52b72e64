"""What a backend says about itself: typed records, read by /health, /llm/models, /v1/models
and /metrics through the registry (`ModelRegistry.describe_all`), and the one redaction of
what is shown or logged about where a model lives (`public_url`, `redact`).

The records are plain values (frozen, no methods with side effects). Fields that must never
reach a client are marked private (`path`); the public views are built from the rest, so a
public answer can drop them without knowing where they came from."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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


# A URL (scheme://...), or an absolute or home-relative local path that starts a word (after
# a space, a quote, a bracket, `=` or `,`). A URL stops at a space, a quote or `<>`; a path
# also at `,;()[]{}`, and goes on past a space when the next word holds a `/` (a directory
# with a space in its name). Linear: each repetition starts with a space.
_PATH_CHARS = r"[^\s'\"<>`,;()\[\]{}]"
_WORD_CHARS = r"[^\s/'\"<>`,;()\[\]{}]"
_SHOWN = re.compile(
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+)"
    rf"|(?P<path>(?<![^\s'\"(\[{{=,])~?/{_PATH_CHARS}*(?: {_WORD_CHARS}+/{_PATH_CHARS}*)*)"
)
_TRAILING = ".,:;!?"  # sentence punctuation after a URL or a path is not part of it


def public_url(url: str) -> str:
    """scheme://host:port/path of a server: never the credentials a URL may carry
    (`user:password@`), its query or its `#model` part."""
    where = urlsplit(url.partition("#")[0])
    host = where.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    try:
        port = f":{where.port}" if where.port else ""
    except ValueError:  # not a number: say nothing more than the host
        port = ""
    return f"{where.scheme}://{host}{port}{where.path.rstrip('/')}"


def redact(text: str, known: Iterable[str] = ()) -> str:
    """`text` (an error's message, a log field) safe to show or log: every URL as
    `public_url` makes it, without credentials, and every absolute local path as its file's
    name. `known` are paths or URLs the caller knows appear in it (a model's configured
    file, whose directory may hold spaces the general rule cannot see): replaced first."""
    for item in sorted(set(known), key=len, reverse=True):
        if item and item in text:
            text = text.replace(item, _public(item))
    return _SHOWN.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    shown = match.group()
    stripped = shown.rstrip(_TRAILING)
    return _public(stripped, is_url=match.group("url") is not None) + shown[len(stripped) :]


def _public(item: str, *, is_url: bool | None = None) -> str:
    if is_url if is_url is not None else "://" in item:
        return public_url(item)
    name = item.rstrip("/").rpartition("/")[2]
    return name or item  # "/" alone (a division, a root) stays
