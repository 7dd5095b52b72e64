"""User persistence on advanced-alchemy's repository service, and the admin rules."""

from __future__ import annotations

import uuid

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from modules.users.models import ROLE_ADMIN, User


class UserNotFoundError(LookupError):
    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"no user with id {user_id}")


class SelfLockoutError(ValueError):
    """An admin tried to demote, deactivate or delete themselves."""


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively: they are stored trimmed and lower-cased."""
    return email.strip().lower()


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    """CRUD on users plus the look-ups auth needs."""

    repository_type = UserRepository

    async def get_by_email(self, email: str) -> User | None:
        return await self.get_one_or_none(User.email == normalize_email(email))

    async def get_existing(self, user_id: uuid.UUID) -> User:
        user = await self.get_one_or_none(User.id == user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        return user

    async def change_access(
        self, actor: User, user_id: uuid.UUID, *, role: str | None, is_active: bool | None
    ) -> User:
        """An admin changes a user's role or deactivates them (never themselves)."""
        user = await self.get_existing(user_id)
        if user.id == actor.id and (
            is_active is False or (role is not None and role != ROLE_ADMIN)
        ):
            raise SelfLockoutError("admins cannot demote or deactivate themselves")
        if role is not None:
            user.role = role
        if is_active is not None:
            user.is_active = is_active
        return await self.update(user)

    async def remove(self, actor: User, user_id: uuid.UUID) -> None:
        """Delete a user and everything they own (ON DELETE CASCADE)."""
        if user_id == actor.id:
            raise SelfLockoutError("admins cannot delete themselves")
        await self.get_existing(user_id)
        await self.delete(user_id)


provide_users_service = create_service_provider(UserService)
