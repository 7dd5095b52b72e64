"""Own account and admin user management; role guards; deactivation takes effect at once."""

from __future__ import annotations

import uuid

from tests.support import PASSWORD, Api


def test_users_me_and_password_change(api: Api) -> None:
    user = api.register()
    token = api.login(user["email"])["access_token"]
    with api.client(token) as client:
        wrong = client.patch(
            "/users/me", json={"current_password": "nope-nope-1", "new_password": "new-pass-123"}
        )
        assert wrong.status_code == 422
        weak = client.patch("/users/me", json={"current_password": PASSWORD, "new_password": "x"})
        assert weak.status_code == 422
        assert "new_password" in weak.json()["detail"]
        ok = client.patch(
            "/users/me", json={"current_password": PASSWORD, "new_password": "new-pass-123"}
        )
        assert ok.status_code == 200
    api.login(user["email"], "new-pass-123")


def test_admin_routes_need_the_admin_role(api: Api, user_token: str) -> None:
    with api.client(user_token) as client:
        for method, path in [
            ("GET", "/users"),
            ("GET", f"/users/{uuid.uuid4()}"),
            ("PATCH", f"/users/{uuid.uuid4()}"),
            ("DELETE", f"/users/{uuid.uuid4()}"),
        ]:
            response = client.request(method, path, json={} if method == "PATCH" else None)
            assert response.status_code == 403, (method, path, response.text)


def test_admin_manages_users(api: Api, admin_token: str) -> None:
    target = api.register()
    with api.client(admin_token) as admin:
        listing = admin.get("/users", params={"limit": 500})
        assert listing.status_code == 200
        assert target["id"] in {u["id"] for u in listing.json()["items"]}
        assert admin.get(f"/users/{target['id']}").json()["email"] == target["email"]
        promoted = admin.patch(f"/users/{target['id']}", json={"role": "admin"})
        assert promoted.json()["role"] == "admin"
        assert admin.patch(f"/users/{target['id']}", json={"role": "root"}).status_code == 400
        assert admin.get(f"/users/{uuid.uuid4()}").status_code == 404
        assert admin.get("/users/not-a-uuid").status_code in (400, 404)


def test_deactivated_user_is_locked_out_at_once(api: Api, admin_token: str) -> None:
    target = api.register()
    tokens = api.login(target["email"])
    with api.client(admin_token) as admin, api.client(tokens["access_token"]) as user:
        assert user.get("/users/me").status_code == 200
        assert admin.patch(f"/users/{target['id']}", json={"is_active": False}).status_code == 200
        assert user.get("/users/me").status_code == 401
        refresh = user.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 401
        login = user.post("/auth/login", json={"email": target["email"], "password": PASSWORD})
        assert login.status_code == 403
        assert admin.patch(f"/users/{target['id']}", json={"is_active": True}).status_code == 200
    api.login(target["email"])


def test_deleted_user_is_locked_out_at_once(api: Api, admin_token: str) -> None:
    target = api.register()
    token = api.login(target["email"])["access_token"]
    with api.client(admin_token) as admin, api.client(token) as user:
        assert admin.delete(f"/users/{target['id']}").status_code == 204
        assert user.get("/users/me").status_code == 401
        assert admin.get(f"/users/{target['id']}").status_code == 404
        assert admin.delete(f"/users/{target['id']}").status_code == 404


def test_admin_cannot_lock_themselves_out(api: Api) -> None:
    admin_user = api.register()
    api.make_admin(admin_user["email"])
    token = api.login(admin_user["email"])["access_token"]
    with api.client(token) as admin:
        me = admin.get("/users/me").json()
        assert admin.patch(f"/users/{me['id']}", json={"role": "user"}).status_code == 409
        assert admin.patch(f"/users/{me['id']}", json={"is_active": False}).status_code == 409
        assert admin.delete(f"/users/{me['id']}").status_code == 409
