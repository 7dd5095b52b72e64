"""Rate limits and quotas: 429 with Retry-After, login brute force, and one limit shared
by two app processes through Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.migrations import upgrade_to_head
from tests.support import RunningServer, cli_server, fake_app, make_settings

PASSWORD = "limit-pass-123"
TINY = {"prompt": "Hi", "settings": {"max_tokens": 2, "temperature": 0}, "use_cache": False}


def fresh_minute(margin: float = 20) -> None:
    """Fixed windows: start a test early in a minute so it does not straddle two."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


@contextmanager
def server(tmp_path: Path, **overrides: Any) -> Iterator[httpx.Client]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, **overrides))
    with RunningServer(app) as running, httpx.Client(base_url=running.base_url, timeout=60) as c:
        yield c


def token_for(client: httpx.Client, email: str | None = None) -> str:
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    client.post("/auth/register", json={"email": email, "password": PASSWORD})
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_requests_per_minute(tmp_path: Path) -> None:
    fresh_minute()
    with server(tmp_path, rate_limit_requests_per_minute=2) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        limited = client.post("/llm/generate", json=TINY, headers=headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        body = limited.json()
        assert body["limit"] == 2
        assert "2 requests per minute" in body["detail"]
        # OpenAI routes count too, and answer in OpenAI's shape.
        openai = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            headers=headers,
        )
        assert openai.status_code == 429
        assert openai.json()["error"]["type"] == "rate_limit_error"
        # Another user has their own budget.
        other = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=other).status_code == 200


def test_completion_tokens_per_minute_and_role_override(tmp_path: Path) -> None:
    fresh_minute()
    with server(
        tmp_path,
        rate_limit_tokens_per_minute=2,
        rate_limit_role_overrides={"admin": {"tokens_per_minute": 0}},
    ) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        limited = client.post("/llm/generate", json=TINY, headers=headers)
        assert limited.status_code == 429
        assert "completion tokens per minute" in limited.json()["detail"]


def test_login_attempts_per_ip_and_per_account(tmp_path: Path) -> None:
    fresh_minute()
    with server(
        tmp_path, login_attempts_per_minute_per_ip=6, login_failures_per_account=2
    ) as client:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        client.post("/auth/register", json={"email": email, "password": PASSWORD})
        for _ in range(2):
            wrong = client.post("/auth/login", json={"email": email, "password": "wrong-pass-1"})
            assert wrong.status_code == 401
        locked = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429
        assert "failed logins for this account" in locked.json()["detail"]
        statuses = [
            client.post(
                "/auth/login", json={"email": "x@example.com", "password": "whatever-1"}
            ).status_code
            for _ in range(4)
        ]
        assert statuses[-1] == 429  # the 7th attempt from this address within the minute


def test_two_processes_share_one_limit_through_redis(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    upgrade_to_head(database_url)

    def env(name: str) -> dict[str, str]:
        return {
            "DATA_DIR": str(tmp_path / name),
            "DATABASE_URL": database_url,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "3",
        }

    with cli_server(env("a")) as first_url, cli_server(env("b")) as second_url:
        fresh_minute()
        with httpx.Client(base_url=first_url, timeout=60) as first:
            token = token_for(first)
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [
            httpx.post(f"{url}/llm/generate", json=TINY, headers=headers, timeout=60).status_code
            for url in (first_url, second_url, first_url, second_url)
        ]
    assert statuses == [200, 200, 200, 429]
