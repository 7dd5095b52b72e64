"""Refresh-token rotation, reuse detection and registration rules, on the auth service
itself (SQLite)."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import argon2
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.database import metadata
from modules.auth import AuthError, AuthService, PasswordHasher, RegistrationClosedError, TokenCodec
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


async def test_passwords_are_nfkc_normalized_and_old_hashes_upgrade(auth: AuthService) -> None:
    precomposed, combining = "caf\u00e9-password-1", "cafe\u0301-password-1"
    await auth.register("e@example.com", precomposed)
    assert (await auth.login("e@example.com", combining)).access_token
    # A hash made before normalization (argon2id of the password as typed, at the fixture's
    # cost) still verifies, and the login replaces it with the hash of the normalized password.
    user = await auth.users.get_by_email("e@example.com")
    assert user is not None
    typed = argon2.PasswordHasher(memory_cost=1024, time_cost=1, parallelism=1)
    user.password_hash = typed.hash(combining)
    await auth.users.update(user)
    assert not (await auth.hasher.verify(precomposed, user.password_hash))[0]
    assert (await auth.login("e@example.com", combining)).access_token
    upgraded = await auth.users.get_by_email("e@example.com")
    assert upgraded is not None
    # The stored hash is now the normalized password's, and current.
    assert await auth.hasher.verify(precomposed, upgraded.password_hash) == (True, None)
    assert (await auth.login("e@example.com", precomposed)).access_token


async def test_the_bootstrap_email_becomes_the_first_admin_only(auth: AuthService) -> None:
    auth.allow_registration = False
    auth.bootstrap_admin_email = "boss@example.com"
    first = await auth.sign_up("Boss@Example.com", PASSWORD)
    assert first.role == "admin"
    with pytest.raises(RegistrationClosedError):
        await auth.sign_up("someone@example.com", PASSWORD)  # registration stays closed
    await auth.users.delete(first.id)
    auth.allow_registration = True
    await auth.register("admin2@example.com", PASSWORD, role="admin")
    # Once an admin exists, the bootstrap email is an ordinary account.
    assert (await auth.sign_up("boss@example.com", PASSWORD)).role == "user"
