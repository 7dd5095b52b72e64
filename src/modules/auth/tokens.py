"""JWT issue and verification: HS256 pinned, `exp`/`iat`/`sub`/`jti` required, typed tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
TokenType = Literal["access", "refresh"]


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or of the wrong type."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: uuid.UUID
    expires_at: datetime


class TokenCodec:
    """Signs and verifies the service's access and refresh tokens."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
    ) -> None:
        self.secret = secret
        self.issuer = issuer
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def _issue(
        self, token_type: TokenType, subject: uuid.UUID, ttl: timedelta, extra: dict[str, Any]
    ) -> IssuedToken:
        now = datetime.now(UTC)
        jti = uuid.uuid4()
        expires_at = now + ttl
        claims = {
            "sub": str(subject),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": str(jti),
            "iss": self.issuer,
            "type": token_type,
            **extra,
        }
        return IssuedToken(jwt.encode(claims, self.secret, algorithm=ALGORITHM), jti, expires_at)

    def issue_access(
        self,
        user_id: uuid.UUID,
        role: str,
        family_id: uuid.UUID,
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        return self._issue(
            "access", user_id, ttl or self.access_ttl, {"role": role, "fam": str(family_id)}
        )

    def issue_refresh(self, user_id: uuid.UUID, family_id: uuid.UUID) -> IssuedToken:
        return self._issue("refresh", user_id, self.refresh_ttl, {"fam": str(family_id)})

    def decode(self, token: str, expected_type: TokenType) -> dict[str, Any]:
        """Verified claims of a token of the given type; raises InvalidTokenError otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": [*REQUIRED_CLAIMS, "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if claims.get("type") != expected_type:
            raise InvalidTokenError(f"not an {expected_type} token")
        try:
            claims["sub"] = uuid.UUID(str(claims["sub"]))
            claims["jti"] = uuid.UUID(str(claims["jti"]))
            claims["fam"] = uuid.UUID(str(claims["fam"]))
        except (KeyError, ValueError) as exc:
            raise InvalidTokenError("malformed claims") from exc
        return claims
