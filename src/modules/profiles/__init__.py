"""Profiles: admin-managed named system prompts with default generation settings.

The turn service reads them through its ProfileStore protocol; profiles sits above llm."""

from litestar import Router
from litestar.di import Provide

from modules.profiles.controller import ProfileController
from modules.profiles.models import Profile
from modules.profiles.service import (
    ProfileIdNotFoundError,
    ProfileNameTakenError,
    ProfileNotFoundError,
    ProfileService,
    provide_profile_service,
)


def create_router() -> Router:
    return Router(path="/", route_handlers=[ProfileController])


def providers() -> dict[str, Provide]:
    return {"profile_service": Provide(provide_profile_service)}


__all__ = [
    "Profile",
    "ProfileIdNotFoundError",
    "ProfileNameTakenError",
    "ProfileNotFoundError",
    "ProfileService",
    "create_router",
    "providers",
]
