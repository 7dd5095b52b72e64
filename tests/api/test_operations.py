"""Operations: response cache, metrics, request ids and logs, profiles."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.migrations import upgrade_to_head
from tests.api.conftest import FakeApi
from tests.support import Api, RunningServer, fake_app, generate, make_settings, ok

GREEDY = {"temperature": 0, "max_tokens": 24}


def test_repeated_request_is_a_cache_hit_that_skips_the_model(
    api: FakeApi, user_token: str
) -> None:
    body = {
        "prompt": f"List three colors. ({uuid.uuid4().hex[:6]})",
        "settings": GREEDY,
        "use_cache": True,
    }
    miss = ok(generate(api, user_token, **body))
    generations = len(api.backend.prompts)
    hit = ok(generate(api, user_token, **body))
    assert miss["cache_hit"] is False
    assert hit["cache_hit"] is True
    assert hit["response"] == miss["response"]
    assert hit["usage"]["completion_tokens"] == miss["usage"]["completion_tokens"]
    # Not timed (a loaded machine makes any time flaky): the model was simply not asked.
    assert len(api.backend.prompts) == generations
    # The hit is still a stored turn of its own conversation.
    with api.client(user_token) as client:
        detail = client.get(f"/conversations/{hit['conversation_id']}").json()
    assert [m["content"] for m in detail["messages"]][1] == miss["response"]


def test_cache_is_per_user_and_can_be_bypassed(api: Api, user_token: str) -> None:
    body = {
        "prompt": f"Name a river. ({uuid.uuid4().hex[:6]})",
        "settings": GREEDY,
        "use_cache": True,
    }
    ok(generate(api, user_token, **body))
    assert ok(generate(api, api.user_token(), **body))["cache_hit"] is False
    assert ok(generate(api, user_token, **{**body, "use_cache": False}))["cache_hit"] is False
    changed = {**body, "settings": {**GREEDY, "max_tokens": 23}}
    assert ok(generate(api, user_token, **changed))["cache_hit"] is False


def test_streamed_hit_replays_the_answer(api: Api, user_token: str) -> None:
    body = {"prompt": f"Name a mountain. ({uuid.uuid4().hex[:6]})", "settings": GREEDY}
    whole = ok(generate(api, user_token, **body, use_cache=True))
    # The stream leaves `use_cache` out: the cache is on unless a request turns it off.
    with (
        api.client(user_token) as client,
        client.stream("POST", "/llm/generate", json={**body, "stream": True}) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"cache_hit":true' in lines[0]
    assert whole["response"] in "".join(lines)


def test_cache_clear_is_admin_only(api: Api, user_token: str, admin_token: str) -> None:
    body = {
        "prompt": f"Name a lake. ({uuid.uuid4().hex[:6]})",
        "settings": GREEDY,
        "use_cache": True,
    }
    ok(generate(api, user_token, **body))
    with api.client(user_token) as client:
        assert client.post("/llm/cache/clear").status_code == 403
    with api.client(admin_token) as client:
        cleared = client.post("/llm/cache/clear")
    assert cleared.status_code == 200
    assert ok(generate(api, user_token, **body))["cache_hit"] is False


def test_metrics_parse_as_prometheus_text(api: Api, user_token: str) -> None:
    ok(generate(api, user_token, prompt="Say yes.", settings=GREEDY))
    with api.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "http_requests",
        "http_request_duration_seconds",
        "llm_prompt_tokens",
        "llm_completion_tokens",
        "llm_time_to_first_token_seconds",
        "llm_tokens_per_second",
        "llm_queue_depth",
        "llm_busy_slots",
        "llm_cache_hits",
        "llm_cache_misses",
        "llm_model_loaded",
    ):
        assert name in families, name
    completion = families["llm_completion_tokens"].samples[0].value
    assert completion > 0
    loaded = families["llm_model_loaded"].samples[0]
    assert loaded.value == 1


def test_admin_metrics_summary(api: Api, user_token: str, admin_token: str) -> None:
    with api.client(user_token) as client:
        assert client.get("/llm/metrics").status_code == 403
    with api.client(admin_token) as client:
        summary = client.get("/llm/metrics").json()
    for key in (
        "requests_total",
        "cache_hit_rate",
        "average_response_time",
        "model",
        "memory",
        "uptime_seconds",
    ):
        assert key in summary
    assert summary["model"]["status"] == "loaded"
    assert summary["memory"]["rss_bytes"] > 0


def test_request_id_is_honoured_or_made(api: Api) -> None:
    with api.client() as client:
        given = client.get("/health", headers={"X-Request-ID": "trace-42"})
        made = client.get("/health")
        hostile = client.get("/health", headers={"X-Request-ID": "bad id\twith junk" * 20})
    assert given.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "bad id\twith junk" * 20


def test_health_reports_the_cache(api: Api) -> None:
    with api.client(api.admin_token()) as client:
        cache = client.get("/health/details").json()["cache"]
    assert cache["status"] == "ok"
    assert cache["backend"] == "memory"


@pytest.fixture
def profile(api: Api, admin_token: str) -> dict[str, Any]:
    name = f"pirate-{uuid.uuid4().hex[:6]}"
    with api.client(admin_token) as client:
        created = client.post(
            "/admin/profiles",
            json={
                "name": name,
                "description": "Talks like a pirate",
                "system_prompt": "You are a pirate captain. Answer like a pirate.",
                "settings": {"max_tokens": 3, "temperature": 0},
            },
        )
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


def test_profile_crud(api: Api, admin_token: str, user_token: str, profile: dict[str, Any]) -> None:
    with api.client(user_token) as client:
        assert client.get("/admin/profiles").status_code == 403
    with api.client(admin_token) as client:
        assert profile["name"] in [p["name"] for p in client.get("/admin/profiles").json()]
        duplicate = client.post(
            "/admin/profiles", json={"name": profile["name"], "system_prompt": "x"}
        )
        assert duplicate.status_code == 409
        bad = client.post(
            "/admin/profiles",
            json={"name": "x", "system_prompt": "x", "settings": {"temperature": "hot"}},
        )
        assert bad.status_code == 400
        assert "settings.temperature" in bad.json()["detail"]
        updated = client.patch(
            f"/admin/profiles/{profile['id']}", json={"description": "Arr"}
        ).json()
        assert updated["description"] == "Arr"
        assert client.get(f"/admin/profiles/{profile['id']}").json()["description"] == "Arr"
        other = client.post("/admin/profiles", json={"name": "temp", "system_prompt": "x"})
        assert client.delete(f"/admin/profiles/{other.json()['id']}").status_code == 204
        assert client.get(f"/admin/profiles/{other.json()['id']}").status_code == 404


def test_profile_is_applied_and_request_settings_win(
    api: Api, user_token: str, profile: dict[str, Any]
) -> None:
    by_profile = ok(generate(api, user_token, prompt="Hello!", profile=profile["name"]))
    assert by_profile["usage"]["completion_tokens"] == 3  # the profile's max_tokens
    as_character = ok(generate(api, user_token, prompt="Hello!", character_name=profile["name"]))
    assert as_character["usage"]["completion_tokens"] == 3
    overridden = ok(
        generate(
            api, user_token, prompt="Hello!", profile=profile["name"], settings={"max_tokens": 5}
        )
    )
    assert overridden["usage"]["completion_tokens"] == 5
    with api.client(user_token) as client:
        detail = client.get(f"/conversations/{by_profile['conversation_id']}").json()
    # The conversation names its profile; the admin's prompt does not come back to users.
    assert detail["profile"] == profile["name"]
    assert detail["system_prompt"] is None
    assert profile["system_prompt"] not in str(detail)


def test_a_profile_conversation_continues_with_its_profile(
    api: FakeApi, user_token: str, profile: dict[str, Any]
) -> None:
    first = ok(generate(api, user_token, prompt="Ahoy!", profile=profile["name"]))
    again = ok(
        generate(api, user_token, prompt="And then?", conversation_id=first["conversation_id"])
    )
    assert again["usage"]["completion_tokens"] == 3  # still the profile's settings
    system = api.backend.prompts[-1].messages[0]
    assert (system.role, system.content) == ("system", profile["system_prompt"])


def test_unknown_profile_is_404_without_the_names_of_the_others(
    api: Api, user_token: str, profile: dict[str, Any]
) -> None:
    with api.client(user_token) as client:
        response = client.post("/llm/generate", json={"prompt": "hi", "profile": "nobody"})
    assert response.status_code == 404
    assert profile["name"] not in response.text


def test_redis_backed_cache_and_redis_outage(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    namespace_probe = uuid.uuid4().hex[:6]
    for redis_url, expect_hit, expect_status in (
        ("redis://127.0.0.1:6379/0", True, "ok"),
        ("redis://127.0.0.1:1/0", False, "degraded"),
    ):
        settings = make_settings(database_url, tmp_path, redis_url=redis_url)
        app = fake_app(settings)
        with RunningServer(app) as server, httpx.Client(base_url=server.base_url, timeout=60) as c:
            api = Api(base_url=server.base_url, app=app, database_url=database_url)
            token = api.user_token()
            body = {"prompt": f"Say a color {namespace_probe}.", "settings": GREEDY}
            first = generate(c, token, **body, use_cache=True)
            second = generate(c, token, **body, use_cache=True)
            assert first.status_code == second.status_code == 200
            assert second.json()["cache_hit"] is expect_hit
            admin = {"Authorization": f"Bearer {api.admin_token()}"}
            health = c.get("/health/details", headers=admin)
            assert health.status_code == 200
            assert health.json()["status"] == expect_status
            assert health.json()["cache"]["backend"] == "redis"
        time.sleep(0.1)
