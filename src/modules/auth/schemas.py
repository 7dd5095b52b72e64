"""Request and response bodies of the /auth routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from modules.auth.models import ApiKey
from modules.users.schemas import Email, Password, UserRead

JwtString = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: JwtString


class TokenResponse(msgspec.Struct):
    """RFC 6749 token response, so OAuth2 password-flow clients understand it too."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
    # Days until the key stops working; absent means it does not expire.
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None


class ApiKeyRead(msgspec.Struct):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_model(cls, key: ApiKey) -> ApiKeyRead:
        return msgspec.convert(key, cls, from_attributes=True)


class ApiKeyCreated(msgspec.Struct):
    """The only answer that holds the secret: store it now, it cannot be shown again."""

    id: uuid.UUID
    name: str
    prefix: str
    key: str
    created_at: datetime
    expires_at: datetime | None


class SessionRead(msgspec.Struct):
    """The browser session: who is logged in, and the token that state-changing requests
    made with the session cookie send in the `X-CSRF-Token` header."""

    user: UserRead
    csrf_token: str
    expires_at: datetime
