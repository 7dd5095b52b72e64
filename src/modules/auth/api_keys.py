"""API keys: create (secret shown once), list, revoke, and resolve a presented key."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.models import ApiKey
from modules.users.models import User

KEY_PREFIX = "llms_"
VISIBLE_CHARS = 12  # "llms_" + 7 characters of the secret: enough to tell keys apart


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """What `request.auth` holds when the caller used an API key instead of a JWT."""

    key_id: uuid.UUID
    name: str


class ApiKeyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self, user_id: uuid.UUID, name: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            user_id=user_id,
            name=name,
            prefix=secret[:VISIBLE_CHARS],
            secret_hash=hash_secret(secret),
            expires_at=expires_at,
        )
        self.session.add(key)
        await self.session.commit()
        return key, secret

    async def list_for(self, user_id: uuid.UUID) -> list[ApiKey]:
        result = await self.session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
        )
        return list(result)

    async def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """False when the key does not exist or is not this user's (the caller answers 404)."""
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.user_id == user_id)
            .values(revoked_at=datetime.now(UTC))
            .returning(ApiKey.id)
        )
        found = result.one_or_none() is not None
        await self.session.commit()
        return found


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
        key.last_used_at = now  # committed with the request; coarse, to spare writes
    return user, ApiKeyAuth(key_id=key.id, name=key.name)
