"""bookings: allocation links (house account -> client)

A fill without a client account books on its LP session's house account;
allocating it later books a reversal of the house booking and a trade
booking on the client (``A:<session>:<exec_id>``).  ``allocated_from`` on
the client's booking is the house booking it replaces; ``allocated_by`` on
both is who allocated it (the desk's ``--by``, or ``match:<platform
session>/<exec id>`` when the platform's record did).  Rows from before
have neither (NULL).

Revision ID: 0009
Revises: 0008_position_quote_flow
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008_position_quote_flow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bookings", sa.Column("allocated_from", sa.String(160)))
    op.add_column("bookings", sa.Column("allocated_by", sa.String(160)))
    op.create_index("ix_bookings_allocated_from", "bookings", ["allocated_from"])


def downgrade() -> None:
    op.drop_index("ix_bookings_allocated_from", "bookings")
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("allocated_by")
        batch.drop_column("allocated_from")
