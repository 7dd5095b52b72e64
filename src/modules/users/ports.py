"""What the /users routes need from auth, as a protocol: the app provides auth's service
under this name, so users never imports auth."""

from __future__ import annotations

import uuid
from typing import Protocol, runtime_checkable

from modules.users.models import User
from modules.users.schemas import UserSelfUpdate


@runtime_checkable
class AccountSecurity(Protocol):
    async def update_credentials(
        self, user: User, change: UserSelfUpdate, credential: object
    ) -> User:
        """Apply an email or password change that `change.current_password` confirms;
        `credential` is the request's (a login, or an API key, which may not)."""
        ...

    async def end_all_sessions(self, user_id: uuid.UUID, keep: uuid.UUID | None = None) -> None:
        """End every login and API key of the user."""
        ...
