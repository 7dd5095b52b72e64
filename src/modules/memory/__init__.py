"""Memory: stored messages embedded, and found again by meaning; always scoped to their owner."""

from litestar import Router

from modules.memory.controller import MemoryController
from modules.memory.models import MessageEmbedding
from modules.memory.ports import MemorySearch, SearchResult
from modules.memory.service import (
    MemoryHit,
    MemoryIndex,
    NewEmbedding,
    load_sqlite_vec,
    sqlite_can_load_extensions,
)


def create_router() -> Router:
    """Its `memory_search` dependency comes from the llm module (it owns the models)."""
    return Router(path="/", route_handlers=[MemoryController])


__all__ = [
    "MemoryHit",
    "MemoryIndex",
    "MemorySearch",
    "MessageEmbedding",
    "NewEmbedding",
    "SearchResult",
    "create_router",
    "load_sqlite_vec",
    "sqlite_can_load_extensions",
]
