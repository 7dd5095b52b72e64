"""API keys: create (secret shown once), list, revoke, and resolve a presented key."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.filters import OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.models import ApiKey
from modules.users.models import User

KEY_PREFIX = "llms_"
VISIBLE_CHARS = 12  # "llms_" + 7 characters of the secret: enough to tell keys apart


class ApiKeyNotFoundError(LookupError):
    def __init__(self, key_id: uuid.UUID) -> None:
        super().__init__(f"no API key with id {key_id}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """What `request.auth` holds when the caller used an API key instead of a JWT."""

    key_id: uuid.UUID
    name: str


class ApiKeyRepository(SQLAlchemyAsyncRepository[ApiKey]):
    model_type = ApiKey


class ApiKeyService(SQLAlchemyAsyncRepositoryService[ApiKey, ApiKeyRepository]):
    repository_type = ApiKeyRepository

    async def issue(
        self, user_id: uuid.UUID, name: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown this once and stored only as a hash."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = await self.create(
            ApiKey(
                user_id=user_id,
                name=name,
                prefix=secret[:VISIBLE_CHARS],
                secret_hash=hash_secret(secret),
                expires_at=expires_at,
            )
        )
        return key, secret

    async def list_for(self, user_id: uuid.UUID) -> Sequence[ApiKey]:
        return await self.get_many(ApiKey.user_id == user_id, OrderBy("created_at", "desc"))

    async def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
        """Someone else's key is not found, like a key that does not exist."""
        key = await self.get_one_or_none(ApiKey.id == key_id, ApiKey.user_id == user_id)
        if key is None:
            raise ApiKeyNotFoundError(key_id)
        key.revoked_at = datetime.now(UTC)
        return await self.update(key)


provide_api_key_service = create_service_provider(ApiKeyService)


async def resolve_api_key(session: AsyncSession, secret: str) -> tuple[User, ApiKeyAuth] | None:
    """The active user behind a live key, or None (unknown, revoked, expired, user inactive)."""
    key = await session.scalar(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret)))
    now = datetime.now(UTC)
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= now:
        return None
    user = await session.scalar(select(User).where(User.id == key.user_id))
    if user is None or not user.is_active:
        return None
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        # Coarse, to spare writes. Committed at once: a request that fails would roll it
        # back, and on SQLite a pending write would hold the database lock for the whole
        # request, stalling the turn service's own sessions.
        key.last_used_at = now
        await session.commit()
    return user, ApiKeyAuth(key_id=key.id, name=key.name)
