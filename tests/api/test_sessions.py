"""Sessions end when they should: credential changes, API keys' limits, deactivation,
log out everywhere, and one winner for a refresh token sent twice at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support import PASSWORD, Api


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def works(api: Api, token: str) -> bool:
    with api.client(token) as client:
        return client.get("/users/me").status_code == 200


def refreshes(api: Api, refresh_token: str) -> bool:
    with api.client() as client:
        response = client.post("/auth/refresh", json={"refresh_token": refresh_token})
    return response.status_code == 200


def new_key(api: Api, token: str) -> str:
    with api.client(token) as client:
        response = client.post("/auth/api-keys", json={"name": "program"})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def test_password_change_ends_every_other_login_and_key(api: Api) -> None:
    user = api.register()
    here, elsewhere = api.login(user["email"]), api.login(user["email"])
    key = new_key(api, here["access_token"])
    with api.client(here["access_token"]) as client:
        changed = client.patch(
            "/users/me", json={"current_password": PASSWORD, "new_password": "new-horse-43"}
        )
    assert changed.status_code == 200, changed.text
    assert not works(api, elsewhere["access_token"])
    assert not refreshes(api, elsewhere["refresh_token"])
    assert not works(api, key)
    # The login that confirmed the change goes on.
    assert works(api, here["access_token"])
    assert refreshes(api, here["refresh_token"])


def test_email_change_ends_other_logins_too(api: Api) -> None:
    user = api.register()
    here, elsewhere = api.login(user["email"]), api.login(user["email"])
    new_email = "moved-" + user["email"]
    with api.client(here["access_token"]) as client:
        changed = client.patch("/users/me", json={"current_password": PASSWORD, "email": new_email})
    assert changed.status_code == 200, changed.text
    assert not works(api, elsewhere["access_token"])
    assert api.login(new_email)["access_token"]


def test_api_keys_cannot_make_keys_change_credentials_or_end_logins(api: Api) -> None:
    user = api.register()
    login = api.login(user["email"])
    key = new_key(api, login["access_token"])
    with api.client(key) as as_key:
        assert as_key.get("/users/me").status_code == 200
        made = as_key.post("/auth/api-keys", json={"name": "another"})
        assert made.status_code == 403
        assert "log in" in made.json()["detail"]
        changed = as_key.patch(
            "/users/me", json={"current_password": PASSWORD, "new_password": "new-horse-43"}
        )
        assert changed.status_code == 403
        assert as_key.post("/auth/logout-all").status_code == 403
    assert api.login(user["email"])  # the password did not change


def test_deactivation_ends_logins_and_keys_for_good(api: Api, admin_token: str) -> None:
    user = api.register()
    login = api.login(user["email"])
    key = new_key(api, login["access_token"])
    with api.client(admin_token) as admin:
        assert admin.patch(f"/users/{user['id']}", json={"is_active": False}).status_code == 200
        assert not works(api, login["access_token"])
        assert admin.patch(f"/users/{user['id']}", json={"is_active": True}).status_code == 200
    # Reactivated: the old login and key stay dead; a new login works.
    assert not works(api, login["access_token"])
    assert not refreshes(api, login["refresh_token"])
    assert not works(api, key)
    assert works(api, api.login(user["email"])["access_token"])


def test_log_out_everywhere(api: Api) -> None:
    user = api.register()
    logins = [api.login(user["email"]) for _ in range(3)]
    key = new_key(api, logins[0]["access_token"])
    with api.client(logins[0]["access_token"]) as client:
        assert client.post("/auth/logout-all").status_code == 204
    for login in logins:
        assert not works(api, login["access_token"])
        assert not refreshes(api, login["refresh_token"])
    assert works(api, key)  # API keys are revoked one by one, not by a logout


def test_a_refresh_token_sent_twice_at_once_has_one_winner(api: Api) -> None:
    user = api.register()
    for _ in range(3):
        login = api.login(user["email"])

        def use(_: Any, token: str = login["refresh_token"]) -> int:
            return httpx.post(
                f"{api.base_url}/auth/refresh", json={"refresh_token": token}, timeout=30
            ).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(use, range(2)))
        assert statuses == [200, 401]
