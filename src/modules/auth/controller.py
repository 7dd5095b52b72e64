"""/auth routes: register, login (JSON or OAuth2 password form), refresh, logout, the
browser session (cookie and CSRF token), API keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.params import FromPath, JSONBody
from litestar.security.jwt import Token
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from modules.auth.api_keys import ApiKeyService
from modules.auth.gate import UNAUTHENTICATED_BODY_LIMIT, login_gate, registration_gate
from modules.auth.guards import login_family, requires_login_session
from modules.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    SessionRead,
    TokenResponse,
)
from modules.auth.service import AuthService, TokenPair
from modules.auth.sessions import cleared_session_cookie, csrf_token, session_cookie
from modules.auth.tokens import TokenCodec
from modules.users.models import User
from modules.users.schemas import UserRead


def _token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


def _decode_login(body: bytes) -> LoginRequest:
    try:
        return msgspec.json.decode(body, type=LoginRequest)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"invalid login body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ClientException("malformed JSON body") from exc


def _login_request(fields: dict[str, str]) -> LoginRequest:
    """The form's fields under the JSON body's rules (lengths included)."""
    try:
        return msgspec.convert(fields, LoginRequest)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"invalid login form: {exc}") from exc


class AuthController(Controller):
    path = "/auth"
    tags = ("auth",)

    @post(
        "/register",
        status_code=HTTP_201_CREATED,
        exclude_from_auth=True,
        guards=[registration_gate],
        request_max_body_size=UNAUTHENTICATED_BODY_LIMIT,
    )
    async def register(
        self,
        data: JSONBody[RegisterRequest],
        auth_service: NamedDependency[AuthService],
    ) -> UserRead:
        """Create an account with the `user` role (403 when ALLOW_REGISTRATION=false).
        The body is at most 16 KiB, and counted against the address before it is read."""
        user = await auth_service.sign_up(data.email, data.password)
        return UserRead.from_model(user)

    @post(
        "/login",
        status_code=200,
        exclude_from_auth=True,
        guards=[login_gate],
        request_max_body_size=UNAUTHENTICATED_BODY_LIMIT,
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        auth_service: NamedDependency[AuthService],
    ) -> TokenResponse:
        """Log in with `{"email", "password"}` as JSON, or `username`/`password` as an
        OAuth2 password-grant form (`application/x-www-form-urlencoded`). A form or
        plain-text body is accepted only from this site's own pages or from programs (no
        Origin header): one from another site is a 403 that counts against nothing. The
        body is at most 16 KiB, and counted against the address before it is read."""
        if request.content_type[0] == RequestEncodingType.URL_ENCODED:
            form = await request.form()
            grant_type = form.get("grant_type")
            if grant_type not in (None, "", "password"):
                raise ClientException("grant_type must be 'password'")
            username, password = form.get("username"), form.get("password")
            if not isinstance(username, str) or not isinstance(password, str):
                raise ValidationException("form fields 'username' and 'password' are required")
            credentials = _login_request({"email": username, "password": password})
        else:
            credentials = _decode_login(await request.body())
        pair = await auth_service.login(credentials.email, credentials.password)
        return _token_response(pair)

    @post(
        "/refresh",
        status_code=200,
        exclude_from_auth=True,
        guards=[login_gate],
        request_max_body_size=UNAUTHENTICATED_BODY_LIMIT,
    )
    async def refresh(
        self, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AuthService]
    ) -> TokenResponse:
        """Trade a refresh token for a new pair; each refresh token works once. Counted
        like a login attempt against the address, before the body is read."""
        return _token_response(await auth_service.refresh(data.refresh_token))

    @post("/logout", status_code=HTTP_204_NO_CONTENT)
    async def logout(
        self,
        request: Request[User, Any, Any],
        auth_service: NamedDependency[AuthService],
    ) -> None:
        """End this login: its refresh tokens and access tokens stop working at once."""
        if not isinstance(request.auth, Token):
            raise ClientException(
                "logout ends a login session; revoke an API key with DELETE /auth/api-keys/{id}"
            )
        await auth_service.logout(uuid.UUID(str(request.auth.extras["fam"])))

    @post("/logout-all", status_code=HTTP_204_NO_CONTENT, guards=[requires_login_session])
    async def logout_everywhere(
        self, request: Request[User, Any, Any], auth_service: NamedDependency[AuthService]
    ) -> None:
        """End every login of this account, this one included (API keys stay: revoke them
        with DELETE /auth/api-keys/{id})."""
        await auth_service.end_logins(request.user.id)


def _is_https(request: Request[Any, Any, Any]) -> bool:
    # uvicorn sets the scheme from X-Forwarded-Proto only for TRUSTED_PROXIES.
    return request.url.scheme == "https"


class SessionController(Controller):
    """The chat page's login: a session cookie scripts cannot read, plus a CSRF token."""

    path = "/auth/session"
    tags = ("auth",)

    @post(
        "/",
        status_code=200,
        exclude_from_auth=True,
        guards=[login_gate],
        request_max_body_size=UNAUTHENTICATED_BODY_LIMIT,
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        auth_service: NamedDependency[AuthService],
        token_codec: NamedDependency[TokenCodec],
    ) -> Response[SessionRead]:
        """Log in with `{"email", "password"}` and get the `llm_session` cookie (HttpOnly,
        SameSite=Strict, Secure over HTTPS). Only JSON is accepted: a cross-site form
        cannot send it, so no other site can log a browser into its own account."""
        if request.content_type[0] != RequestEncodingType.JSON:
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail="send the credentials as application/json",
            )
        credentials = _decode_login(await request.body())
        user, access, family = await auth_service.start_session(
            credentials.email, credentials.password
        )
        return Response(
            SessionRead(
                user=UserRead.from_model(user),
                csrf_token=csrf_token(token_codec.secret, family),
                expires_at=access.expires_at,
            ),
            cookies=[
                session_cookie(
                    access.token,
                    max_age=int(token_codec.refresh_ttl.total_seconds()),
                    secure=_is_https(request),
                )
            ],
        )

    @get("/")
    async def current(
        self, request: Request[User, Any, Any], token_codec: NamedDependency[TokenCodec]
    ) -> SessionRead:
        """Who is logged in, and the CSRF token of this login (after a page reload, the
        page asks here: it cannot read the cookie)."""
        family = login_family(request.auth)
        if family is None:
            raise ClientException("an API key has no session; log in with your password")
        return SessionRead(
            user=UserRead.from_model(request.user),
            csrf_token=csrf_token(token_codec.secret, family),
            expires_at=request.auth.exp,  # Litestar's Token keeps it in UTC
        )

    @delete("/", status_code=HTTP_204_NO_CONTENT)
    async def end(
        self, request: Request[User, Any, Any], auth_service: NamedDependency[AuthService]
    ) -> Response[None]:
        """Log out: the login ends everywhere at once, and the cookie is cleared."""
        family = login_family(request.auth)
        if family is None:
            raise ClientException("an API key has no session; revoke it instead")
        await auth_service.logout(family)
        return Response(
            None,
            status_code=HTTP_204_NO_CONTENT,
            cookies=[cleared_session_cookie(secure=_is_https(request))],
        )


