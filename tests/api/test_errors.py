"""Bad input is a clear 4xx problem-details answer, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.support import Api

PROBLEM = "application/problem+json"


def test_malformed_json_is_400(api: Api, user_token: str) -> None:
    with api.client(user_token) as client:
        response = client.post(
            "/llm/generate",
            content=b'{"prompt": "hi",',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 400


def test_body_over_one_mebibyte_is_413(api: Api, user_token: str) -> None:
    body = json.dumps({"prompt": "a" * (1024 * 1024 + 10)})
    with api.client(user_token) as client:
        response = client.post(
            "/llm/generate", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": 5}, "prompt"),
        ({"prompt": "hi", "settings": {"temperature": "hot"}}, "settings.temperature"),
        ({"prompt": "hi", "settings": {"temperature": 9}}, "settings.temperature"),
        ({"prompt": "hi", "settings": {"max_tokens": 0}}, "settings.max_tokens"),
        ({"prompt": "hi", "settings": {"max_tokens": 100000}}, "settings.max_tokens"),
        ({"prompt": "hi", "settings": {"top_p": 0}}, "settings.top_p"),
        ({"prompt": "hi", "settings": {"top_k": -1}}, "settings.top_k"),
        ({"prompt": "hi", "settings": {"repeat_penalty": 7}}, "settings.repeat_penalty"),
        ({"prompt": "hi", "settings": {"stop": ["x"] * 20}}, "settings.stop"),
        ({"prompt": "hi", "settings": {"seed": -3}}, "settings.seed"),
        ({"prompt": "hi", "settings": {"temprature": 1}}, "temprature"),
        ({"messages": [{"role": "root", "content": "hi"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "prompt"),
        ({}, "prompt"),
    ],
)
def test_schema_violations_name_the_field(
    api: Api, user_token: str, body: dict[str, object], field: str
) -> None:
    with api.client(user_token) as client:
        response = client.post("/llm/generate", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert field in response.json()["detail"]


def test_prompt_longer_than_the_context_is_422_with_counts(api: Api, user_token: str) -> None:
    prompt = " ".join(f"word{i}" for i in range(3000))
    with api.client(user_token) as client:
        response = client.post("/llm/generate", json={"prompt": prompt})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["context_size"] == 2048
    assert body["prompt_tokens"] > 2048
    assert str(body["prompt_tokens"]) in body["detail"]


@pytest.mark.parametrize("prompt", ["", "   \n\t ", "<script>alert(1)</script>", "\u200b\u200b"])
def test_prompt_empty_after_sanitizing_is_422(api: Api, user_token: str, prompt: str) -> None:
    with api.client(user_token) as client:
        response = client.post("/llm/generate", json={"prompt": prompt})
    assert response.status_code == 422, response.text
    assert "empty" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "raw", "field", "what"),
    [
        ("/llm/generate", b'{"prompt": "Say hi\\u0000 now"}', "prompt", "NUL"),
        ("/llm/generate", b'{"prompt": "Say hi \\ud800"}', "prompt", "lone surrogate"),
        ("/llm/generate", b'{"prompt": "hi", "profile": "a\\u0000b"}', "profile", "NUL"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi"}], "profile": "a\\u0000b"}',
            "profile",
            "NUL",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x\\udfff"}]}',
            "messages[0].content",
            "lone surrogate",
        ),
        ("/users/me", b'{"email\\u0000": "a@example.com"}', "body", "NUL"),
    ],
)
def test_nul_and_lone_surrogates_are_refused_in_any_field(
    api: Api, user_token: str, path: str, raw: bytes, field: str, what: str
) -> None:
    """Text no column can store gets a 400 naming the field, before the database (a NUL in a
    profile name was a 500 on PostgreSQL); msgspec refuses a lone surrogate as malformed."""
    with api.client(user_token) as client:
        method = "PATCH" if path == "/users/me" else "POST"
        response = client.request(
            method, path, content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    body = response.json()
    detail = body["error"]["message"] if path.startswith("/v1") else body["detail"]
    if what == "NUL":
        assert field in detail
        assert "holds a NUL character" in detail


def test_duplicate_keys_do_not_bypass_validation(api: Api, user_token: str) -> None:
    raw = b'{"prompt": "hi", "settings": {"max_tokens": 4, "max_tokens": 100000}}'
    with api.client(user_token) as client:
        response = client.post(
            "/llm/generate", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400


def test_unknown_route_is_problem_json(api: Api, user_token: str) -> None:
    with api.client(user_token) as client:
        response = client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
