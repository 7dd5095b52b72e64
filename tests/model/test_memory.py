"""Memory search on the bundled SmolLM2 (mean-pooled embeddings): a stored sentence is
found by a paraphrase ahead of an unrelated one, and only by its owner."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from modules.memory import MessageEmbedding
from tests.model.conftest import ModelApi
from tests.support import generate, ok, wait_for

GREEDY = {"temperature": 0, "seed": 1, "max_tokens": 4}


def stored(api: ModelApi, token: str, prompt: str) -> str:
    conversation_id: str = ok(generate(api, token, prompt=prompt, settings=GREEDY))[
        "conversation_id"
    ]

    def embedded() -> bool:
        rows = api.sql(
            select(func.count())
            .select_from(MessageEmbedding)
            .where(MessageEmbedding.conversation_id == uuid.UUID(conversation_id))
        )
        return int(rows[0][0]) >= 2

    assert wait_for(embedded, timeout=120)
    return conversation_id


def test_a_paraphrase_finds_the_stored_sentence_first(api: ModelApi) -> None:
    token, other = api.user_token(), api.user_token()
    cat = stored(api, token, "The cat sits on the mat.")
    stored(api, token, "Quarterly revenue grew by twelve percent.")
    stored(api, other, "A kitten is resting on a rug, said someone else.")
    with api.client(token) as client:
        found = ok(
            client.get("/conversations/search", params={"q": "A kitten is resting on a rug."})
        )
    users = [item for item in found["items"] if item["role"] == "user"]
    assert users[0]["snippet"] == "The cat sits on the mat."
    assert users[0]["conversation_id"] == cat
    assert all("someone else" not in item["snippet"] for item in found["items"])
