"""Auth: password hashing, JWTs, refresh-token families, guards and the /auth routes."""

from litestar import Router
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.api_keys import ApiKeyAuth, ApiKeyService
from modules.auth.controller import ApiKeyController, AuthController
from modules.auth.models import RefreshToken
from modules.auth.passwords import PasswordHasher
from modules.auth.security import build_jwt_auth, requires_admin
from modules.auth.service import AuthService
from modules.auth.tokens import TokenCodec
from modules.config import Settings
from modules.users.service import UserService, provide_users_service


def provide_auth_service(
    db_session: NamedDependency[AsyncSession],
    users_service: NamedDependency[UserService],
    password_hasher: NamedDependency[PasswordHasher],
    token_codec: NamedDependency[TokenCodec],
    settings: NamedDependency[Settings],
) -> AuthService:
    return AuthService(
        db_session,
        users_service,
        password_hasher,
        token_codec,
        password_min_length=settings.password_min_length,
    )


def provide_api_key_service(db_session: NamedDependency[AsyncSession]) -> ApiKeyService:
    return ApiKeyService(db_session)


def create_router() -> Router:
    return Router(
        path="/",
        route_handlers=[AuthController, ApiKeyController],
        dependencies={
            "api_key_service": Provide(provide_api_key_service, sync_to_thread=False),
            "users_service": Provide(provide_users_service),
            "auth_service": Provide(provide_auth_service, sync_to_thread=False),
        },
    )


__all__ = [
    "ApiKeyAuth",
    "AuthService",
    "PasswordHasher",
    "RefreshToken",
    "TokenCodec",
    "build_jwt_auth",
    "create_router",
    "requires_admin",
]
