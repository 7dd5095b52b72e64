"""Request authentication (Litestar's OAuth2 bearer JWT backend) and role guards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AuthenticationResult
from litestar.security.jwt import (
    JWTCookieAuthenticationMiddleware,
    OAuth2PasswordBearerAuth,
    Token,
)
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.api_keys import looks_like_api_key, resolve_api_key
from modules.auth.service import active_user_of_login
from modules.auth.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, csrf_matches
from modules.auth.tokens import ALGORITHM, REQUIRED_CLAIMS, TokenCodec
from modules.users import User, requires_admin

SessionProvider = Callable[[ASGIConnection[Any, Any, Any, Any]], AsyncSession]
# Called with the request's credential and scope before anything is read for it; raising
# refuses the request (rate limiting's remembered refusals).
CredentialCheck = Callable[[str, Any], Awaitable[None]]


def build_jwt_auth(
    codec: TokenCodec,
    session_provider: SessionProvider,
    *,
    exclude: Sequence[str],
    before_reading: CredentialCheck | None = None,
) -> OAuth2PasswordBearerAuth[User, Token]:
    """Bearer-token auth for every route but `exclude`.

    The user is re-read on every request, so a deactivated or deleted user (and a logged-out
    login) stops working at once, not when the access token expires.
    """

    async def retrieve_user(
        token: Token, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> User | None:
        if token.extras.get("type") != "access":
            return None
        try:
            user_id = uuid.UUID(token.sub)
            family_id = uuid.UUID(str(token.extras.get("fam")))
        except ValueError:
            return None
        user = await active_user_of_login(session_provider(connection), user_id, family_id)
        if user is not None:
            connection.scope.setdefault("state", {})["user_id"] = str(user.id)  # the log line
        return user

    class BearerAuthenticationMiddleware(JWTCookieAuthenticationMiddleware):
        """A bearer credential is either one of our JWTs or an API key (`llms_...`); the
        chat page's session cookie holds a JWT, and needs the CSRF header to change
        anything. No other cookie is read (Litestar's default would take a `token` one)."""

        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            bearer = connection.headers.get(self.auth_header, "").partition(" ")[-1]
            if bearer:
                if before_reading is not None:
                    await before_reading(bearer, connection.scope)
                return await self.authenticate_token(bearer, connection)
            cookie = connection.cookies.get(SESSION_COOKIE, "")
            if not cookie or looks_like_api_key(cookie):
                raise NotAuthorizedException("no bearer token, API key or session cookie")
            if before_reading is not None:
                await before_reading(cookie, connection.scope)
            result = await self.authenticate_token(cookie, connection)
            if connection.scope.get("method") not in SAFE_METHODS:
                family = uuid.UUID(str(result.auth.extras["fam"]))
                if not csrf_matches(codec.secret, family, connection.headers.get(CSRF_HEADER)):
                    raise PermissionDeniedException(
                        f"missing or wrong {CSRF_HEADER} header: a request made with the "
                        "session cookie must send the token from GET /auth/session"
                    )
            return result

        async def authenticate_token(
            self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            session = session_provider(connection)
            try:
                result = await self._authenticate(encoded_token, connection)
            except BaseException:
                # A read that failed (the database restarting, say) leaves a transaction
                # that cannot commit: a commit would raise PendingRollbackError in place of
                # the read's own error, which the error mapping answers (503 when the
                # database is unavailable). Roll back; the read's error is the answer.
                with contextlib.suppress(Exception):
                    await session.rollback()
                raise
            # The reads are done: end their transaction, so that the request holds no
            # pooled connection while it works (a turn opens sessions of its own, and may
            # wait for a model). Held, N concurrent turns could take every connection and
            # wait for one more: the pool's timeout, then errors.
            await session.commit()
            return result

        async def _authenticate(
            self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            if not looks_like_api_key(encoded_token):
                return await super().authenticate_token(encoded_token, connection)
            resolved = await resolve_api_key(session_provider(connection), encoded_token)
            if resolved is None:
                raise NotAuthorizedException("invalid, expired or revoked API key")
            user, key = resolved
            connection.scope.setdefault("state", {})["user_id"] = str(user.id)
            return AuthenticationResult(user=user, auth=key)

    return OAuth2PasswordBearerAuth[User, Token](
        authentication_middleware_class=BearerAuthenticationMiddleware,
        token_secret=codec.secret,
        token_url="/auth/login",  # noqa: S106 (a URL, not a password)
        key=SESSION_COOKIE,
        retrieve_user_handler=retrieve_user,
        algorithm=ALGORITHM,
        require_claims=list(REQUIRED_CLAIMS),
        accepted_issuers=[codec.issuer],
        exclude=list(exclude),
        description="Access token from /auth/login.",
    )


__all__ = [
    "build_jwt_auth",
    "requires_admin",
]
