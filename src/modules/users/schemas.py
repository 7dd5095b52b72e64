"""Request and response bodies of the /users routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from modules.users.models import User

EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=EMAIL_PATTERN)]
# Length bounds only here; the password policy (with its 422) lives in modules.auth.policy.
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Role = Literal["user", "admin"]


class UserRead(msgspec.Struct):
    id: uuid.UUID
    email: str
    role: str
    is_active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, user: User) -> UserRead:
        return msgspec.convert(user, cls, from_attributes=True)


class UserPage(msgspec.Struct):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class UserSelfUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Change one's own email or password; the current password confirms either."""

    current_password: Password
    email: Email | None = None
    new_password: Password | None = None


class UserAdminUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | None = None
    is_active: bool | None = None
