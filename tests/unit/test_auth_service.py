"""Refresh-token rotation, reuse detection and registration rules, on the auth service
itself (SQLite)."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import argon2
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.database import metadata
from modules.auth import (
    AuthError,
    AuthService,
    PasswordHasher,
    PasswordPolicyError,
    RegistrationClosedError,
    TokenCodec,
)
from modules.auth.service import INVALID_CREDENTIALS
from modules.users import UserService

SECRET = "unit-secret-" + "x" * 40
PASSWORD = "correct-horse-42"


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata().create_all)
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield service(session)
    await engine.dispose()


def service(session: AsyncSession) -> AuthService:
    codec = TokenCodec(
        SECRET, issuer="test", access_ttl=timedelta(minutes=5), refresh_ttl=timedelta(days=1)
    )
    hasher = PasswordHasher(memory_kib=1024, rounds=1)  # fast: the rules are the subject
    return AuthService(session, UserService(session=session), hasher, codec, password_min_length=8)


async def test_each_refresh_token_works_once_and_reuse_ends_the_login(auth: AuthService) -> None:
    await auth.register("a@example.com", PASSWORD)
    first = await auth.login("a@example.com", PASSWORD)
    second = await auth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    third = await auth.refresh(second.refresh_token)
    # Replaying a used token is theft: the whole family (this login) is revoked...
    with pytest.raises(AuthError, match="already used"):
        await auth.refresh(first.refresh_token)
    # ...so even the newest token of that login stops working.
    with pytest.raises(AuthError):
        await auth.refresh(third.refresh_token)
    # Another login of the same user is a family of its own and keeps working.
    other = await auth.login("a@example.com", PASSWORD)
    assert (await auth.refresh(other.refresh_token)).refresh_token


async def test_access_tokens_are_not_refresh_tokens(auth: AuthService) -> None:
    await auth.register("b@example.com", PASSWORD)
    pair = await auth.login("b@example.com", PASSWORD)
    with pytest.raises(AuthError, match="invalid refresh token"):
        await auth.refresh(pair.access_token)


async def test_logout_revokes_the_family(auth: AuthService) -> None:
    await auth.register("c@example.com", PASSWORD)
    pair = await auth.login("c@example.com", PASSWORD)
    claims = auth.codec.decode(pair.refresh_token, "refresh")
    await auth.logout(claims["fam"])
    with pytest.raises(AuthError):
        await auth.refresh(pair.refresh_token)


async def test_sign_up_obeys_allow_registration(auth: AuthService) -> None:
    auth.allow_registration = False
    with pytest.raises(RegistrationClosedError):
        await auth.sign_up("d@example.com", PASSWORD)
    # An operator (create-admin) still registers users directly.
    assert (await auth.register("d@example.com", PASSWORD)).email == "d@example.com"


async def test_unknown_email_costs_what_a_wrong_password_does(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'timing.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata().create_all)
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        auth = service(session)
        auth.hasher = PasswordHasher()  # the real OWASP parameters
        await auth.register("t@example.com", PASSWORD)

        async def attempt(email: str) -> float:
            started = time.perf_counter()
            with pytest.raises(AuthError, match="invalid email or password"):
                await auth.authenticate(email, "wrong-password-1")
            return time.perf_counter() - started

        # Interleaved, so that a busy machine slows both paths alike.
        wrong, unknown = [], []
        for i in range(5):
            wrong.append(await attempt("t@example.com"))
            unknown.append(await attempt(f"ghost-{i}@example.com"))
    await engine.dispose()
    # Both paths verify an argon2 hash: a missing dummy hash would be ~100x faster. The
    # bounds leave room for a loaded 2-core machine.
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.2 < ratio < 5.0, ratio


async def test_passwords_are_nfkc_normalized(auth: AuthService) -> None:
    precomposed, combining = "caf\u00e9-password-1", "cafe\u0301-password-1"
    await auth.register("e@example.com", precomposed)
    assert (await auth.login("e@example.com", combining)).access_token
    wide = "\uff23\uff41\uff46\uff45-password-1"  # full-width "Cafe"
    await auth.register("w@example.com", "Cafe-password-1")
    assert (await auth.login("w@example.com", wide)).access_token


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many argon2 verifications and hashes run (passlib calls argon2-cffi's low-level
    functions through the module, so they can be counted there)."""
    calls = {"verify": 0, "hash": 0}
    verify_secret, hash_secret = argon2.low_level.verify_secret, argon2.low_level.hash_secret

    def counted_verify(*args: Any, **kwargs: Any) -> Any:
        calls["verify"] += 1
        return verify_secret(*args, **kwargs)

    def counted_hash(*args: Any, **kwargs: Any) -> Any:
        calls["hash"] += 1
        return hash_secret(*args, **kwargs)

    monkeypatch.setattr(argon2.low_level, "verify_secret", counted_verify)
    monkeypatch.setattr(argon2.low_level, "hash_secret", counted_hash)
    return calls


@pytest.mark.parametrize(
    "password",
    [
        "wrong-password-1",
        "\uff37\uff32\uff2f\uff2e\uff27-password-1",  # NFKC changes it: was hashed twice
        "\ufdfa" * 250,  # over 4096 bytes once normalized: no hash at all, or a 500
        "\ufdfa" * 250 + "1",
        "x" * 5000,
    ],
    ids=["wrong", "full-width", "expanding", "expanding-digit", "long"],
)
async def test_a_failed_login_is_one_argon2_verify_for_known_and_unknown_emails(
    auth: AuthService, argon2_calls: dict[str, int], password: str
) -> None:
    await auth.register("known@example.com", PASSWORD)
    for email in ("known@example.com", "unknown@example.com"):
        argon2_calls.update(verify=0, hash=0)
        with pytest.raises(AuthError) as failed:
            await auth.authenticate(email, password)
        assert (failed.value.status_code, failed.value.detail) == (401, INVALID_CREDENTIALS)
        assert argon2_calls == {"verify": 1, "hash": 0}, (email, argon2_calls)


async def test_a_password_over_4096_bytes_once_normalized_is_refused_before_hashing(
    auth: AuthService, argon2_calls: dict[str, int]
) -> None:
    with pytest.raises(PasswordPolicyError, match="4096 bytes"):
        await auth.register("long@example.com", "\ufdfa" * 250 + "1")
    assert argon2_calls == {"verify": 0, "hash": 0}


async def test_the_bootstrap_email_becomes_the_first_admin_only(auth: AuthService) -> None:
    auth.allow_registration = False
    auth.bootstrap_admin_email = "boss@example.com"
    auth.client_is_local = True  # from the server's own machine
    first = await auth.sign_up("Boss@Example.com", PASSWORD)
    assert first.role == "admin"
    with pytest.raises(RegistrationClosedError):
        await auth.sign_up("someone@example.com", PASSWORD)  # registration stays closed
    await auth.users.delete(first.id)
    auth.allow_registration = True
    await auth.register("admin2@example.com", PASSWORD, role="admin")
    # Once an admin exists, the bootstrap email is an ordinary account.
    assert (await auth.sign_up("boss@example.com", PASSWORD)).role == "user"


async def test_the_bootstrap_email_is_refused_from_anywhere_else(auth: AuthService) -> None:
    auth.bootstrap_admin_email = "boss@example.com"
    for allow_registration in (False, True):
        auth.allow_registration = allow_registration
        with pytest.raises(RegistrationClosedError, match="loopback"):
            await auth.sign_up("boss@example.com", PASSWORD)
    assert await auth.users.get_by_email("boss@example.com") is None
