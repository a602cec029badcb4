"""breaks that come back, unpriced margin

``breaks.occurrence``: which occurrence of the break the row is at (1 for
every break from before: none was reopened); a resolved break detected
again reopens as the next one, ``reopened_us`` says when.
``margin_accounts.priced_state``: the margin state of the account's last
full valuation, which an account whose margin is ``unpriced`` (cash, P&L or
a position in a currency with no rate) keeps for when a rate arrives
(NULL for rows from before: their ``state`` is that state).

Revision ID: 0012_money_rules
Revises: 0010
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_money_rules"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("breaks", sa.Column("occurrence", sa.Integer, nullable=False, server_default="1"))
    op.add_column("breaks", sa.Column("reopened_us", sa.BigInteger))
    op.add_column("margin_accounts", sa.Column("priced_state", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("margin_accounts") as batch:
        batch.drop_column("priced_state")
    with op.batch_alter_table("breaks") as batch:
        batch.drop_column("reopened_us")
        batch.drop_column("occurrence")
