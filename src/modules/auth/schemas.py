"""Request and response bodies of the /auth routes."""

from __future__ import annotations

from typing import Annotated

import msgspec

from modules.users.schemas import Email, Password

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
