"""post-trade: bookings, postings, positions, nets, instructions, breaks, margin

Revision ID: 0002_posttrade
Revises: 0001_intake
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_posttrade"
down_revision = "0001_intake"
branch_labels = None
depends_on = None

AMOUNT = sa.String(48)


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("booking_id", sa.String(160), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),   # booking order
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fill_id", sa.BigInteger),
        sa.Column("fill_session", sa.String(64)),
        sa.Column("fill_exec_id", sa.String(64)),
        sa.Column("reverses", sa.String(160)),
        sa.Column("account", sa.String(64)),
        sa.Column("counterparty", sa.String(64)),
        sa.Column("pair", sa.String(16)),
        sa.Column("side", sa.String(1)),
        sa.Column("base_amount", AMOUNT),
        sa.Column("quote_amount", AMOUNT),
        sa.Column("price", AMOUNT),
        sa.Column("value_date", sa.Date),
        sa.Column("booked_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_bookings_fill", "bookings", ["fill_session", "fill_exec_id"])
    op.create_index("ix_bookings_account_pair", "bookings", ["account", "pair"])
    op.create_index("ix_bookings_reverses", "bookings", ["reverses"])
    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("booking_id", sa.String(160), nullable=False),
        sa.Column("ledger", sa.String(3), nullable=False),
        sa.Column("party", sa.String(80), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("value_date", sa.Date),
    )
    op.create_index("ix_postings_booking", "postings", ["booking_id"])
    op.create_index("ix_postings_ledger_party", "postings", ["ledger", "party"])
    op.create_table(
        "positions",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("pair", sa.String(16), primary_key=True),
        sa.Column("quantity", AMOUNT, nullable=False),
        sa.Column("average_price", AMOUNT),
        sa.Column("realised_pnl", AMOUNT, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "position_value_dates",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("pair", sa.String(16), primary_key=True),
        sa.Column("value_date", sa.Date, primary_key=True),
        sa.Column("quantity", AMOUNT, nullable=False),
    )
    op.create_table(
        "nets",
        sa.Column("counterparty", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("value_date", sa.Date, primary_key=True),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "instructions",
        sa.Column("instruction_id", sa.String(160), primary_key=True),
        sa.Column("counterparty", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("value_date", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("adjustment", sa.Boolean, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ssi", sa.Text),
        sa.Column("instructed_us", sa.BigInteger),
        sa.Column("settled_us", sa.BigInteger),
        sa.Column("failure_reason", sa.Text),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_instructions_value_date", "instructions", ["value_date"])
    op.create_table(
        "breaks",
        sa.Column("break_id", sa.String(32), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("keys", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("ours", sa.Text, nullable=False),
        sa.Column("theirs", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detected_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger, nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
    )
    op.create_index("ix_breaks_type", "breaks", ["type"])
    op.create_table(
        "confirmations",
        sa.Column("fill_id", sa.BigInteger, primary_key=True),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("exec_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("differences", sa.Text),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "margin_accounts",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance", AMOUNT, nullable=False),
        sa.Column("unrealised_pnl", AMOUNT, nullable=False),
        sa.Column("equity", AMOUNT, nullable=False),
        sa.Column("used_margin", AMOUNT, nullable=False),
        sa.Column("free_margin", AMOUNT, nullable=False),
        sa.Column("margin_level", AMOUNT),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "margin_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("margin_level", AMOUNT),
        sa.Column("equity", AMOUNT, nullable=False),
        sa.Column("used_margin", AMOUNT, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
    )
    # Commands the desk gives while the engine runs (or not): applied in order.
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),   # INTEGER: SQLite rowid
        sa.Column("kind", sa.String(32), nullable=False),       # settlement_status, cash
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("applied_us", sa.BigInteger),
        sa.Column("result", sa.Text),
    )
    op.create_table(
        "pipeline_cursor",
        sa.Column("stage", sa.String(32), primary_key=True),
        sa.Column("last_fill_id", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("pipeline_cursor", "inbox", "margin_events", "margin_accounts", "confirmations",
                  "breaks", "instructions", "nets", "position_value_dates", "positions", "postings",
                  "bookings"):
        op.drop_table(table)
