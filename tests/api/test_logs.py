"""The request log: one JSON line per request, never secrets or prompt text (unless
LOG_PROMPTS=true). The real CLI serves, and its output is read."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import cli_server


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
