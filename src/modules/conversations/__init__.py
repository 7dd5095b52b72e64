"""Conversations: stored turns, replayed as history; always scoped to their owner."""

from litestar import Router
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from modules.conversations.controller import ConversationController
from modules.conversations.models import Conversation, Message
from modules.conversations.service import (
    ConversationNotFoundError,
    ConversationService,
    NewMessage,
    title_from,
)


def provide_conversation_service(
    db_session: NamedDependency[AsyncSession],
) -> ConversationService:
    return ConversationService(db_session)


def create_router() -> Router:
    return Router(path="/", route_handlers=[ConversationController])


__all__ = [
    "Conversation",
    "ConversationNotFoundError",
    "ConversationService",
    "Message",
    "NewMessage",
    "create_router",
    "provide_conversation_service",
    "title_from",
]
