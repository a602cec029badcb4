"""bookings: an index on fill_id

A start reads, per pair, the latest fill that booked (the price it marks
the pair at, and confirmation's reference price): the bookings of a fill
are found by its id.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bookings_fill_id", "bookings", ["fill_id"])


def downgrade() -> None:
    op.drop_index("ix_bookings_fill_id", "bookings")
