"""Users: the account table, its service, role guards and the /users routes.

Users sits below auth: auth imports it, never the reverse."""

from litestar import Router
from litestar.di import Provide

from modules.users.controller import UserController
from modules.users.guards import requires_admin
from modules.users.models import ROLE_ADMIN, ROLE_USER, User
from modules.users.service import (
    InvalidEmailError,
    SelfLockoutError,
    UserNotFoundError,
    UserService,
    checked_email,
    normalize_email,
    provide_users_service,
)


def create_router() -> Router:
    return Router(path="/", route_handlers=[UserController])


def providers() -> dict[str, Provide]:
    return {"users_service": Provide(provide_users_service)}


__all__ = [
    "ROLE_ADMIN",
    "ROLE_USER",
    "InvalidEmailError",
    "SelfLockoutError",
    "User",
    "UserNotFoundError",
    "UserService",
    "checked_email",
    "create_router",
    "normalize_email",
    "providers",
    "requires_admin",
]
