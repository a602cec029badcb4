"""positions: quote_flow, the net of the active trades' quote amounts

The exposure limits check each account's net open position per currency:
the base amounts and the quote amounts its active (not reversed) trades net
to.  ``quantity`` already is the first; ``quote_flow`` keeps the second, so
a cancel or correction takes its trade out exactly (the average price after
an O(1) reversal is not the average of the remaining trades).

Rows from before are filled from the bookings: the sum of each (account,
pair)'s unreversed trade bookings' quote amounts, summed as Decimals here
(SQLite has no exact decimal sum).

Revision ID: 0008_position_quote_flow
Revises: 0007_inbox_request_id
Create Date: 2026-12-03
"""
from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0008_position_quote_flow"
down_revision = "0007_inbox_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("positions", sa.Column("quote_flow", sa.String(48), nullable=False, server_default="0"))
    conn = op.get_bind()
    flows: dict[tuple[str, str], Decimal] = {}
    for account, pair, quote in conn.execute(sa.text(
            "SELECT b.account, b.pair, b.quote_amount FROM bookings b WHERE b.kind = 'trade' "
            "AND NOT EXISTS (SELECT 1 FROM bookings r WHERE r.reverses = b.booking_id)")).all():
        flows[(account, pair)] = flows.get((account, pair), Decimal(0)) + Decimal(quote)
    for (account, pair), flow in flows.items():
        conn.execute(sa.text("UPDATE positions SET quote_flow = :flow "
                             "WHERE account = :account AND pair = :pair"),
                     {"flow": str(flow), "account": account, "pair": pair})


def downgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("quote_flow")
