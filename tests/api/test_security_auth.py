"""What the security review of the auth routes found (issue 21): login answers that told
known emails from unknown ones, cross-site logins that locked owners out, unauthenticated
bodies read before any limit, look-alike emails, and a bootstrap admin anyone could claim."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.support import PASSWORD, Api, RunningServer, fake_app, make_settings

PROBLEM = "application/problem+json"
JSON = "application/json"
# NFKC makes each U+FDFA eighteen characters (33 bytes): 250 of them are over passlib's
# 4096-byte limit while the body is under every length bound.
EXPANDING = "\ufdfa" * 250


@contextmanager
def server(tmp_path: Path, **overrides: Any) -> Iterator[httpx.Client]:
    """An app of its own on a fresh SQLite database, whose limiter's clock stands still
    one second into a minute (a test's requests fall in one fixed window)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, **overrides))
    now = time.time()
    app.state.llm.limiter.clock = lambda: now - now % 60 + 1
    with RunningServer(app) as running, httpx.Client(base_url=running.base_url, timeout=60) as c:
        yield c


def ghost() -> str:
    return f"ghost-{uuid.uuid4().hex[:10]}@example.com"


# Finding 1 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        EXPANDING,  # over 4096 bytes once normalized: was a 500 for unknown emails only
        EXPANDING + "1",
        "wrong-pass-1",
        "\uff37\uff32\uff2f\uff2e\uff27-pass-1",  # full-width: NFKC changes it
        "a1" * 2048,  # exactly the schema's 4096 characters
        "a1" * 2049,  # over the schema's bound: a 400 for both
    ],
    ids=["expanding", "expanding-digit", "wrong", "full-width", "at-bound", "over-bound"],
)
def test_login_answers_known_and_unknown_emails_alike(api: Api, password: str) -> None:
    known = api.register()["email"]
    with api.client() as client:
        for path in ("/auth/login", "/auth/session"):
            answers = [
                client.post(path, json={"email": email, "password": password})
                for email in (known, ghost())
            ]
            statuses = [answer.status_code for answer in answers]
            assert statuses[0] == statuses[1], (path, [a.text for a in answers])
            assert statuses[0] in (400, 401), answers[0].text
            details = [answer.json()["detail"] for answer in answers]
            assert details[0] == details[1]
        form = [
            client.post("/auth/login", data={"username": email, "password": password})
            for email in (known, ghost())
        ]
    assert [answer.status_code for answer in form] in ([401, 401], [400, 400])


