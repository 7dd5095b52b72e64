"""message_embeddings: a vector per stored message, for memory search

Where PostgreSQL offers the pgvector extension, it is created and an `embedding vector`
column added beside the float32 bytes: the search then ranks in the database. Without it
(Debian bookworm's own repositories do not carry it) the search scans the user's own
vectors.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_embeddings",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("message_id", GUID(length=16), nullable=False),
        sa.Column("owner_id", GUID(length=16), nullable=False),
        sa.Column("conversation_id", GUID(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_embeddings_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_message_embeddings_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_message_embeddings_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_embeddings")),
        sa.UniqueConstraint("message_id", name=op.f("uq_message_embeddings_message_id")),
    )
    op.create_index(
        "ix_message_embeddings_owner_model", "message_embeddings", ["owner_id", "model"]
    )
    op.create_index(
        op.f("ix_message_embeddings_conversation_id"), "message_embeddings", ["conversation_id"]
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and bind.scalar(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ):
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
        # No fixed dimensions: models differ; rows are ranked within one owner's.
        op.execute("ALTER TABLE message_embeddings ADD COLUMN embedding vector")


def downgrade() -> None:
    op.drop_index(op.f("ix_message_embeddings_conversation_id"), table_name="message_embeddings")
    op.drop_index("ix_message_embeddings_owner_model", table_name="message_embeddings")
    op.drop_table("message_embeddings")
