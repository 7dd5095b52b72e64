"""The auth flow over HTTP: register, login, refresh rotation and reuse, logout, bad tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.support import JWT_SECRET, PASSWORD, Api


def test_register_returns_the_user_without_secrets(api: Api) -> None:
    user = api.register(email="New.Person@Example.COM")
    assert user["email"] == "new.person@example.com"
    assert user["role"] == "user"
    assert user["is_active"] is True
    assert "password" not in str({k: v for k, v in user.items() if k != "password"})
    uuid.UUID(user["id"])


def test_email_is_unique_case_insensitively(api: Api) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    api.register(email=email)
    with api.client() as client:
        response = client.post(
            "/auth/register", json={"email": email.upper(), "password": PASSWORD}
        )
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1", "at least 8 characters"),
        ("12345678901", "must contain a letter"),
        ("abcdefghijk", "digit or a symbol"),
        ("x1" * 600, "at most 1024"),
        # (A NUL is refused in any field before the policy sees it: tests/api/test_errors.py.)
        ("abc\x01defg123", "control characters"),
    ],
)
def test_password_policy_is_a_clear_422(api: Api, password: str, message: str) -> None:
    with api.client() as client:
        response = client.post(
            "/auth/register", json={"email": "policy@example.com", "password": password}
        )
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_password_over_passlib_limit_is_a_client_error(api: Api) -> None:
    with api.client() as client:
        response = client.post(
            "/auth/register", json={"email": "huge@example.com", "password": "a1" * 5000}
        )
    assert response.status_code == 400
    assert "password" in response.json()["detail"]


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "nul\x00@example.com", ""])
def test_bad_email_names_the_field(api: Api, email: str) -> None:
    with api.client() as client:
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 400
    assert "email" in response.json()["detail"]


def test_login_by_json_and_by_oauth2_form(api: Api) -> None:
    user = api.register()
    tokens = api.login(user["email"])
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_expires_in"] == 7 * 24 * 3600
    with api.client() as client:
        form = client.post(
            "/auth/login",
            data={"grant_type": "password", "username": user["email"], "password": PASSWORD},
        )
        assert form.status_code == 200, form.text
        me = client.get(
            "/users/me", headers={"Authorization": f"Bearer {form.json()['access_token']}"}
        )
    assert me.json()["email"] == user["email"]


def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    user = api.register()
    first = api.login(user["email"])
    with api.client() as client:
        second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        # The old refresh token again: theft assumed, the whole login ends.
        reuse = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert "already used" in reuse.json()["detail"]
        after = client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert after.status_code == 401
        me = client.get("/users/me", headers={"Authorization": f"Bearer {rotated['access_token']}"})
        assert me.status_code == 401
        # Another login of the same user is unaffected.
        other = api.login(user["email"])
        ok = client.get("/users/me", headers={"Authorization": f"Bearer {other['access_token']}"})
        assert ok.status_code == 200


def test_logout_ends_access_and_refresh_tokens(api: Api) -> None:
    user = api.register()
    tokens = api.login(user["email"])
    with api.client(tokens["access_token"]) as client:
        assert client.post("/auth/logout").status_code == 204
        assert client.get("/users/me").status_code == 401
        refresh = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 401


def test_token_types_are_not_interchangeable(api: Api) -> None:
    user = api.register()
    tokens = api.login(user["email"])
    with api.client(tokens["refresh_token"]) as client:
        assert client.get("/users/me").status_code == 401
    with api.client() as client:
        response = client.post("/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 401


def _forge(claims: dict[str, object], key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _claims(api: Api, **changes: object) -> dict[str, object]:
    user = api.register()
    real = jwt.decode(api.login(user["email"])["access_token"], options={"verify_signature": False})
    real.update(changes)
    return {k: v for k, v in real.items() if v is not None}


@pytest.mark.parametrize(
    "case", ["alg_none", "foreign_key", "expired", "no_jti", "no_iat", "no_sub", "garbage"]
)
def test_bad_tokens_are_401(api: Api, case: str) -> None:
    now = datetime.now(UTC)
    if case == "alg_none":
        claims = _claims(api)
        token = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    elif case == "foreign_key":
        token = _forge(_claims(api), key="another-secret-" + "y" * 40)
    elif case == "expired":
        token = _forge(_claims(api, exp=int((now - timedelta(minutes=1)).timestamp())))
    elif case == "no_jti":
        token = _forge(_claims(api, jti=None))
    elif case == "no_iat":
        token = _forge(_claims(api, iat=None))
    elif case == "no_sub":
        token = _forge(_claims(api, sub=None))
    else:
        token = "not.a.jwt"
    with api.client(token) as client:
        response = client.get("/users/me")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_missing_token_is_401(api: Api) -> None:
    with api.client() as client:
        response = client.post("/llm/generate", json={"prompt": "hi"})
    assert response.status_code == 401
