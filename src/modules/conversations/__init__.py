"""Conversations: stored turns, replayed as history; always scoped to their owner."""

from litestar import Router
from litestar.di import Provide

from modules.conversations.controller import ConversationController
from modules.conversations.models import Conversation, Message
from modules.conversations.service import (
    ConversationNotFoundError,
    ConversationService,
    NewConversation,
    NewMessage,
    provide_conversation_service,
    store_first_turn,
    store_turn,
    title_from,
)


def create_router() -> Router:
    return Router(
        path="/",
        route_handlers=[ConversationController],
        dependencies={"conversation_service": Provide(provide_conversation_service)},
    )


__all__ = [
    "Conversation",
    "ConversationNotFoundError",
    "ConversationService",
    "Message",
    "NewConversation",
    "NewMessage",
    "create_router",
    "provide_conversation_service",
    "store_first_turn",
    "store_turn",
    "title_from",
]
