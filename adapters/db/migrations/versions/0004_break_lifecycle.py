"""break lifecycle: who acknowledged and resolved a break, when and why

Revision ID: 0004_break_lifecycle
Revises: 0003_outbox
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_break_lifecycle"
down_revision = "0003_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("breaks") as batch:
        batch.add_column(sa.Column("acknowledged_by", sa.String(80)))
        batch.add_column(sa.Column("acknowledged_us", sa.BigInteger))
        batch.add_column(sa.Column("resolved_by", sa.String(80)))
        batch.add_column(sa.Column("resolved_us", sa.BigInteger))
        batch.add_column(sa.Column("resolution", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("breaks") as batch:
        for column in ("resolution", "resolved_us", "resolved_by", "acknowledged_us", "acknowledged_by"):
            batch.drop_column(column)
