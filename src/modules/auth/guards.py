"""Who may do what: what an API key must not do needs a password-confirmed login."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import Token


def requires_login_session(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the caller logged in with a password (a JWT), not with an API key. What an
    API key must not do (make, list or revoke keys, end logins) needs a password-confirmed
    login."""
    if not isinstance(connection.auth, Token):
        raise PermissionDeniedException(
            "an API key cannot do this; log in with your password (POST /auth/login)"
        )


def login_family(auth: object) -> uuid.UUID | None:
    """The refresh-token family (the login) of a JWT-authenticated request, else None."""
    if isinstance(auth, Token):
        return uuid.UUID(str(auth.extras["fam"]))
    return None
