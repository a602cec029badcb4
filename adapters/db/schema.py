"""Database schema (SQLAlchemy Core) of the intake tables, which the
repository queries through Core.  Every table, these included, is created
and changed by the Alembic migrations in ``adapters/db/migrations``; the
post-trade and outbox tables are queried with plain SQL
(``adapters/db/posttrade.py``).

Amounts are exact decimal text (``DecimalText``): SQLite has no decimal type
and a float column would round.  Times are integer microseconds since the
epoch (UTC): exact, sortable and the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as its exact text."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"DecimalText takes Decimal, not {type(value).__name__}")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = MetaData()

# Every inbound application message, raw, with its outcome.  Never updated.
journal = Table(
    "journal", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("session", String(64), nullable=False),
    Column("seq_num", Integer, nullable=False),
    Column("msg_type", String(8), nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("committed_us", BigInteger, nullable=False),
    Column("poss_dup", Boolean, nullable=False),
    Column("exec_id", String(64)),
    Column("outcome", String(24), nullable=False),
    Column("reason", Text),
    Column("raw", Text, nullable=False),
    # raw's bytes are the message's exactly: raw.encode(raw_encoding); "latin-1"
    # (ISO-8859-1) when the message was not valid UTF-8
    Column("raw_encoding", String(16), nullable=False, server_default="utf-8"),
    Column("raw_size", BigInteger),                  # the message's true size in bytes
    Column("raw_truncated", Boolean, nullable=False, server_default=false()),  # oversized: raw is its start
    Index("ix_journal_session_seq", "session", "seq_num"),
    Index("ix_journal_outcome", "outcome"),
)

# One row per distinct execution (LP or platform session, ExecID): new fills,
# corrections and cancels alike.  Never updated.
fills = Table(
    "fills", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("journal_id", BigInteger, nullable=False),
    Column("session", String(64), nullable=False),
    Column("exec_id", String(64), nullable=False),
    Column("kind", String(1), nullable=False),
    Column("exec_ref_id", String(64)),
    Column("order_id", String(64), nullable=False),
    Column("cl_ord_id", String(64)),
    Column("account", String(64)),
    Column("symbol", String(16), nullable=False),
    Column("side", String(1), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("last_qty", DecimalText, nullable=False),
    Column("last_px", DecimalText, nullable=False),
    Column("cum_qty", DecimalText),
    Column("leaves_qty", DecimalText),
    Column("avg_px", DecimalText),
    Column("order_qty", DecimalText),
    Column("trade_date", Date),
    Column("settl_type", String(8), nullable=False),
    Column("settl_date", Date),
    Column("transact_us", BigInteger),
    Column("received_us", BigInteger, nullable=False),
    Column("spot_rate", DecimalText),
    Column("forward_points", DecimalText),
    Column("content_hash", String(32), nullable=False),
    UniqueConstraint("session", "exec_id", name="uq_fills_session_exec_id"),
)

# A report that reused an ExecID with other content: kept beside the first.
conflicts = Table(
    "conflicts", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("journal_id", BigInteger, nullable=False),
    Column("session", String(64), nullable=False),
    Column("exec_id", String(64), nullable=False),
    Column("original_hash", String(32), nullable=False),
    Column("conflicting_hash", String(32), nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Index("ix_conflicts_session_exec", "session", "exec_id"),
)

# The last inbound MsgSeqNum committed per session: where a restart resumes.
session_state = Table(
    "session_state", metadata,
    Column("session", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("resets", Integer, nullable=False, default=0),
    # the session day last_seq belongs to (stp/sessions.py): resumed only within it
    Column("session_day", String(16)),
    # the session's status as the gateway reported it
    Column("logged_on", Boolean),
    Column("last_logon_us", BigInteger),
    Column("last_logout_us", BigInteger),
    Column("last_reason", Text),
    # an outbound MsgSeqNum `session reset` set while no engine ran: applied at the next start
    Column("pending_outbound", Integer),
)

# Every `run_engine.py session reset`: who, when, why, before and after.
session_resets = Table(
    "session_resets", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False),
    Column("requested_by", String(80), nullable=False),
    Column("requested_us", BigInteger, nullable=False),
    Column("reason", Text),
    Column("inbound", Integer),
    Column("outbound", Integer),
    Column("state", String(16), nullable=False),
    Column("via", String(16)),
    Column("before_last_seq", Integer),
    Column("before_inbound", Integer),
    Column("before_outbound", Integer),
    Column("after_inbound", Integer),
    Column("after_outbound", Integer),
    Column("applied_us", BigInteger),
    Column("error", Text),
    Index("ix_session_resets_state", "state"),
)
