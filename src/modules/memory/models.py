"""Message embeddings: one vector per stored message, kept beside its owner for search."""

from __future__ import annotations

import uuid

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import GUID
from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column


class MessageEmbedding(UUIDAuditBase):
    """A message's vector (little-endian float32, unit length) by the model that made it.

    `owner_id` and `conversation_id` are copied from the message's conversation so that a
    search reads only its owner's rows (the index on owner and model) without a join."""

    __tablename__ = "message_embeddings"
    __table_args__ = (Index("ix_message_embeddings_owner_model", "owner_id", "model"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(GUID, ForeignKey("users.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    model: Mapped[str] = mapped_column(String(200))
    dims: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
