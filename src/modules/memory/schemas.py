"""Bodies of the memory routes."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from modules.memory.service import MemoryHit


class SearchHit(msgspec.Struct):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    conversation_title: str
    role: str
    snippet: str  # the message's text, whitespace collapsed, cut at 300 characters
    score: float  # cosine similarity, -1..1
    created_at: datetime

    @classmethod
    def of(cls, hit: MemoryHit) -> SearchHit:
        return cls(
            message_id=hit.message_id,
            conversation_id=hit.conversation_id,
            conversation_title=hit.conversation_title,
            role=hit.role,
            snippet=hit.snippet,
            score=hit.score,
            created_at=hit.created_at,
        )


class SearchPage(msgspec.Struct):
    query: str
    model: str
    items: list[SearchHit]
