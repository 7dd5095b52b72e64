"""Role guards. They read only the authenticated user, so they live with the users table
and auth re-exports them."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from modules.users.models import ROLE_ADMIN, User


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the authenticated user has the admin role. OPTIONS (which authentication
    skips, and which only lists the allowed methods) passes."""
    if connection.scope.get("method") == "OPTIONS":
        return
    user = connection.scope.get("user")
    if not isinstance(user, User):
        raise NotAuthorizedException("authentication required")
    if user.role != ROLE_ADMIN:
        raise PermissionDeniedException("this route requires the admin role")
