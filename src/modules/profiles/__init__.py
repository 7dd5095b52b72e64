"""Profiles: admin-managed named system prompts with default generation settings."""

from litestar import Router

from modules.profiles.models import Profile
from modules.profiles.service import ProfileNotFoundError, ProfileService, provide_profile_service


def create_router() -> Router:
    from modules.profiles.controller import ProfileController

    return Router(path="/", route_handlers=[ProfileController])


__all__ = [
    "Profile",
    "ProfileNotFoundError",
    "ProfileService",
    "create_router",
    "provide_profile_service",
]
