"""Token codec and password policy: pure logic."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest

from modules.auth.policy import password_problems
from modules.auth.tokens import InvalidTokenError, TokenCodec

SECRET = "k" * 40


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec(
        SECRET, issuer="test", access_ttl=timedelta(minutes=15), refresh_ttl=timedelta(days=7)
    )


def test_access_token_round_trip(codec: TokenCodec) -> None:
    user, family = uuid.uuid4(), uuid.uuid4()
    issued = codec.issue_access(user, "user", family)
    claims = codec.decode(issued.token, "access")
    assert claims["sub"] == user
    assert claims["fam"] == family
    assert claims["jti"] == issued.jti
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_types_are_not_interchangeable(codec: TokenCodec) -> None:
    refresh = codec.issue_refresh(uuid.uuid4(), uuid.uuid4())
    with pytest.raises(InvalidTokenError, match="not an access token"):
        codec.decode(refresh.token, "access")


def test_algorithm_is_pinned(codec: TokenCodec) -> None:
    claims = jwt.decode(
        codec.issue_access(uuid.uuid4(), "user", uuid.uuid4()).token,
        options={"verify_signature": False},
    )
    for algorithm, key in (("none", None), ("HS512", SECRET * 2)):
        forged = jwt.encode(claims, key, algorithm=algorithm)  # type: ignore[arg-type]
        with pytest.raises(InvalidTokenError):
            codec.decode(forged, "access")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "iss"])
def test_required_claims(codec: TokenCodec, claim: str) -> None:
    claims = jwt.decode(
        codec.issue_access(uuid.uuid4(), "user", uuid.uuid4()).token,
        options={"verify_signature": False},
    )
    del claims[claim]
    with pytest.raises(InvalidTokenError):
        codec.decode(jwt.encode(claims, SECRET, algorithm="HS256"), "access")


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("correct-horse-1", True),
        ("pässwörd-ß", True),
        ("short1!", False),
        ("onlyletters", False),
        ("1234567890", False),
        ("a@example.com", False),
    ],
)
def test_password_policy(password: str, ok: bool) -> None:
    assert (password_problems(password, min_length=8, email="a@example.com") == []) is ok
