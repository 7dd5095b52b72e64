"""User persistence on advanced-alchemy's repository service."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from modules.users.models import User


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


provide_users_service = create_service_provider(UserService)
