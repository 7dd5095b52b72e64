"""Remote models: OpenAI-compatible servers behind an alias, one or a pool of nodes."""

from modules.llm.inference.descriptions import public_url
from modules.llm.inference.remote.backend import RemoteBackend
from modules.llm.inference.remote.breaker import CircuitBreaker
from modules.llm.inference.remote.control_tokens import REMOTE_CONTROL_TOKENS
from modules.llm.inference.remote.node import RemoteNode
from modules.llm.inference.remote.routing import affinity_key, choose, home

__all__ = [
    "REMOTE_CONTROL_TOKENS",
    "CircuitBreaker",
    "RemoteBackend",
    "RemoteNode",
    "affinity_key",
    "choose",
    "home",
    "public_url",
]
