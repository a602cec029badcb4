"""market data: the latest quote per pair from the LPs' snapshots (35=W)

Revision ID: 0006_market_prices
Revises: 0005_escalation_recon
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_market_prices"
down_revision = "0005_escalation_recon"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_prices",
        sa.Column("symbol", sa.String(16), primary_key=True),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("bid", sa.String(48)),
        sa.Column("offer", sa.String(48)),
        sa.Column("price", sa.String(48), nullable=False),        # mid, or the side given
        sa.Column("journal_id", sa.BigInteger, nullable=False),   # the snapshot, as received
        sa.Column("received_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("market_prices")
