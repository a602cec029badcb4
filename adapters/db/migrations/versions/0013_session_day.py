"""session_state: the session day, the session's status; session_resets

``session_day`` is the session day (stp/sessions.py) the committed
``last_seq`` belongs to: a restart resumes that number only within the same
day.  Rows from before keep NULL: the engine then takes the day of their
``updated_us`` (the last commit).  ``logged_on``, ``last_logon_us``,
``last_logout_us`` and ``last_reason`` are the session's status as the
gateway reported it; ``pending_outbound`` an outbound MsgSeqNum set by
``session reset`` while no engine ran, applied at the next start.

``session_resets``: every ``run_engine.py session reset`` (who, when, why,
the numbers before and after, how it was applied).

Revision ID: 0013
Revises: 0012_money_rules
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012_money_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("session_state") as batch:
        batch.add_column(sa.Column("session_day", sa.String(16)))
        batch.add_column(sa.Column("logged_on", sa.Boolean))
        batch.add_column(sa.Column("last_logon_us", sa.BigInteger))
        batch.add_column(sa.Column("last_logout_us", sa.BigInteger))
        batch.add_column(sa.Column("last_reason", sa.Text))
        batch.add_column(sa.Column("pending_outbound", sa.Integer))
    op.create_table(
        "session_resets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(80), nullable=False),
        sa.Column("requested_us", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("inbound", sa.Integer),            # next inbound MsgSeqNum asked for
        sa.Column("outbound", sa.Integer),           # next outbound MsgSeqNum asked for
        sa.Column("state", sa.String(16), nullable=False),   # pending, applied, failed
        sa.Column("via", sa.String(16)),             # engine, database
        sa.Column("before_last_seq", sa.Integer),    # committed inbound MsgSeqNum before
        sa.Column("before_inbound", sa.Integer),     # quickfix's next inbound before (engine only)
        sa.Column("before_outbound", sa.Integer),
        sa.Column("after_inbound", sa.Integer),
        sa.Column("after_outbound", sa.Integer),
        sa.Column("applied_us", sa.BigInteger),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_session_resets_state", "session_resets", ["state"])


def downgrade() -> None:
    op.drop_index("ix_session_resets_state", "session_resets")
    op.drop_table("session_resets")
    with op.batch_alter_table("session_state") as batch:
        for name in ("pending_outbound", "last_reason", "last_logout_us", "last_logon_us", "logged_on",
                     "session_day"):
            batch.drop_column(name)
