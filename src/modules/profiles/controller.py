"""/admin/profiles: admin-managed profiles (CRUD)."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from modules.auth import requires_admin
from modules.profiles.schemas import ProfileCreate, ProfileRead, ProfileUpdate
from modules.profiles.service import ProfileService


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
        return ProfileRead.from_model(await profile_service.add(data))

    @get("/{profile_id:uuid}")
    async def get_profile(
        self, profile_id: FromPath[uuid.UUID], profile_service: NamedDependency[ProfileService]
    ) -> ProfileRead:
        return ProfileRead.from_model(await profile_service.get_existing(profile_id))

    @patch("/{profile_id:uuid}")
    async def update_profile(
        self,
        profile_id: FromPath[uuid.UUID],
        data: JSONBody[ProfileUpdate],
        profile_service: NamedDependency[ProfileService],
    ) -> ProfileRead:
        return ProfileRead.from_model(await profile_service.change(profile_id, data))

    @delete("/{profile_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_profile(
        self, profile_id: FromPath[uuid.UUID], profile_service: NamedDependency[ProfileService]
    ) -> None:
        await profile_service.remove(profile_id)
