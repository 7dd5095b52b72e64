"""The request log: one JSON line per request, never secrets or prompt text (unless
LOG_PROMPTS=true). The real CLI serves, and its output is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import JWT_SECRET, free_port


def serve_and_use(tmp_path: Path, log_prompts: bool) -> tuple[list[dict[str, object]], str, str]:
    port = free_port()
    log_file = tmp_path / f"server-{log_prompts}.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / f"data-{log_prompts}"),
        "JWT_SECRET": JWT_SECRET,
        "LOG_PROMPTS": "true" if log_prompts else "false",
        "LLM_PARALLEL": "1",
        "LLM_CONTEXT_SIZE": "512",
    }
    env.pop("DATABASE_URL", None)
    password = f"Secret-{uuid.uuid4().hex[:10]}"
    prompt = f"The hidden word is {uuid.uuid4().hex[:10]}"
    cli = Path(sys.executable).with_name("llm-service")
    with open(log_file, "wb") as output:
        process = subprocess.Popen([str(cli), "serve"], env=env, stdout=output, stderr=output)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                assert process.poll() is None, "the server exited"
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=60) as client:
                email = f"{uuid.uuid4().hex[:8]}@example.com"
                client.post("/auth/register", json={"email": email, "password": password})
                token = client.post(
                    "/auth/login", json={"email": email, "password": password}
                ).json()["access_token"]
                answer = client.post(
                    "/llm/generate",
                    json={"prompt": prompt, "settings": {"max_tokens": 2}},
                    headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-test-1"},
                )
                assert answer.status_code == 200
        finally:
            process.terminate()
            process.wait(20)
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
