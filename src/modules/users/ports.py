"""What the /users routes need from auth, as a protocol: the app provides auth's service
under this name, so users never imports auth."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from modules.users.models import User


@runtime_checkable
class CredentialsChanger(Protocol):
    async def update_credentials(
        self,
        user: User,
        *,
        current_password: str,
        email: str | None,
        new_password: str | None,
    ) -> User: ...
