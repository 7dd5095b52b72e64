"""Auth: password hashing, JWTs, refresh-token families, API keys, guards, the /auth routes.
Its AuthService also changes credentials for PATCH /users/me (users' CredentialsChanger)."""

from typing import Any

from litestar import Request, Router
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.api_keys import ApiKeyAuth, ApiKeyNotFoundError, provide_api_key_service
from modules.auth.controller import ApiKeyController, AuthController, SessionController
from modules.auth.gate import client_address, is_local_client
from modules.auth.guards import requires_login_session
from modules.auth.models import ApiKey, RefreshToken
from modules.auth.passwords import PasswordHasher
from modules.auth.security import build_jwt_auth, requires_admin
from modules.auth.service import (
    ApiKeyNotAllowedError,
    AuthError,
    AuthService,
    EmailTakenError,
    PasswordPolicyError,
    RegistrationClosedError,
    WrongPasswordError,
)
from modules.auth.tokens import TokenCodec
from modules.config import Settings
from modules.ratelimit import RateLimiter
from modules.users import UserService


def create_router() -> Router:
    return Router(path="/", route_handlers=[AuthController, SessionController, ApiKeyController])


def providers(settings: Settings, codec: TokenCodec, hasher: PasswordHasher) -> dict[str, Provide]:
    def provide_auth_service(
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        users_service: NamedDependency[UserService],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> AuthService:
        return AuthService(
            db_session,
            users_service,
            hasher,
            codec,
            password_min_length=settings.password_min_length,
            allow_registration=settings.allow_registration,
            bootstrap_admin_email=settings.bootstrap_admin_email,
            refuse_mixed_scripts=settings.email_refuse_mixed_scripts,
            limiter=rate_limiter,
            client_ip=client_address(request),
            client_is_local=is_local_client(request),
        )

    return {
        "password_hasher": Provide(lambda: hasher, sync_to_thread=False, use_cache=True),
        "token_codec": Provide(lambda: codec, sync_to_thread=False, use_cache=True),
        "auth_service": Provide(provide_auth_service, sync_to_thread=False),
        "api_key_service": Provide(provide_api_key_service),
    }


__all__ = [
    "ApiKey",
    "ApiKeyAuth",
    "ApiKeyNotAllowedError",
    "ApiKeyNotFoundError",
    "AuthError",
    "AuthService",
    "EmailTakenError",
    "PasswordHasher",
    "PasswordPolicyError",
    "RefreshToken",
    "RegistrationClosedError",
    "TokenCodec",
    "WrongPasswordError",
    "build_jwt_auth",
    "create_router",
    "providers",
    "requires_admin",
    "requires_login_session",
]
