"""More turns at once than the database pool has connections: a turn holds no pooled
connection while it runs (authentication ends its read transaction), so none waits for
one until the pool's timeout and fails."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.fakes import FakeBackends
from tests.support import RunningServer, fake_app, make_settings

# Above SQLite's pool (5 + 10 overflow) and PostgreSQL's (10 + 10).
TURNS = 24


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_more_streams_than_pooled_connections_all_answer(
    dialect: str, postgres_url: str, tmp_path: Path
) -> None:
    database_url = (
        postgres_url if dialect == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    )
    upgrade_to_head(database_url)
    # Every turn streams for about half a second, so all of them overlap.
    backends = FakeBackends(parallel=TURNS, queue_size=8, token_delay=0.05, answer_tokens=10)
    app = fake_app(make_settings(database_url, tmp_path, llm_queue_size=8), backends)
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url, timeout=60) as c:
        credentials = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "many-turns-1"}
        c.post("/auth/register", json=credentials)
        token = c.post("/auth/login", json=credentials).json()["access_token"]

        def turn(number: int) -> tuple[int, str]:
            body = {"prompt": f"Turn {number}.", "stream": True, "use_cache": False}
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                headers = {"Authorization": f"Bearer {token}"}
                with client.stream("POST", "/llm/generate", json=body, headers=headers) as r:
                    return r.status_code, r.read().decode()

        with ThreadPoolExecutor(TURNS) as pool:
            answers = list(pool.map(turn, range(TURNS)))
    assert [status for status, _ in answers] == [200] * TURNS
    assert all("event: done" in text for _, text in answers)
