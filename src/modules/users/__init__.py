"""Users: the account table, its service and the /users routes."""

from litestar import Router
from litestar.di import Provide

from modules.users.models import ROLE_ADMIN, ROLE_USER, User
from modules.users.service import UserService, normalize_email, provide_users_service


def create_router() -> Router:
    # Imported here: the controller uses auth (hashing, guards), and auth imports the User
    # model from this package, so importing it at package load would be circular.
    from modules.users.controller import UserController

    return Router(
        path="/",
        route_handlers=[UserController],
        dependencies={"users_service": Provide(provide_users_service)},
    )


__all__ = [
    "ROLE_ADMIN",
    "ROLE_USER",
    "User",
    "UserService",
    "create_router",
    "normalize_email",
    "provide_users_service",
]
