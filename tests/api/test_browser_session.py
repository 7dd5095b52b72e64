"""The chat page's session: an HttpOnly, SameSite=Strict cookie, a CSRF token for every
state-changing request made with it, and bearer tokens unchanged."""

from __future__ import annotations

import httpx

from tests.support import PASSWORD, Api


def browser_login(api: Api, client: httpx.Client, email: str) -> str:
    response = client.post("/auth/session", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    csrf: str = response.json()["csrf_token"]
    return csrf


def test_the_session_cookie_is_httponly_strict_and_scripts_get_only_the_csrf_token(
    api: Api,
) -> None:
    user = api.register()
    with api.client() as client:
        response = client.post("/auth/session", json={"email": user["email"], "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user"]["email"] == user["email"]
        assert body["csrf_token"]
        assert body["expires_at"]
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("llm_session=")
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert "secure" not in flags  # plain HTTP here; HTTPS adds Secure
        assert body["csrf_token"] not in cookie
        # The page finds its session (and CSRF token) again after a reload.
        again = client.get("/auth/session")
        assert again.status_code == 200
        assert again.json()["csrf_token"] == body["csrf_token"]
        assert client.get("/users/me").json()["email"] == user["email"]


def test_state_changing_requests_with_the_cookie_need_the_csrf_token(api: Api) -> None:
    user = api.register()
    with api.client() as client:
        csrf = browser_login(api, client, user["email"])
        refused = client.post("/llm/generate", json={"prompt": "hello"})
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "X-CSRF-Token" in refused.json()["detail"]
        wrong = client.post(
            "/llm/generate", json={"prompt": "hello"}, headers={"X-CSRF-Token": "forged"}
        )
        assert wrong.status_code == 403
        answered = client.post(
            "/llm/generate", json={"prompt": "hello"}, headers={"X-CSRF-Token": csrf}
        )
        assert answered.status_code == 200, answered.text
        # Reading needs no token.
        assert client.get("/conversations").status_code == 200
        # Another login's token does not fit this one.
        with api.client() as other:
            other_csrf = browser_login(api, other, user["email"])
        assert other_csrf != csrf
        mixed = client.post(
            "/auth/api-keys", json={"name": "k"}, headers={"X-CSRF-Token": other_csrf}
        )
        assert mixed.status_code == 403
        created = client.post("/auth/api-keys", json={"name": "k"}, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text


def test_log_out_clears_the_cookie_and_ends_the_login(api: Api) -> None:
    user = api.register()
    with api.client() as client:
        csrf = browser_login(api, client, user["email"])
        stolen = client.cookies["llm_session"]
        assert client.delete("/auth/session").status_code == 403  # the CSRF token, again
        ended = client.delete("/auth/session", headers={"X-CSRF-Token": csrf})
        assert ended.status_code == 204
        assert (
            'llm_session=""' in ended.headers["set-cookie"]
            or "Max-Age=0" in ended.headers["set-cookie"]
        )
        assert client.get("/auth/session").status_code == 401
    # The cookie's token is revoked too, not only forgotten by the browser.
    with api.client(cookies={"llm_session": stolen}) as client:
        assert client.get("/users/me").status_code == 401


def test_a_password_change_from_the_page_ends_the_other_browsers_sessions(api: Api) -> None:
    user = api.register()
    with api.client() as here, api.client() as elsewhere:
        csrf = browser_login(api, here, user["email"])
        browser_login(api, elsewhere, user["email"])
        changed = here.patch(
            "/users/me",
            json={"current_password": PASSWORD, "new_password": "page-horse-45"},
            headers={"X-CSRF-Token": csrf},
        )
        assert changed.status_code == 200, changed.text
        assert elsewhere.get("/auth/session").status_code == 401
        assert elsewhere.get("/users/me/usage").status_code == 401
        # The browser that changed it stays logged in, with the same CSRF token.
        assert here.get("/auth/session").json()["csrf_token"] == csrf
        assert here.get("/users/me/usage").status_code == 200


def test_only_json_logs_in_a_browser_and_bad_credentials_are_clear(api: Api) -> None:
    user = api.register()
    with api.client() as client:
        # A cross-site form can send this shape; it must not log the browser in.
        form = client.post("/auth/session", data={"email": user["email"], "password": PASSWORD})
        assert form.status_code == 415
        assert "application/json" in form.json()["detail"]
        wrong = client.post("/auth/session", json={"email": user["email"], "password": "nope-nope"})
        assert wrong.status_code in (401, 422)
        assert wrong.headers["content-type"].startswith("application/problem+json")
        assert "llm_session" not in client.cookies
        malformed = client.post(
            "/auth/session", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400


def test_bearer_tokens_and_api_keys_need_no_csrf_token_and_other_cookies_do_nothing(
    api: Api,
) -> None:
    token = api.user_token()
    with api.client(token) as client:
        assert client.post("/llm/generate", json={"prompt": "hello"}).status_code == 200
        key = client.post("/auth/api-keys", json={"name": "program"}).json()["key"]
    with api.client(key) as client:
        assert client.post("/llm/generate", json={"prompt": "hello"}).status_code == 200
        assert client.get("/auth/session").status_code == 400  # a key is not a session
    # Litestar's default cookie name would have taken a bare JWT; only ours is read.
    with api.client(cookies={"token": token}) as client:
        assert client.get("/users/me").status_code == 401
    with api.client(cookies={"llm_session": key}) as client:
        assert client.get("/users/me").status_code == 401


def test_the_page_is_public_and_locked_down_by_its_headers(api: Api) -> None:
    with api.client() as client:
        page = client.get("/")
        script = client.get("/static/app.js")
        head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script: only <script src=...>
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    # The page's files carry the same policy (the static router needs its own hook).
    assert script.headers["content-security-policy"] == policy
    assert script.headers["x-content-type-options"] == "nosniff"
    # No script parses a string as HTML or code, the vendored parser included (markdown.js
    # reads its tokens, never its HTML).
    for name in ("app.js", "markdown.js", "markdown-it.min.js"):
        with api.client() as client:
            served = client.get(f"/static/{name}")
        assert served.status_code == 200, name
        assert served.headers["content-security-policy"] == policy
        assert "innerHTML" not in served.text, name
        assert "eval(" not in served.text, name
        assert "new Function" not in served.text, name


def test_hostile_session_requests_get_clear_4xx_answers(api: Api) -> None:
    bodies: list[bytes] = [
        b"[]",
        b'"text"',
        b"null",
        b'{"email": 5, "password": []}',
        b'{"email": "a@example.com"}',
        b'{"email": "a@example.com", "password": "x", "extra": 1}',
        b'{"email": "a\\u0000@example.com", "password": "correct-horse-42"}',
        b'{"email": "a@example.com", "password": "\\ud800\\ud800-correct-horse"}',
        b'{"email": "a@example.com", "password": "' + b"p" * 5000 + b'"}',
        b"\xff\xfe{",
    ]
    with api.client() as client:
        for body in bodies:
            response = client.post(
                "/auth/session", content=body, headers={"Content-Type": "application/json"}
            )
            assert 400 <= response.status_code < 500, (body[:60], response.text)
            assert response.json()["detail"], body[:60]
            assert "llm_session" not in response.headers.get("set-cookie", "")
        # A forged, expired or truncated cookie is a 401, never a 500.
        for cookie in ("x", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "llm" * 3000):
            client.cookies.set("llm_session", cookie)
            assert client.get("/auth/session").status_code == 401, cookie[:20]
            assert client.post("/llm/generate", json={"prompt": "hi"}).status_code == 401
        client.cookies.clear()
