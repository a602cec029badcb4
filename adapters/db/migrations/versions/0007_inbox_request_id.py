"""inbox: a desk command's request_id, unique, and the reply it got

A command redelivered by the broker (QoS 1 is at-least-once) or sent again
by the desk carries the same request_id: the unique index keeps it to one
inbox row, so it is applied once, and ``reply`` keeps the answer the first
one got, to give it again.  Commands without a request_id (NULL) are not
constrained (NULLs are distinct on SQLite and PostgreSQL).

Rows from before: the first MQTT command per request_id gets its request_id
and its reply (the ``reply-inbox-<id>`` event in the outbox); a later row
with the same request_id (a redelivery applied twice, or refused) keeps NULL.

Revision ID: 0007_inbox_request_id
Revises: 0006_market_prices
Create Date: 2026-11-24
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007_inbox_request_id"
down_revision = "0006_market_prices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbox", sa.Column("request_id", sa.String(64)))
    op.add_column("inbox", sa.Column("reply", sa.Text))
    conn = op.get_bind()
    replies = {event_id: payload for event_id, payload in conn.execute(sa.text(
        "SELECT event_id, payload FROM outbox WHERE event_id LIKE 'reply-inbox-%' ORDER BY id")).all()}
    seen: set[str] = set()
    for inbox_id, text in conn.execute(sa.text("SELECT id, payload FROM inbox ORDER BY id")).all():
        try:
            payload = json.loads(text)
        except ValueError:
            continue
        if not isinstance(payload, dict) or payload.get("via") != "mqtt":
            continue
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or not request_id or request_id in seen:
            continue
        seen.add(request_id)
        conn.execute(sa.text("UPDATE inbox SET request_id = :request_id, reply = :reply WHERE id = :id"),
                     {"request_id": request_id, "reply": replies.get(f"reply-inbox-{inbox_id}"),
                      "id": inbox_id})
    op.create_index("uq_inbox_request_id", "inbox", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_inbox_request_id", "inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("reply")
        batch.drop_column("request_id")
