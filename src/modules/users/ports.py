"""What the /users routes need from auth, as a protocol: the app provides auth's service
under this name, so users never imports auth."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from modules.users.models import User
from modules.users.schemas import UserSelfUpdate


@runtime_checkable
class CredentialsChanger(Protocol):
    async def update_credentials(self, user: User, change: UserSelfUpdate) -> User:
        """Apply an email or password change that `change.current_password` confirms."""
        ...