def test_a_password_over_4096_bytes_once_normalized_is_a_422_before_hashing(api: Api) -> None:
    with api.client() as client:
        registered = client.post(
            "/auth/register", json={"email": ghost(), "password": EXPANDING + "1"}
        )
        assert registered.status_code == 422, registered.text
        assert registered.headers["content-type"].startswith(PROBLEM)
        assert "4096 bytes" in registered.json()["detail"]
        user = api.register()
        token = api.login(user["email"])["access_token"]
        changed = client.patch(
            "/users/me",
            json={"current_password": PASSWORD, "new_password": EXPANDING + "1"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert changed.status_code == 422, changed.text
    assert "new_password" in changed.json()["detail"]
    assert "4096 bytes" in changed.json()["detail"]


# Finding 3 -------------------------------------------------------------------------------

CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://chat.evil.example"},
]


def test_a_cross_site_form_or_text_login_is_refused_and_counts_against_nothing(
    tmp_path: Path,
) -> None:
    with server(tmp_path, login_failures_per_account=2, login_attempts_per_minute_per_ip=5) as c:
        email = ghost()
        registered = c.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        wrong = {"username": email, "password": "wrong-pass-1"}
        as_text = json.dumps({"email": email, "password": "wrong-pass-1"})
        for headers in CROSS_SITE:
            refused = [
                c.post("/auth/login", data=wrong, headers=headers),
                c.post(
                    "/auth/login",
                    content=as_text,
                    headers={**headers, "Content-Type": "text/plain;charset=UTF-8"},
                ),
                # A Blob with no type: no Content-Type at all, and no preflight either.
                c.post("/auth/login", content=as_text, headers=headers),
            ]
            for response in refused:
                assert response.status_code == 403, response.text
                assert response.headers["content-type"].startswith(PROBLEM)
                assert "another site" in response.json()["detail"]
        # Twelve refused attempts, with two failures allowed per account and five attempts
        # per address: none counted, and the owner logs in from this address.
        owner = c.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert owner.status_code == 200, owner.text


def test_same_origin_pages_and_programs_still_log_in_with_a_form(api: Api) -> None:
    email = api.register()["email"]
    form = {"username": email, "password": PASSWORD}
    with api.client() as client:
        for headers in (
            {},  # a program (an OAuth2 client, curl): no Origin, no Sec-Fetch-Site
            {"Origin": api.base_url, "Sec-Fetch-Site": "same-origin"},  # Swagger UI
            {"Origin": api.base_url},  # plain HTTP: browsers send no Sec-Fetch-Site there
            # A proxy rewrote the Host header, but the browser vouches for the origin.
            {"Origin": "https://chat.example.org", "Sec-Fetch-Site": "same-origin"},
        ):
            response = client.post("/auth/login", data=form, headers=headers)
            assert response.status_code == 200, (headers, response.text)
        # JSON needs a CORS preflight, which this service never grants: unchanged.
        as_json = client.post(
            "/auth/login",
            json={"email": email, "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
        assert as_json.status_code == 200


# Finding 7 -------------------------------------------------------------------------------

UNAUTHENTICATED = ("/auth/login", "/auth/session", "/auth/register", "/auth/refresh")


@pytest.mark.parametrize("path", UNAUTHENTICATED)
def test_unauthenticated_bodies_over_16_kib_are_a_clear_413(api: Api, path: str) -> None:
    body = json.dumps({"email": "big@example.com", "password": "x" * 17000}).encode()
    with api.client() as client:
        declared = client.post(path, content=body, headers={"Content-Type": JSON})
        # Sent in chunks, without a Content-Length: cut off at the limit as it arrives.
        chunked = client.post(
            path,
            content=iter([body[:8000], body[8000:]]),
            headers={"Content-Type": JSON},
        )
        small = client.post(path, content=body[:15000], headers={"Content-Type": "text/plain"})
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "16384 bytes" in response.json()["detail"]
    assert small.status_code != 413


def test_the_address_limit_is_checked_before_a_body_is_read(tmp_path: Path) -> None:
    with server(
        tmp_path, login_attempts_per_minute_per_ip=3, registrations_per_hour_per_ip=2
    ) as client:

        def malformed(path: str) -> httpx.Response:
            return client.post(path, content=b'{"email": ', headers={"Content-Type": JSON})

        # Logins, browser-session logins and refreshes share the per-address login limit:
        # bodies that never decode count too, so the 4th is refused before it is read.
        statuses = [
            malformed(path).status_code
            for path in ("/auth/login", "/auth/session", "/auth/refresh", "/auth/login")
        ]
        assert statuses == [400, 400, 400, 429]
        limited = malformed("/auth/login")
        assert "login attempts from this address" in limited.json()["detail"]
        assert limited.headers["retry-after"]
        assert [malformed("/auth/register").status_code for _ in range(3)] == [400, 400, 429]


# Finding 8 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "local",
    [
        "ad\u200bmin",  # zero-width space
        "\u202eadmin",  # right-to-left override
        "ad\u2066min\u2069",  # bidi isolate
        "admin\u00ad",  # soft hyphen
        "ad\u3164min",  # Hangul filler: a letter that shows as nothing
        "\u0430dmin",  # Cyrillic a among Latin letters
        "adm\u03b9n",  # Greek iota among Latin letters
    ],
    ids=["zwsp", "rlo", "isolate", "soft-hyphen", "filler", "cyrillic", "greek"],
)
def test_emails_that_could_pass_for_another_are_a_422_naming_the_field(
    api: Api, local: str
) -> None:
    email = f"{local}-{uuid.uuid4().hex[:6]}@example.com"
    with api.client() as client:
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["detail"].startswith("invalid request: email: ")
    assert problem["errors"][0]["key"] == "email"


def test_a_domain_label_that_mixes_scripts_is_refused_too(api: Api) -> None:
    with api.client() as client:
        email = f"label-{uuid.uuid4().hex[:6]}@\u0435xample.com"  # a Cyrillic e
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 422, response.text
    assert "CYRILLIC, LATIN" in response.json()["detail"]


def test_full_width_emails_are_normalized_to_ascii(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    wide = "".join(chr(ord(c) + 0xFEE0) for c in f"wide{tag}")  # full-width letters
    user = api.register(email=f"{wide}@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com")
    assert user["email"] == f"wide{tag}@example.com"
    api.login(f"wide{tag}@example.com")
    api.login(f"{wide}@example.com")  # the same account, however it is typed
    with api.client() as client:
        again = client.post(
            "/auth/register", json={"email": f"WIDE{tag}@example.com", "password": PASSWORD}
        )
    assert again.status_code == 409


def test_honest_international_emails_register(api: Api) -> None:
    for local in ("\u5c71\u7530taro", "\u03b5\u03bb\u03bb\u03b7\u03bd\u03b1\u03c2", "jos\u00e9"):
        # Digits are of no script: the suffix keeps a Greek label Greek.
        api.register(email=f"{local}-{uuid.uuid4().int % 10**8}@example.com")


def test_an_email_change_is_checked_the_same_way(api: Api) -> None:
    user = api.register()
    token = api.login(user["email"])["access_token"]
    with api.client(token) as client:
        email = f"ad\u200bmin-{uuid.uuid4().hex[:6]}@example.org"
        response = client.patch("/users/me", json={"current_password": PASSWORD, "email": email})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["key"] == "email"
        assert client.get("/users/me").json()["email"] == user["email"]


def test_mixed_scripts_are_allowed_when_the_setting_is_off(tmp_path: Path) -> None:
    with server(tmp_path, email_refuse_mixed_scripts=False) as client:
        mixed = client.post(
            "/auth/register", json={"email": "\u0430dmin@example.com", "password": PASSWORD}
        )
        assert mixed.status_code == 201, mixed.text
        # Invisible characters stay refused whatever the setting.
        hidden = client.post(
            "/auth/register", json={"email": "ad\u200bmin@example.com", "password": PASSWORD}
        )
        assert hidden.status_code == 422


# Finding 9 -------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_registration", [False, True])
def test_the_bootstrap_admin_registers_only_from_the_servers_own_machine(
    tmp_path: Path, allow_registration: bool
) -> None:
    boss = {"email": "boss@example.com", "password": PASSWORD}
    with server(
        tmp_path, bootstrap_admin_email="Boss@Example.com", allow_registration=allow_registration
    ) as client:
        # uvicorn believes the test's own 127.0.0.1 about X-Forwarded-For: these are a
        # remote client behind a proxy, and a client claiming to be local.
        for forwarded in ("203.0.113.7", "127.0.0.1"):
            refused = client.post(
                "/auth/register", json=boss, headers={"X-Forwarded-For": forwarded}
            )
            assert refused.status_code == 403, refused.text
            assert "loopback" in refused.json()["detail"]
        first = client.post("/auth/register", json=boss)  # from 127.0.0.1 itself
        assert first.status_code == 201, first.text
        assert first.json()["role"] == "admin"
