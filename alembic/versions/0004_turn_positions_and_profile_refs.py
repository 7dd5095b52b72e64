"""one position per message of a conversation; conversations reference their profile

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Turns stored concurrently before this revision may share positions: renumber each
    # conversation's messages in their stored order, so the constraint can hold.
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT id, conversation_id FROM messages "
            "ORDER BY conversation_id, position, created_at, id"
        )
    ).fetchall()
    position: dict[object, int] = {}
    for message_id, conversation_id in rows:
        number = position.get(conversation_id, 0)
        position[conversation_id] = number + 1
        connection.execute(
            sa.text("UPDATE messages SET position = :p WHERE id = :id"),
            {"p": number, "id": message_id},
        )
    with op.batch_alter_table("messages") as batch:
        batch.create_unique_constraint(
            "uq_messages_conversation_position", ["conversation_id", "position"]
        )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("profile", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("profile")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_conversation_position", type_="unique")
