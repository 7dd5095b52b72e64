"""/users routes: one's own account, and admin user management."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from advanced_alchemy.filters import LimitOffset, OrderBy
from litestar import Controller, Request, delete, get, patch
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from modules.users.guards import requires_admin
from modules.users.models import User
from modules.users.ports import AccountSecurity
from modules.users.schemas import UserAdminUpdate, UserPage, UserRead, UserSelfUpdate
from modules.users.service import UserService

# Far past any real list, and inside what every database takes as an OFFSET.
MAX_OFFSET = 1_000_000_000


class UserController(Controller):
    path = "/users"
    tags = ("users",)

    @get("/me")
    async def me(self, request: Request[User, Any, Any]) -> UserRead:
        return UserRead.from_model(request.user)

    @patch("/me")
    async def update_me(
        self,
        request: Request[User, Any, Any],
        data: JSONBody[UserSelfUpdate],
        auth_service: NamedDependency[AccountSecurity],
    ) -> UserRead:
        """Change one's email or password; `current_password` must be right, and an API key
        cannot. Every other login and every API key of the account end."""
        user = await auth_service.update_credentials(request.user, data, request.auth)
        return UserRead.from_model(user)

    @get("/", guards=[requires_admin])
    async def list_users(
        self,
        users_service: NamedDependency[UserService],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> UserPage:
        """Every user, newest first (admin): a new account is on the first page."""
        users, total = await users_service.get_many_and_count(
            OrderBy("created_at", "desc"), LimitOffset(limit=limit, offset=offset)
        )
        return UserPage(
            items=[UserRead.from_model(u) for u in users], total=total, limit=limit, offset=offset
        )

    @get("/{user_id:uuid}", guards=[requires_admin])
    async def get_user(
        self, user_id: FromPath[uuid.UUID], users_service: NamedDependency[UserService]
    ) -> UserRead:
        return UserRead.from_model(await users_service.get_existing(user_id))

    @patch("/{user_id:uuid}", guards=[requires_admin])
    async def update_user(
        self,
        request: Request[User, Any, Any],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[UserAdminUpdate],
        users_service: NamedDependency[UserService],
        auth_service: NamedDependency[AccountSecurity],
    ) -> UserRead:
        """Change a user's role or deactivate them. Deactivation ends their logins and API
        keys for good: reactivating them does not bring those back."""
        user = await users_service.change_access(
            request.user, user_id, role=data.role, is_active=data.is_active
        )
        if data.is_active is False:
            await auth_service.end_all_sessions(user.id)
        return UserRead.from_model(user)

    @delete("/{user_id:uuid}", guards=[requires_admin], status_code=HTTP_204_NO_CONTENT)
    async def delete_user(
        self,
        request: Request[User, Any, Any],
        user_id: FromPath[uuid.UUID],
        users_service: NamedDependency[UserService],
    ) -> None:
        """Delete a user and everything they own."""
        await users_service.remove(request.user, user_id)
