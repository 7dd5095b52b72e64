"""Rate limits and quotas through HTTP: 429 with Retry-After, role overrides, login brute
force. (Two processes sharing one limit through Redis: tests/model/test_processes.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.support import RunningServer, charged_today, fake_app, make_settings, promote

PASSWORD = "limit-pass-123"
TINY = {"prompt": "Hi", "settings": {"max_tokens": 2, "temperature": 0}, "use_cache": False}


@contextmanager
def server(
    tmp_path: Path, fake: dict[str, Any] | None = None, **overrides: Any
) -> Iterator[httpx.Client]:
    """An app whose limiter's clock stands still one second into a minute, so a test's
    requests all fall in one fixed window."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, **overrides), **(fake or {}))
    now = time.time()
    app.state.llm.limiter.clock = lambda: now - now % 60 + 1
    with RunningServer(app) as running, httpx.Client(base_url=running.base_url, timeout=60) as c:
        c.database_url = database_url  # type: ignore[attr-defined]
        c.app = app  # type: ignore[attr-defined]
        yield c


def token_for(client: httpx.Client, email: str | None = None) -> str:
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    client.post("/auth/register", json={"email": email, "password": PASSWORD})
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_requests_per_minute(tmp_path: Path) -> None:
    with server(tmp_path, rate_limit_requests_per_minute=2) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        limited = client.post("/llm/generate", json=TINY, headers=headers)
        assert limited.status_code == 429
        # Until one more fits in the last minute: these two weigh until they age out.
        assert 1 <= int(limited.headers["retry-after"]) <= 120
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


def test_tokens_per_minute_and_role_override(tmp_path: Path) -> None:
    with server(
        tmp_path,
        rate_limit_tokens_per_minute=2,
        rate_limit_role_overrides={"admin": {"tokens_per_minute": 0}},
    ) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        limited = client.post("/llm/generate", json=TINY, headers=headers)
        assert limited.status_code == 429
        assert "2 tokens per minute" in limited.json()["detail"]
        # The override lifts the limit for admins, and only for them.
        admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        token_for(client, admin_email)
        promote(client.database_url, admin_email)  # type: ignore[attr-defined]
        admin = {"Authorization": f"Bearer {token_for(client, admin_email)}"}
        for _ in range(3):
            assert client.post("/llm/generate", json=TINY, headers=admin).status_code == 200
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 429


def test_login_attempts_per_ip_and_per_account(tmp_path: Path) -> None:
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


def test_requests_in_flight_are_capped_per_user(tmp_path: Path) -> None:
    slow = {"token_delay": 0.02, "answer_tokens": 50}
    with server(tmp_path, slow, llm_max_in_flight_per_user=2) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        other = {"Authorization": f"Bearer {token_for(client)}"}
        body = {"prompt": "Go on.", "use_cache": False}
        with ThreadPoolExecutor(3) as pool:
            running = [
                pool.submit(client.post, "/llm/generate", json=body, headers=headers)
                for _ in range(2)
            ]
            time.sleep(0.3)  # both are generating (a second each)
            third = client.post("/llm/generate", json=body, headers=headers)
            # Another user is not held back by the first one's requests.
            assert client.post("/llm/generate", json=body, headers=other).status_code == 200
            assert [f.result().status_code for f in running] == [200, 200]
        assert third.status_code == 429
        assert "requests in flight" in third.json()["detail"]
        # Places come back when requests end.
        assert client.post("/llm/generate", json=body, headers=headers).status_code == 200


def test_registration_is_limited_per_address(tmp_path: Path) -> None:
    with server(tmp_path, registrations_per_hour_per_ip=2) as client:
        for _ in range(2):
            email = f"{uuid.uuid4().hex[:8]}@example.com"
            response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert response.status_code == 201
        refused = client.post(
            "/auth/register", json={"email": "late@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 429
        assert "registrations from this address" in refused.json()["detail"]


def test_password_confirmations_count_like_logins(tmp_path: Path) -> None:
    with server(tmp_path, login_failures_per_account=2) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        change = {"current_password": "wrong-guess-1", "new_password": "new-pass-12345"}
        for _ in range(2):
            assert client.patch("/users/me", json=change, headers=headers).status_code == 422
        locked = client.patch("/users/me", json=change, headers=headers)
        assert locked.status_code == 429
        right = {**change, "current_password": PASSWORD}
        assert client.patch("/users/me", json=right, headers=headers).status_code == 429


def test_a_timed_out_generation_is_charged_what_it_generated(tmp_path: Path) -> None:
    slow = {"token_delay": 0.02, "answer_tokens": 500}
    with server(tmp_path, slow, llm_request_timeout_seconds=0.5) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        body = {"prompt": "Go on.", "use_cache": False}
        answer = client.post("/llm/generate", json=body, headers=headers).json()
        assert answer["finish_reason"] == "timeout"
        me = client.get("/users/me", headers=headers).json()["id"]
        usage = answer["usage"]
        generated = usage["completion_tokens"]
        assert 5 <= generated < 500
        # What it read and what it generated.
        charged = charged_today(client.app, me)  # type: ignore[attr-defined]
        assert charged == usage["prompt_tokens"] + generated


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_usage_shows_the_counters_that_enforce_the_limits(tmp_path: Path, store: str) -> None:
    shared = {"redis_url": "redis://127.0.0.1:6379/0"} if store == "redis" else {}
    with server(
        tmp_path,
        rate_limit_requests_per_minute=5,
        rate_limit_tokens_per_minute=0,  # no limit: null
        rate_limit_tokens_per_day=1000,
        **shared,
    ) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.get("/users/me/usage").status_code == 401
        before = client.get("/users/me/usage", headers=headers)
        assert before.status_code == 200, before.text
        usage = before.json()
        assert usage["requests_per_minute"] == {"used": 0, "limit": 5, "reset_seconds": 59}
        assert usage["tokens_per_minute"]["used"] == 0
        assert usage["tokens_per_minute"]["limit"] is None
        assert usage["tokens_per_day"]["used"] == 0
        assert usage["tokens_per_day"]["limit"] == 1000
        answer = client.post("/llm/generate", json=TINY, headers=headers)
        assert answer.status_code == 200, answer.text
        cost = answer.json()["usage"]["prompt_tokens"] + answer.json()["usage"]["completion_tokens"]
        after = client.get("/users/me/usage", headers=headers).json()
        assert after["requests_per_minute"]["used"] == 1
        assert after["tokens_per_minute"]["used"] == cost
        assert after["tokens_per_day"]["used"] == cost
        # The response's own rate-limit headers agree with it.
        assert int(answer.headers["x-ratelimit-remaining-requests"]) == 5 - 1
        # Another user's counters are their own.
        other = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.get("/users/me/usage", headers=other).json()["tokens_per_day"]["used"] == 0


def test_usage_counts_requests_without_a_request_limit(tmp_path: Path) -> None:
    with server(tmp_path) as client:  # the tests' settings: no limits at all
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        assert client.post("/llm/generate", json=TINY, headers=headers).status_code == 200
        usage = client.get("/users/me/usage", headers=headers).json()
        assert usage["requests_per_minute"]["used"] == 1
        assert usage["requests_per_minute"]["limit"] is None
        assert usage["tokens_per_day"]["used"] > 0
        assert usage["tokens_per_day"]["limit"] is None
