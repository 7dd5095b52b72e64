"""API keys: shown once, stored hashed, accepted like a JWT, revoked at once."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update

from modules.auth.models import ApiKey
from tests.support import Api


def create_key(api: Api, token: str, **body: object) -> dict[str, object]:
    with api.client(token) as client:
        response = client.post("/auth/api-keys", json={"name": "ci", **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_key_is_shown_once_and_stored_hashed(api: Api, user_token: str) -> None:
    created = create_key(api, user_token, expires_in_days=30)
    secret = str(created["key"])
    assert secret.startswith("llms_")
    assert secret.startswith(str(created["prefix"]))
    assert created["expires_at"] is not None
    with api.client(user_token) as client:
        listed = client.get("/auth/api-keys").json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    rows = api.sql(select(ApiKey.secret_hash).where(ApiKey.prefix == created["prefix"]))
    assert rows[0][0] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(rows)


def test_key_works_wherever_a_jwt_does_and_revocation_is_immediate(
    api: Api, user_token: str
) -> None:
    created = create_key(api, user_token)
    with api.client(str(created["key"])) as as_key:
        assert as_key.get("/users/me").status_code == 200
        generated = as_key.post(
            "/llm/generate", json={"prompt": "Hi", "settings": {"max_tokens": 2}}
        )
        assert generated.status_code == 200
        with api.client(user_token) as owner:
            assert owner.delete(f"/auth/api-keys/{created['id']}").status_code == 204
        assert as_key.get("/users/me").status_code == 401
    with api.client(user_token) as owner:
        listed = owner.get("/auth/api-keys").json()
    assert listed[0]["revoked_at"] is not None


def test_expired_and_unknown_keys_are_401(api: Api, user_token: str) -> None:
    created = create_key(api, user_token)
    api.sql(
        update(ApiKey)
        .where(ApiKey.prefix == created["prefix"])
        .values(expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    )
    for secret in (str(created["key"]), "llms_" + "x" * 43):
        with api.client(secret) as client:
            assert client.get("/users/me").status_code == 401


def test_another_users_key_cannot_be_revoked(api: Api, user_token: str) -> None:
    created = create_key(api, user_token)
    other = api.user_token()
    with api.client(other) as client:
        assert client.delete(f"/auth/api-keys/{created['id']}").status_code == 404
        assert client.delete(f"/auth/api-keys/{uuid.uuid4()}").status_code == 404
        assert client.get("/auth/api-keys").json() == []


def test_deactivated_owner_disables_the_key(api: Api, admin_token: str) -> None:
    user = api.register()
    token = api.login(user["email"])["access_token"]
    secret = str(create_key(api, token)["key"])
    with api.client(admin_token) as admin:
        admin.patch(f"/users/{user['id']}", json={"is_active": False})
    with api.client(secret) as client:
        assert client.get("/users/me").status_code == 401


def test_bad_key_requests_are_400(api: Api, user_token: str) -> None:
    with api.client(user_token) as client:
        assert client.post("/auth/api-keys", json={}).status_code == 400
        assert client.post("/auth/api-keys", json={"name": ""}).status_code == 400
        too_long = client.post("/auth/api-keys", json={"name": "x", "expires_in_days": 0})
        assert too_long.status_code == 400
        assert "expires_in_days" in too_long.json()["detail"]


def test_logout_with_an_api_key_is_a_clear_400(api: Api, user_token: str) -> None:
    secret = str(create_key(api, user_token)["key"])
    with api.client(secret) as client:
        response = client.post("/auth/logout")
    assert response.status_code == 400
    assert "API key" in response.json()["detail"]


def test_an_api_key_cannot_create_list_or_revoke_keys(api: Api, user_token: str) -> None:
    """A key that leaked must not be able to revoke the owner's other keys (or list them,
    or make more): managing keys needs a password login."""
    kept = create_key(api, user_token)
    leaked = str(create_key(api, user_token)["key"])
    with api.client(leaked) as as_key:
        for response in (
            as_key.delete(f"/auth/api-keys/{kept['id']}"),
            as_key.get("/auth/api-keys"),
            as_key.post("/auth/api-keys", json={"name": "more"}),
        ):
            assert response.status_code == 403, response.text
            assert "API key cannot" in response.json()["detail"]
    with api.client(user_token) as owner:
        listed = owner.get("/auth/api-keys").json()
    assert len(listed) == 2
    assert all(key["revoked_at"] is None for key in listed)
