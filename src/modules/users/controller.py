"""/users routes: one's own account, and admin user management."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from advanced_alchemy.filters import LimitOffset, OrderBy
from litestar import Controller, Request, delete, get, patch
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.security.jwt import Token
from litestar.status_codes import HTTP_204_NO_CONTENT, HTTP_409_CONFLICT

from modules.auth.passwords import PasswordHasher
from modules.auth.policy import password_problems
from modules.auth.security import requires_admin
from modules.config import Settings
from modules.users.models import ROLE_ADMIN, User
from modules.users.schemas import UserAdminUpdate, UserPage, UserRead, UserSelfUpdate
from modules.users.service import UserService, normalize_email


class PasswordRejected(HTTPException):
    status_code = 422


class UserController(Controller):
    path = "/users"
    tags = ("users",)

    @get("/me")
    async def me(self, request: Request[User, Token, Any]) -> UserRead:
        return UserRead.from_model(request.user)

    @patch("/me")
    async def update_me(
        self,
        request: Request[User, Token, Any],
        data: JSONBody[UserSelfUpdate],
        users_service: NamedDependency[UserService],
        password_hasher: NamedDependency[PasswordHasher],
        settings: NamedDependency[Settings],
    ) -> UserRead:
        """Change one's email or password; `current_password` must be right."""
        user = request.user
        matches, _ = await password_hasher.verify(data.current_password, user.password_hash)
        if not matches:
            raise PasswordRejected(detail="current_password is wrong")
        if data.email is not None:
            email = normalize_email(data.email)
            other = await users_service.get_by_email(email)
            if other is not None and other.id != user.id:
                raise HTTPException(
                    status_code=HTTP_409_CONFLICT, detail=f"email {email} is already in use"
                )
            user.email = email
        if data.new_password is not None:
            problems = password_problems(
                data.new_password, min_length=settings.password_min_length, email=user.email
            )
            if problems:
                raise PasswordRejected(detail="new_password " + "; ".join(problems))
            user.password_hash = await password_hasher.hash(data.new_password)
        user = await users_service.update(user, auto_commit=True)
        return UserRead.from_model(user)

    @get("/", guards=[requires_admin])
    async def list_users(
        self,
        users_service: NamedDependency[UserService],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> UserPage:
        """Every user, oldest first (admin)."""
        users, total = await users_service.get_many_and_count(
            OrderBy("created_at", "asc"), LimitOffset(limit=limit, offset=offset)
        )
        return UserPage(
            items=[UserRead.from_model(u) for u in users], total=total, limit=limit, offset=offset
        )

    @get("/{user_id:uuid}", guards=[requires_admin])
    async def get_user(
        self, user_id: FromPath[uuid.UUID], users_service: NamedDependency[UserService]
    ) -> UserRead:
        return UserRead.from_model(await _get_or_404(users_service, user_id))

    @patch("/{user_id:uuid}", guards=[requires_admin])
    async def update_user(
        self,
        request: Request[User, Token, Any],
        user_id: FromPath[uuid.UUID],
        data: JSONBody[UserAdminUpdate],
        users_service: NamedDependency[UserService],
    ) -> UserRead:
        """Change a user's role or deactivate them; their tokens follow at once."""
        user = await _get_or_404(users_service, user_id)
        if user.id == request.user.id and (
            data.is_active is False or (data.role is not None and data.role != ROLE_ADMIN)
        ):
            raise HTTPException(
                status_code=HTTP_409_CONFLICT,
                detail="admins cannot demote or deactivate themselves",
            )
        if data.role is not None:
            user.role = data.role
        if data.is_active is not None:
            user.is_active = data.is_active
        user = await users_service.update(user, auto_commit=True)
        return UserRead.from_model(user)

    @delete("/{user_id:uuid}", guards=[requires_admin], status_code=HTTP_204_NO_CONTENT)
    async def delete_user(
        self,
        request: Request[User, Token, Any],
        user_id: FromPath[uuid.UUID],
        users_service: NamedDependency[UserService],
    ) -> None:
        """Delete a user and everything they own."""
        if user_id == request.user.id:
            raise HTTPException(
                status_code=HTTP_409_CONFLICT, detail="admins cannot delete themselves"
            )
        await _get_or_404(users_service, user_id)
        await users_service.delete(user_id, auto_commit=True)


async def _get_or_404(users_service: UserService, user_id: uuid.UUID) -> User:
    user = await users_service.get_one_or_none(User.id == user_id)
    if user is None:
        raise NotFoundException(f"no user with id {user_id}")
    return user
