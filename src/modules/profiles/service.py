"""Profile storage (advanced-alchemy repository service) and its naming rule."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService

from modules.profiles.models import Profile
from modules.profiles.schemas import ProfileCreate, ProfileUpdate


class ProfileNotFoundError(LookupError):
    """Says nothing of the profiles that exist: their names are the admins' to list."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no profile named {name!r}")


class ProfileIdNotFoundError(LookupError):
    def __init__(self, profile_id: uuid.UUID) -> None:
        super().__init__(f"no profile with id {profile_id}")


class ProfileNameTakenError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"profile {name!r} exists")


def _normal(name: str) -> str:
    return name.strip().lower()


def _settings_dict(settings: object) -> dict[str, Any]:
    encoded: dict[str, Any] = msgspec.to_builtins(settings)
    return encoded


class ProfileRepository(SQLAlchemyAsyncRepository[Profile]):
    model_type = Profile


class ProfileService(SQLAlchemyAsyncRepositoryService[Profile, ProfileRepository]):
    repository_type = ProfileRepository

    async def by_name(self, name: str) -> Profile:
        profile = await self.get_one_or_none(Profile.name == _normal(name))
        if profile is None:
            raise ProfileNotFoundError(name)
        return profile

    async def get_existing(self, profile_id: uuid.UUID) -> Profile:
        profile = await self.get_one_or_none(Profile.id == profile_id)
        if profile is None:
            raise ProfileIdNotFoundError(profile_id)
        return profile

    async def add(self, data: ProfileCreate) -> Profile:
        name = _normal(data.name)
        await self._name_free(name)
        return await self.create(
            Profile(
                name=name,
                description=data.description,
                system_prompt=data.system_prompt,
                settings=_settings_dict(data.settings),
            )
        )

    async def change(self, profile_id: uuid.UUID, data: ProfileUpdate) -> Profile:
        profile = await self.get_existing(profile_id)
        if data.name is not None:
            name = _normal(data.name)
            await self._name_free(name, profile.id)
            profile.name = name
        if data.system_prompt is not None:
            profile.system_prompt = data.system_prompt
        if data.description is not None:
            profile.description = data.description
        if data.settings is not None:
            profile.settings = _settings_dict(data.settings)
        return await self.update(profile)

    async def remove(self, profile_id: uuid.UUID) -> None:
        await self.delete((await self.get_existing(profile_id)).id)

    async def _name_free(self, name: str, owner: uuid.UUID | None = None) -> None:
        other = await self.get_one_or_none(Profile.name == name)
        if other is not None and other.id != owner:
            raise ProfileNameTakenError(name)


provide_profile_service = create_service_provider(ProfileService)
