"""Profile storage (advanced-alchemy repository service)."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from modules.profiles.models import Profile


class ProfileNotFoundError(LookupError):
    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"no profile named {name!r}; available: {listed}")
        self.available = available


class ProfileRepository(SQLAlchemyAsyncRepository[Profile]):
    model_type = Profile


class ProfileService(SQLAlchemyAsyncRepositoryService[Profile, ProfileRepository]):
    repository_type = ProfileRepository

    async def by_name(self, name: str) -> Profile:
        profile = await self.get_one_or_none(Profile.name == name.strip().lower())
        if profile is None:
            names = [p.name for p in await self.get_many()]
            raise ProfileNotFoundError(name, sorted(names))
        return profile


provide_profile_service = create_service_provider(ProfileService)
