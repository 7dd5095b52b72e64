"""/auth routes: register, login (JSON or OAuth2 password form), refresh, logout."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.params import FromPath, JSONBody
from litestar.security.jwt import Token
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from modules.auth.api_keys import ApiKeyService
from modules.auth.guards import requires_login_session
from modules.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
)
from modules.auth.service import AuthService, TokenPair
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

    @post("/register", status_code=HTTP_201_CREATED, exclude_from_auth=True)
    async def register(
        self,
        data: JSONBody[RegisterRequest],
        auth_service: NamedDependency[AuthService],
    ) -> UserRead:
        """Create an account with the `user` role (403 when ALLOW_REGISTRATION=false)."""
        user = await auth_service.sign_up(data.email, data.password)
        return UserRead.from_model(user)

    @post("/login", status_code=200, exclude_from_auth=True)
    async def login(
        self,
        request: Request[Any, Any, Any],
        auth_service: NamedDependency[AuthService],
    ) -> TokenResponse:
        """Log in with `{"email", "password"}` as JSON, or `username`/`password` as an
        OAuth2 password-grant form (`application/x-www-form-urlencoded`)."""
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

    @post("/refresh", status_code=200, exclude_from_auth=True)
    async def refresh(
        self, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AuthService]
    ) -> TokenResponse:
        """Trade a refresh token for a new pair; each refresh token works once."""
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

    @get("/")
    async def list_keys(
        self, request: Request[User, Any, Any], api_key_service: NamedDependency[ApiKeyService]
    ) -> list[ApiKeyRead]:
        """One's own keys, newest first, without their secrets."""
        return [ApiKeyRead.from_model(k) for k in await api_key_service.list_for(request.user.id)]

    @delete("/{key_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def revoke_key(
        self,
        request: Request[User, Any, Any],
        key_id: FromPath[uuid.UUID],
        api_key_service: NamedDependency[ApiKeyService],
    ) -> None:
        """Revoke a key: it stops working at once."""
        await api_key_service.revoke(request.user.id, key_id)
