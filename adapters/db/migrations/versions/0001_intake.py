"""intake: journal, fills, conflicts, session_state

Revision ID: 0001_intake
Revises:
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_intake"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("seq_num", sa.Integer, nullable=False),
        sa.Column("msg_type", sa.String(8), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("committed_us", sa.BigInteger, nullable=False),
        sa.Column("poss_dup", sa.Boolean, nullable=False),
        sa.Column("exec_id", sa.String(64)),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("raw", sa.Text, nullable=False),
    )
    op.create_index("ix_journal_session_seq", "journal", ["session", "seq_num"])
    op.create_index("ix_journal_outcome", "journal", ["outcome"])
    op.create_table(
        "fills",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("journal_id", sa.BigInteger, nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("exec_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("exec_ref_id", sa.String(64)),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("cl_ord_id", sa.String(64)),
        sa.Column("account", sa.String(64)),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("side", sa.String(1), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("last_qty", sa.String(40), nullable=False),
        sa.Column("last_px", sa.String(40), nullable=False),
        sa.Column("cum_qty", sa.String(40)),
        sa.Column("leaves_qty", sa.String(40)),
        sa.Column("avg_px", sa.String(40)),
        sa.Column("order_qty", sa.String(40)),
        sa.Column("trade_date", sa.Date),
        sa.Column("settl_type", sa.String(8), nullable=False),
        sa.Column("settl_date", sa.Date),
        sa.Column("transact_us", sa.BigInteger),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("spot_rate", sa.String(40)),
        sa.Column("forward_points", sa.String(40)),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.UniqueConstraint("session", "exec_id", name="uq_fills_session_exec_id"),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("journal_id", sa.BigInteger, nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("exec_id", sa.String(64), nullable=False),
        sa.Column("original_hash", sa.String(32), nullable=False),
        sa.Column("conflicting_hash", sa.String(32), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_conflicts_session_exec", "conflicts", ["session", "exec_id"])
    op.create_table(
        "session_state",
        sa.Column("session", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("resets", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("session_state")
    op.drop_index("ix_conflicts_session_exec", "conflicts")
    op.drop_table("conflicts")
    op.drop_table("fills")
    op.drop_index("ix_journal_outcome", "journal")
    op.drop_index("ix_journal_session_seq", "journal")
    op.drop_table("journal")