class ApiKeyController(Controller):
    path = "/auth/api-keys"
    tags = ("auth",)

    @post("/", status_code=HTTP_201_CREATED, guards=[requires_login_session])
    async def create_key(
        self,
        request: Request[User, Any, Any],
        data: JSONBody[ApiKeyCreate],
        api_key_service: NamedDependency[ApiKeyService],
    ) -> ApiKeyCreated:
        """Create a key for programs; the secret is in this answer only. Needs a login:
        an API key cannot make keys."""
        expires_at = (
            datetime.now(UTC) + timedelta(days=data.expires_in_days)
            if data.expires_in_days
            else None
        )
        key, secret = await api_key_service.issue(request.user.id, data.name, expires_at)
        return ApiKeyCreated(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            key=secret,
            created_at=key.created_at,
            expires_at=key.expires_at,
        )

    @get("/", guards=[requires_login_session])
    async def list_keys(
        self, request: Request[User, Any, Any], api_key_service: NamedDependency[ApiKeyService]
    ) -> list[ApiKeyRead]:
        """One's own keys, newest first, without their secrets. Needs a login: an API key
        cannot manage keys."""
        return [ApiKeyRead.from_model(k) for k in await api_key_service.list_for(request.user.id)]

    @delete("/{key_id:uuid}", status_code=HTTP_204_NO_CONTENT, guards=[requires_login_session])
    async def revoke_key(
        self,
        request: Request[User, Any, Any],
        key_id: FromPath[uuid.UUID],
        api_key_service: NamedDependency[ApiKeyService],
    ) -> None:
        """Revoke a key: it stops working at once. Needs a login: a key that leaked must
        not be able to revoke the owner's other keys."""
        await api_key_service.revoke(request.user.id, key_id)
