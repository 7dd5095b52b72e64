"""/conversations: one's own stored conversations (another user's id is a 404)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from modules.conversations.schemas import (
    ConversationDetail,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    MessageRead,
)
from modules.conversations.service import ConversationService
from modules.users.models import User

# Far past any real list, and inside what every database takes as an OFFSET.
MAX_OFFSET = 1_000_000_000


class ConversationController(Controller):
    path = "/conversations"
    tags = ("conversations",)

    @get("/")
    async def list_conversations(
        self,
        request: Request[User, Any, Any],
        conversation_service: NamedDependency[ConversationService],
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 20,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> ConversationPage:
        """One's conversations, most recently used first."""
        items, total = await conversation_service.list_owned(request.user.id, limit, offset)
        return ConversationPage(
            items=[ConversationRead.from_model(c) for c in items],
            total=total,
            limit=limit,
            offset=offset,
        )

    @get("/{conversation_id:uuid}")
    async def get_conversation(
        self,
        request: Request[User, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        conversation_service: NamedDependency[ConversationService],
    ) -> ConversationDetail:
        conversation = await conversation_service.get_owned(request.user.id, conversation_id)
        messages = await conversation_service.messages(conversation.id)
        detail = msgspec.convert(conversation, ConversationDetail, from_attributes=True)
        detail.messages = [MessageRead.from_model(m) for m in messages]
        return detail

    @patch("/{conversation_id:uuid}")
    async def rename_conversation(
        self,
        request: Request[User, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[ConversationUpdate],
        conversation_service: NamedDependency[ConversationService],
    ) -> ConversationRead:
        conversation = await conversation_service.rename(
            request.user.id, conversation_id, data.title
        )
        return ConversationRead.from_model(conversation)

    @delete("/{conversation_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_conversation(
        self,
        request: Request[User, Any, Any],
        conversation_id: FromPath[uuid.UUID],
        conversation_service: NamedDependency[ConversationService],
    ) -> None:
        await conversation_service.remove(request.user.id, conversation_id)
