"""Which node of a model's pool takes a turn.

A conversation's home node is chosen by rendezvous hashing of its opening (system prompt
and first user message): every gateway replica picks the same node with no shared state,
the same node keeps the conversation's prefix cache (llama-server and vLLM both reuse
one), and when a node goes down only its own conversations move. A turn goes to the
least busy node instead when its home is unhealthy or `IMBALANCE` turns busier."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

from modules.llm.inference.chat_template import ChatMessage
from modules.llm.inference.remote.node import RemoteNode

IMBALANCE = 3
OPENING_CHARS = 2048  # enough of the opening to tell conversations apart


def affinity_key(messages: Sequence[ChatMessage]) -> str:
    """The conversation's opening: its system prompt and first user message."""
    system = next((m.content for m in messages if m.role == "system"), "")
    first = next((m.content for m in messages if m.role != "system"), "")
    return f"{system[:OPENING_CHARS]}\x00{first[:OPENING_CHARS]}"


def _weight(key: str, node: RemoteNode) -> bytes:
    return hashlib.blake2b(f"{node.name}\x00{key}".encode(), digest_size=8).digest()


def home(key: str, nodes: Collection[RemoteNode]) -> RemoteNode:
    return max(nodes, key=lambda node: _weight(key, node))


def choose(
    nodes: Sequence[RemoteNode], key: str, exclude: Collection[RemoteNode] = ()
) -> RemoteNode | None:
    """The node for a turn, or None when every node is down (or excluded)."""
    candidates = [n for n in nodes if n.healthy and n not in exclude]
    if not candidates:
        return None
    least = min(candidates, key=lambda n: (n.in_flight, n.turns))
    preferred = home(key, candidates)
    return preferred if preferred.in_flight - least.in_flight < IMBALANCE else least
