"""escalations and reconciliation: each break's cut-off and when it was
escalated; the LP statements and position reports imported for end-of-day
reconciliation, kept as received

Revision ID: 0005_escalation_recon
Revises: 0004_break_lifecycle
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_escalation_recon"
down_revision = "0004_break_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("breaks") as batch:
        batch.add_column(sa.Column("cut_off_us", sa.BigInteger))     # earliest settlement cut-off
        batch.add_column(sa.Column("escalated_us", sa.BigInteger))   # when re-published as escalation
    op.create_index("ix_breaks_escalation", "breaks", ["escalated_us", "cut_off_us"])
    op.create_table(
        "recon_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),            # statement / positions
        sa.Column("session", sa.String(64), nullable=False),         # the LP session reconciled
        sa.Column("as_of", sa.String(10)),                           # trade date / value date filter
        sa.Column("source", sa.String(255), nullable=False),         # file name
        sa.Column("content", sa.Text, nullable=False),               # the file as received
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("matched", sa.Integer, nullable=False),
        sa.Column("breaks", sa.Integer, nullable=False),
        sa.Column("run_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recon_runs")
    op.drop_index("ix_breaks_escalation", "breaks")
    with op.batch_alter_table("breaks") as batch:
        batch.drop_column("escalated_us")
        batch.drop_column("cut_off_us")
