"""/admin/profiles: admin-managed profiles (CRUD)."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT, HTTP_409_CONFLICT

from modules.auth.security import requires_admin
from modules.profiles.models import Profile
from modules.profiles.schemas import ProfileCreate, ProfileRead, ProfileUpdate
from modules.profiles.service import ProfileService


def _settings_dict(settings: object) -> dict[str, object]:
    encoded: dict[str, object] = msgspec.to_builtins(settings)
    return encoded


class ProfileController(Controller):
    path = "/admin/profiles"
    tags = ("profiles",)
    guards = [requires_admin]  # noqa: RUF012

    @get("/")
    async def list_profiles(
        self, profile_service: NamedDependency[ProfileService]
    ) -> list[ProfileRead]:
        profiles = await profile_service.get_many()
        return [ProfileRead.from_model(p) for p in sorted(profiles, key=lambda p: p.name)]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_profile(
        self, data: JSONBody[ProfileCreate], profile_service: NamedDependency[ProfileService]
    ) -> ProfileRead:
        name = data.name.strip().lower()
        if await profile_service.get_one_or_none(Profile.name == name) is not None:
            raise HTTPException(status_code=HTTP_409_CONFLICT, detail=f"profile {name!r} exists")
        profile = await profile_service.create(
            Profile(
                name=name,
                description=data.description,
                system_prompt=data.system_prompt,
                settings=_settings_dict(data.settings),
            ),
            auto_commit=True,
        )
        return ProfileRead.from_model(profile)

    @get("/{profile_id:uuid}")
    async def get_profile(
        self, profile_id: FromPath[uuid.UUID], profile_service: NamedDependency[ProfileService]
    ) -> ProfileRead:
        return ProfileRead.from_model(await _get_or_404(profile_service, profile_id))

    @patch("/{profile_id:uuid}")
    async def update_profile(
        self,
        profile_id: FromPath[uuid.UUID],
        data: JSONBody[ProfileUpdate],
        profile_service: NamedDependency[ProfileService],
    ) -> ProfileRead:
        profile = await _get_or_404(profile_service, profile_id)
        if data.name is not None:
            name = data.name.strip().lower()
            other = await profile_service.get_one_or_none(Profile.name == name)
            if other is not None and other.id != profile.id:
                raise HTTPException(
                    status_code=HTTP_409_CONFLICT, detail=f"profile {name!r} exists"
                )
            profile.name = name
        if data.system_prompt is not None:
            profile.system_prompt = data.system_prompt
        if data.description is not None:
            profile.description = data.description
        if data.settings is not None:
            profile.settings = _settings_dict(data.settings)
        profile = await profile_service.update(profile, auto_commit=True)
        return ProfileRead.from_model(profile)

    @delete("/{profile_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_profile(
        self, profile_id: FromPath[uuid.UUID], profile_service: NamedDependency[ProfileService]
    ) -> None:
        await _get_or_404(profile_service, profile_id)
        await profile_service.delete(profile_id, auto_commit=True)


async def _get_or_404(service: ProfileService, profile_id: uuid.UUID) -> Profile:
    profile = await service.get_one_or_none(Profile.id == profile_id)
    if profile is None:
        raise NotFoundException(f"no profile with id {profile_id}")
    return profile
