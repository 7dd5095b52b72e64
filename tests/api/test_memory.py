"""Memory: stored messages embedded after their turn, found again by meaning (only one's
own, ranked), and recalled into a turn with `memory: k` within the context budget. On
PostgreSQL and SQLite; the fake embeds bags of words, so shared words mean nearness."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from modules.memory import MemoryIndex, MessageEmbedding, sqlite_can_load_extensions
from modules.memory.service import load_sqlite_vec
from tests.api.conftest import FakeApi
from tests.fakes import EMBEDDING_DIMENSIONS
from tests.support import Api, generate, ok, wait_for

GREEDY = {"temperature": 0, "seed": 5, "max_tokens": 8}


def embedded(api: Api, conversation_id: str) -> int:
    rows = api.sql(
        select(func.count())
        .select_from(MessageEmbedding)
        .where(MessageEmbedding.conversation_id == uuid.UUID(conversation_id))
    )
    return int(rows[0][0])


def say(api: Api, token: str, prompt: str, **extra: Any) -> str:
    """One stored turn, waited for until both its messages are embedded; its conversation."""
    answer = ok(generate(api, token, prompt=prompt, settings=GREEDY, **extra))
    conversation_id: str = answer["conversation_id"]
    assert wait_for(lambda: embedded(api, conversation_id) >= 2), "the turn was not embedded"
    return conversation_id


def search(api: Api, token: str, q: str, limit: int = 10) -> dict[str, Any]:
    with api.client(token) as client:
        return ok(client.get("/conversations/search", params={"q": q, "limit": limit}))


def test_search_finds_ones_own_message_by_meaning_and_ranks_it(api: FakeApi) -> None:
    token = api.user_token()
    pets = say(api, token, "my cat is a fluffy little kitten")
    say(api, token, "interest rates and the stock market fell today")
    found = search(api, token, "kitten cat")
    items = found["items"]
    assert found["model"] == api.registry.default_alias
    assert items[0]["snippet"] == "my cat is a fluffy little kitten"
    assert items[0]["conversation_id"] == pets
    assert items[0]["role"] == "user"
    assert items[0]["conversation_title"] == "my cat is a fluffy little kitten"
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert len(items) == 4  # two turns: two questions, two answers
    # Identical text is the nearest there is.
    exact = search(api, token, "interest rates and the stock market fell today")["items"][0]
    assert exact["snippet"] == "interest rates and the stock market fell today"
    assert exact["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(search(api, token, "kitten", limit=1)["items"]) == 1


def test_search_never_finds_another_users_messages(api: FakeApi) -> None:
    alice, bob = api.user_token(), api.user_token()
    secret = say(api, alice, "alice secret kitten password is hunter2")
    bobs = say(api, bob, "bob likes his kitten")
    for item in search(api, bob, "alice secret kitten password is hunter2", limit=50)["items"]:
        assert item["conversation_id"] == bobs
        assert "hunter2" not in item["snippet"]
    assert {i["conversation_id"] for i in search(api, alice, "kitten")["items"]} == {secret}
    fresh = api.user_token()
    assert search(api, fresh, "kitten")["items"] == []


def test_a_deleted_conversation_is_not_found_again(api: FakeApi) -> None:
    token = api.user_token()
    gone = say(api, token, "ephemeral zebra crossing")
    with api.client(token) as client:
        assert client.delete(f"/conversations/{gone}").status_code == 204
    assert embedded(api, gone) == 0  # the vectors go with their messages
    assert search(api, token, "zebra crossing")["items"] == []


@pytest.mark.parametrize("q", ["", "   ", "<b></b>"])
def test_an_empty_query_is_a_400(api: FakeApi, q: str) -> None:
    with api.client(api.user_token()) as client:
        response = client.get("/conversations/search", params={"q": q})
    assert response.status_code == 400, response.text


def test_search_needs_a_login(api: FakeApi) -> None:
    with api.client() as client:
        assert client.get("/conversations/search", params={"q": "x"}).status_code == 401


def test_memory_recalls_other_conversations_into_the_prompt(api: FakeApi) -> None:
    alice, bob = api.user_token(), api.user_token()
    say(api, alice, "my kitten is named Biscuit")
    say(api, alice, "the quarterly budget review is on friday")
    say(api, bob, "bob kitten is named Pepper")
    current = say(api, alice, "kitten question")
    answer = ok(
        generate(api, alice, prompt="what is my kitten named", memory=2, conversation_id=current)
    )
    assert answer["response"]
    system = api.backend.prompts[-1].messages[0]
    assert system.role == "system"
    assert "Recalled from earlier conversations" in system.content
    assert "(recalled, the user said) my kitten is named Biscuit" in system.content
    assert "Pepper" not in system.content  # never another user's
    assert "kitten question" not in system.content  # not this conversation's own
    lines = [line for line in system.content.splitlines() if line.startswith("- (recalled")]
    assert len(lines) == 2
    # The recall is not stored as the conversation's system prompt.
    with api.client(alice) as client:
        assert client.get(f"/conversations/{current}").json()["system_prompt"] is None


def test_recalled_messages_fit_the_budget_least_similar_dropped_first(api: FakeApi) -> None:
    token = api.user_token()
    purring = " purr" * 150
    for n in range(5):  # each about 150 tokens; the budget (512) holds three at most
        extra = " ".join(f"x{n}y{j}" for j in range(n))  # less similar as n grows
        say(api, token, f"kitten cat {extra}{purring}")
    ok(generate(api, token, prompt="kitten cat purr", memory=5))
    system = api.backend.prompts[-1].messages[0].content
    lines = [line for line in system.splitlines() if line.startswith("- (recalled")]
    assert 1 <= len(lines) < 5
    block = system[system.index("Recalled from") :]
    assert len(block.split()) <= 512  # the fake's tokens are words
    # The most similar are the ones kept, most similar first.
    kept = [len([w for w in line.split() if w.startswith("x")]) for line in lines]
    assert kept == list(range(len(lines)))


def test_memory_over_the_cap_is_a_400(api: FakeApi) -> None:
    response = generate(api, api.user_token(), prompt="hi", memory=9)
    assert response.status_code == 400, response.text
    assert "MEMORY_MAX_RECALL" in response.text


def test_memory_on_openai_chat_completions(api: FakeApi) -> None:
    token = api.user_token()
    say(api, token, "my parrot speaks french")
    with api.client(token) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": api.registry.default_alias,
                "messages": [{"role": "user", "content": "does my parrot talk"}],
                "max_tokens": 4,
                "memory": 1,
            },
        )
    assert response.status_code == 200, response.text
    assert "my parrot speaks french" in api.backend.prompts[-1].messages[0].content


def test_a_failing_embedding_never_fails_the_turn(api: FakeApi) -> None:
    backend = api.backend
    memory = api.app.state.llm.memory
    # An earlier test's turn still embedding would fail on the broken embedder instead.
    assert wait_for(lambda: memory.pending == 0)
    failures = memory.failures

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the embedder is down")

    backend.embed = broken  # type: ignore[method-assign]
    try:
        token = api.user_token()
        answer = ok(generate(api, token, prompt="remember the lighthouse", settings=GREEDY))
        assert wait_for(lambda: memory.failures > failures and memory.pending == 0)
    finally:
        del backend.embed
    with api.client(token) as client:
        detail = client.get(f"/conversations/{answer['conversation_id']}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert embedded(api, answer["conversation_id"]) == 0


# The index itself, on both databases: which method ranks.


def _index_check(database_url: str, index: MemoryIndex, expected_method: str) -> None:
    async def run() -> None:
        engine = create_async_engine(database_url)
        if database_url.startswith("sqlite"):
            from sqlalchemy import event

            event.listen(engine.sync_engine, "connect", lambda c, _: load_sqlite_vec(c))
        try:
            sessions = async_sessionmaker(engine)
            async with sessions() as session:
                assert await index.method(session) == expected_method
                # An owner with no vectors: nothing, whoever else has some.
                query = np.ones(EMBEDDING_DIMENSIONS, dtype=np.float32)
                assert await index.nearest(session, uuid.uuid4(), "m", query, 5) == []
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_the_scan_is_the_path_without_pgvector_or_sqlite_vec(api: FakeApi) -> None:
    """pgvector is absent on these machines (Debian bookworm's repositories lack it) and
    cannot be tested here; PostgreSQL searches by the per-user scan, tested above."""
    is_sqlite = api.database_url.startswith("sqlite")
    auto = "sqlite-vec" if is_sqlite and sqlite_can_load_extensions() else "scan"
    _index_check(api.database_url, MemoryIndex("auto"), auto)
    _index_check(api.database_url, MemoryIndex("scan"), "scan")


def test_sqlite_vec_ranks_like_the_scan(api: FakeApi) -> None:
    if not api.database_url.startswith("sqlite"):
        pytest.skip("sqlite-vec is the SQLite path; PostgreSQL's is tested above")
    if not sqlite_can_load_extensions():
        pytest.skip(
            "SKIPPED LOUDLY: this Python's sqlite3 was built without enable_load_extension, "
            "so sqlite-vec cannot be loaded; the embedded database falls back to the scan"
        )
    token = api.user_token()
    say(api, token, "my cat is a fluffy little kitten")
    say(api, token, "interest rates and the stock market fell today")
    with_vec = search(api, token, "kitten cat")["items"]
    assert with_vec[0]["snippet"] == "my cat is a fluffy little kitten"
