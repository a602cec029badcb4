"""journal: the raw message byte-exact, its true size, truncation

``raw_encoding`` says how ``raw`` holds the message's bytes: "utf-8" (the
message was valid UTF-8) or "latin-1" (ISO-8859-1, one character per byte:
``raw.encode("latin-1")`` gives the bytes back exactly).  ``raw_size`` is the
message's true size in bytes; ``raw_truncated`` marks a message over
``[engine] max_message_bytes``, whose ``raw`` keeps only its beginning.

Rows from before were all UTF-8 and whole: their size is filled in from raw.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("journal", sa.Column("raw_encoding", sa.String(16), nullable=False, server_default="utf-8"))
    op.add_column("journal", sa.Column("raw_size", sa.BigInteger))
    op.add_column("journal", sa.Column("raw_truncated", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    conn = op.get_bind()
    size = "octet_length(raw)" if conn.dialect.name == "postgresql" else "length(CAST(raw AS BLOB))"
    conn.execute(sa.text(f"UPDATE journal SET raw_size = {size}"))


def downgrade() -> None:
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("raw_truncated")
        batch.drop_column("raw_size")
        batch.drop_column("raw_encoding")
