"""catalog_models: models added at run time (POST /llm/models), shared by every replica

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_models",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("remote", sa.String(length=2048), nullable=True),
        sa.Column("api_key", sa.String(length=512), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_by", GUID(length=16), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_models")),
        sa.UniqueConstraint("alias", name=op.f("uq_catalog_models_alias")),
    )


def downgrade() -> None:
    op.drop_table("catalog_models")
