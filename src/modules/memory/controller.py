"""GET /conversations/search: one's own stored messages nearest in meaning to a query."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from modules.memory.ports import MemorySearch
from modules.memory.schemas import SearchHit, SearchPage


class MemoryController(Controller):
    path = "/conversations"
    tags = ("conversations",)

    @get("/search")
    async def search(
        self,
        memory_search: NamedDependency[MemorySearch],
        q: Annotated[str, QueryParameter(min_length=1, max_length=4000)],
        limit: Annotated[int, QueryParameter(ge=1, le=50)] = 10,
    ) -> SearchPage:
        """One's own messages (questions and answers) nearest in meaning to `q`, most
        similar first, by the memory's embedding model; never another user's. The query is
        sanitized and embedded like a /v1/embeddings input (admitted and charged)."""
        result = await memory_search.search(q, limit)
        return SearchPage(query=q, model=result.model, items=[SearchHit.of(h) for h in result.hits])
