"""outbox: events committed with what they describe, published by a relay

Revision ID: 0003_outbox
Revises: 0002_posttrade
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_outbox"
down_revision = "0002_posttrade"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),   # publish order
        sa.Column("event_id", sa.String(80), nullable=False),              # CloudEvents id
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("retain", sa.Boolean, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("published_us", sa.BigInteger),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_us", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_unpublished", "outbox")
    op.drop_table("outbox")
