"""Responses kept by owner: another user's id is simply not found. Written on a session
of their own (a streamed answer outlives its request's session) and committed here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from modules.responses.models import StoredResponse

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
PREFIX = "resp_"


class ResponseNotFoundError(LookupError):
    def __init__(self, response_id: str) -> None:
        super().__init__(f"no response with id '{response_id}'")
        self.response_id = response_id


class ResponseNotLatestError(ValueError):
    """A response whose conversation went on since: continuing it would branch."""

    def __init__(self, response_id: str) -> None:
        super().__init__(
            f"response '{response_id}' is not the latest of its conversation; "
            "continue from the latest one"
        )
        self.response_id = response_id


def new_response_id() -> str:
    return PREFIX + uuid.uuid4().hex


def row_id(response_id: str) -> uuid.UUID | None:
    """The row id of a public response id; None for an id this server never made."""
    if not response_id.startswith(PREFIX):
        return None
    try:
        return uuid.UUID(hex=response_id.removeprefix(PREFIX))
    except ValueError:
        return None


class ResponseRepository(SQLAlchemyAsyncRepository[StoredResponse]):
    model_type = StoredResponse


@dataclass(frozen=True, slots=True)
class ResponseStore:
    """One caller's stored responses."""

    sessions: SessionFactory
    owner_id: uuid.UUID

    async def save(
        self, response_id: str, conversation_id: uuid.UUID, body: dict[str, Any]
    ) -> None:
        row = StoredResponse(
            id=row_id(response_id),
            owner_id=self.owner_id,
            conversation_id=conversation_id,
            model=str(body.get("model", "")),
            status=str(body.get("status", "")),
            body=body,
        )
        async with self.sessions() as session:
            await ResponseRepository(session=session).add(row)
            await session.commit()

    async def get(self, response_id: str) -> dict[str, Any]:
        """The stored response object; a 404 for another user's id or an unknown one."""
        return (await self._owned(response_id)).body

    async def continuation(self, response_id: str) -> uuid.UUID:
        """The conversation that `previous_response_id` continues: the response's own,
        when it is still that conversation's latest response."""
        row = await self._owned(response_id)
        newer = (
            select(StoredResponse.id)
            .where(StoredResponse.conversation_id == row.conversation_id)
            .where(StoredResponse.created_at > row.created_at)
        )
        async with self.sessions() as session:
            if await session.scalar(select(exists(newer))):
                raise ResponseNotLatestError(response_id)
        return row.conversation_id

    async def _owned(self, response_id: str) -> StoredResponse:
        key = row_id(response_id)
        if key is None:
            raise ResponseNotFoundError(response_id)
        async with self.sessions() as session:
            row = await ResponseRepository(session=session).get_one_or_none(
                StoredResponse.id == key, StoredResponse.owner_id == self.owner_id
            )
        if row is None:
            raise ResponseNotFoundError(response_id)
        return row
