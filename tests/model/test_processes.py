"""The service as an operator runs it: `llm-service serve` processes with the real model.
The request log (one JSON line per request, never secrets or prompt text unless
LOG_PROMPTS=true), and one rate limit shared by two processes through Redis."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.support import cli_server

PASSWORD = "limit-pass-123"
TINY = {"prompt": "Hi", "settings": {"max_tokens": 2, "temperature": 0}, "use_cache": False}


def token_for(client: httpx.Client) -> str:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    registered = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def fresh_minute(margin: float = 10) -> None:
    """Fixed windows: start early in a minute so the requests do not straddle two."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


def serve_and_use(tmp_path: Path, log_prompts: bool) -> tuple[list[dict[str, object]], str, str]:
    log_file = tmp_path / f"server-{log_prompts}.log"
    env = {
        "DATA_DIR": str(tmp_path / f"data-{log_prompts}"),
        "DATABASE_URL": "",
        "LOG_PROMPTS": "true" if log_prompts else "false",
    }
    password = f"Secret-{uuid.uuid4().hex[:10]}"
    prompt = f"The hidden word is {uuid.uuid4().hex[:10]}"
    with (
        open(log_file, "wb") as output,
        cli_server(env, output) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        client.post("/auth/register", json={"email": email, "password": password})
        token = client.post("/auth/login", json={"email": email, "password": password}).json()[
            "access_token"
        ]
        answer = client.post(
            "/llm/generate",
            json={"prompt": prompt, "settings": {"max_tokens": 2}},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-test-1"},
        )
        assert answer.status_code == 200
    text = log_file.read_text()
    assert password not in text
    assert token not in text
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines, prompt, text


@pytest.mark.parametrize("log_prompts", [False, True])
def test_one_line_per_request_without_secrets(tmp_path: Path, log_prompts: bool) -> None:
    lines, prompt, text = serve_and_use(tmp_path, log_prompts)
    requests = [line for line in lines if line.get("event") == "request"]
    generate = next(line for line in requests if line.get("request_id") == "log-test-1")
    assert generate["route"] == "/llm/generate"
    assert generate["status"] == 200
    assert generate["user_id"]
    assert isinstance(generate["latency_ms"], float)
    assert generate["tokens"] > 0
    assert generate["cache_hit"] is False
    assert [line["route"] for line in requests].count("/auth/login") == 1
    assert (prompt in text) is log_prompts


def test_two_processes_share_one_limit_through_redis(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    upgrade_to_head(database_url)

    def env(name: str) -> dict[str, str]:
        return {
            "DATA_DIR": str(tmp_path / name),
            "DATABASE_URL": database_url,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "3",
            # Redis outlives this run: earlier runs' registrations from 127.0.0.1 count too.
            "REGISTRATIONS_PER_HOUR_PER_IP": "0",
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
