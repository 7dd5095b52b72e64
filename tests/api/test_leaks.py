"""What must not leak: exception text in errors and SSE error events, and /metrics when a
token guards it. Every error names its request instead."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import openai

from app.migrations import upgrade_to_head
from tests.api.conftest import FakeApi
from tests.support import RunningServer, fake_app, make_settings

SECRET = "internal detail /srv/secret.gguf"


def test_errors_name_their_request(api: FakeApi, user_token: str) -> None:
    with api.client(user_token) as client:
        response = client.get(f"/conversations/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["request_id"] == response.headers["x-request-id"]
    with api.client("not-a-token") as client:
        unauthorized = client.get("/users/me")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["request_id"] == unauthorized.headers["x-request-id"]


def test_stream_errors_carry_a_stable_message_not_the_exception(
    api: FakeApi, user_token: str
) -> None:
    api.backend.fail_with = RuntimeError(SECRET)
    try:
        with (
            api.client(user_token) as client,
            client.stream(
                "POST", "/llm/generate", json={"prompt": "Go.", "stream": True, "use_cache": False}
            ) as response,
        ):
            body = response.read().decode()
            request_id = response.headers["x-request-id"]
        assert "event: error" in body
        error = json.loads(body.split("event: error")[1].split("data: ")[1].splitlines()[0])
        assert error == {
            "status": 503,
            "detail": "the generation failed; retry later",
            "request_id": request_id,
        }
        stream = openai.OpenAI(
            base_url=f"{api.base_url}/v1", api_key=user_token, max_retries=0
        ).chat.completions.create(
            model=api.registry.default_alias,
            messages=[{"role": "user", "content": "Go."}],
            stream=True,
            extra_body={"use_cache": False},
        )
        raw = stream.response.read().decode()
    finally:
        api.backend.fail_with = None
    assert SECRET not in body
    assert SECRET not in raw
    assert "the generation failed" in raw


def test_metrics_token(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, metrics_token="scrape-" + "s" * 20))
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/metrics", headers={"Authorization": f"Bearer scrape-{'s' * 20}"})
        assert right.status_code == 200
        assert "llm_model_loaded" in right.text
