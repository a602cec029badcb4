"""The engine's database: migrations, the intake transaction, status queries.

One writer (the engine process) assigns row ids itself, so a batch is plain
INSERTs with no RETURNING round trip.  ``write_intake`` commits a batch's
journal rows, new fills, conflicts and each session's last inbound MsgSeqNum
in one transaction: after a crash, what is committed is exactly what was
processed, and the counterparty is asked to resend everything after the
committed sequence number.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.db import locks, schema
from adapters.db.intake_rows import conflict_row, fill_row, journal_row, price_row
from adapters.db.rows import ChangesWriter
from stp.intake import IntakeBatch, IntakeState
from stp.timestamps import us_to_datetime

log = structlog.get_logger("engine.db")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
REJECTED_OUTCOMES = ("dont_know", "business_reject", "session_reject")
# Every table the migrations create (for tests and benchmarks that start afresh).
PRICE_COLUMNS = ("symbol", "session", "bid", "offer", "price", "journal_id", "received_us")
ALL_TABLES = ("journal", "fills", "conflicts", "session_state", "bookings", "postings", "positions",
              "position_value_dates", "nets", "instructions", "breaks", "confirmations",
              "margin_accounts", "margin_events", "inbox", "pipeline_cursor", "outbox", "recon_runs",
              "market_prices", "session_resets", "alembic_version")


def now_us() -> int:
    return time.time_ns() // 1000


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error is about reaching the database (down, locked,
    timed out, the connection lost: try the same again later) rather than
    about what was written or a bug (which the same write would hit again).
    The one answer to that question: the command listener waits it out
    before storing a batch, the post-trade timer before applying a command
    (it never marks a command failed for it)."""
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # a connection found dead: whatever error it surfaced as (even an
        # IntegrityError), the statement never got a fair hearing
        return bool(exc.connection_invalidated) or isinstance(exc, sa_exc.OperationalError
                                                                | sa_exc.InterfaceError)
    return False


def _iso(us: int | None) -> str | None:
    return None if us is None else us_to_datetime(us).isoformat()


# ``_set_last_seq``: leave the stored session day as it is
KEEP: Any = object()


JOURNAL_COLUMNS = ("id", "session", "seq_num", "msg_type", "received_us", "committed_us", "poss_dup",
                   "exec_id", "outcome", "reason", "raw", "raw_encoding", "raw_size", "raw_truncated")
FILL_COLUMNS = ("id", "journal_id", "session", "exec_id", "kind", "exec_ref_id", "order_id", "cl_ord_id",
                "account", "symbol", "side", "currency", "last_qty", "last_px", "cum_qty", "leaves_qty",
                "avg_px", "order_qty", "trade_date", "settl_type", "settl_date", "transact_us",
                "received_us", "spot_rate", "forward_points", "content_hash")
CONFLICT_COLUMNS = ("id", "journal_id", "session", "exec_id", "original_hash", "conflicting_hash",
                    "received_us")


class Database:
    def __init__(self, url: str, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and not path.startswith(":memory:"):
                Path(path.split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        self._qmark = self.engine.dialect.paramstyle == "qmark"
        self._changes = ChangesWriter(self._qmark, self.is_sqlite)
        self._insert_journal = self._insert_sql("journal", JOURNAL_COLUMNS)
        self._insert_fills = self._insert_sql("fills", FILL_COLUMNS)
        self._insert_conflicts = self._insert_sql("conflicts", CONFLICT_COLUMNS)
        self._upsert_price = self._insert_sql("market_prices", PRICE_COLUMNS) + (
            " ON CONFLICT (symbol) DO UPDATE SET session = excluded.session, bid = excluded.bid, "
            "offer = excluded.offer, price = excluded.price, journal_id = excluded.journal_id, "
            "received_us = excluded.received_us")
        if self.is_sqlite:
            sync = sqlite_synchronous

            @event.listens_for(self.engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

    def _insert_sql(self, table: str, columns: Sequence[str]) -> str:
        marks = ", ".join("?" if self._qmark else f"${i + 1}" for i in range(len(columns)))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    async def drop_all(self) -> None:
        """Drop every table of the schema (tests and benchmarks only)."""
        async with self.engine.begin() as conn:
            for table in ALL_TABLES:
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}"
                                           + ("" if self.is_sqlite else " CASCADE"))

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """``async with Database(url) as db``: the pool is disposed however the
        block ends (an exception, a cancellation): no connection outlives it."""
        await self.close()

    def exclusive(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a lock called ``name`` that one process at a time can hold on
        this database, waiting for it if another holds it; a process that dies
        loses it (``adapters.db.locks``)."""
        return locks.exclusive(self.engine, self.url, name)

    def try_exclusive(self, name: str) -> contextlib.AbstractAsyncContextManager[bool]:
        """``exclusive`` without waiting: yields whether this process holds it."""
        return locks.try_exclusive(self.engine, self.url, name)

    # -- schema ---------------------------------------------------------
    async def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic), one process at a
        time: the engine and a desk command may start together."""

        def upgrade(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            else:
                # Python's sqlite3 runs DDL outside any transaction unless one
                # was begun: a process killed mid-migration left tables without
                # their alembic_version, and every later start failed ("table
                # already exists").  One explicit transaction: all or nothing.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        # PostgreSQL serialises migrations with the advisory lock above
        lock = self.exclusive("migrate") if self.is_sqlite else contextlib.nullcontext()
        async with lock, self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    # -- intake ---------------------------------------------------------
    async def load_intake_state(self) -> IntakeState:
        async with self.engine.connect() as conn:
            j = (await conn.execute(select(func.max(schema.journal.c.id)))).scalar() or 0
            f = (await conn.execute(select(func.max(schema.fills.c.id)))).scalar() or 0
            c = (await conn.execute(select(func.max(schema.conflicts.c.id)))).scalar() or 0
            s = schema.session_state.c
            rows = (await conn.execute(select(s.session, s.last_seq, s.session_day, s.updated_us,
                                              s.pending_outbound))).all()
        return IntakeState(j + 1, f + 1, c + 1, {r.session: r.last_seq for r in rows},
                           {r.session: r.session_day for r in rows},
                           {r.session: int(r.updated_us) for r in rows},
                           {r.session: int(r.pending_outbound) for r in rows
                            if r.pending_outbound is not None})

    async def known_hashes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Content hashes of the fills already stored under these (session, ExecID)."""
        out: dict[tuple[str, str], str] = {}
        by_session: dict[str, list[str]] = {}
        for session, exec_id in keys:
            by_session.setdefault(session, []).append(exec_id)
        async with self.engine.connect() as conn:
            for session, ids in by_session.items():
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    if self.is_sqlite:
                        sql = ("SELECT exec_id, content_hash FROM fills WHERE session = ? AND exec_id IN ("
                               + ", ".join("?" * len(chunk)) + ")")
                        params: tuple[Any, ...] = (session, *chunk)
                    else:
                        sql = ("SELECT exec_id, content_hash FROM fills "
                               "WHERE session = $1 AND exec_id = ANY($2::varchar[])")
                        params = (session, list(chunk))
                    rows = cast("list[tuple[str, str]]", (await conn.exec_driver_sql(sql, params)).all())
                    for exec_id, content_hash in rows:
                        out[(session, exec_id)] = content_hash
        return out

    async def write_intake(self, batch: IntakeBatch) -> None:
        """Journal, fills, conflicts and sequence numbers: one transaction."""
        stamp = now_us()
        async with self.engine.begin() as conn:
            if batch.journal:
                await conn.exec_driver_sql(self._insert_journal,
                                           [journal_row(j, stamp) for j in batch.journal])
            if batch.fills:
                await conn.exec_driver_sql(self._insert_fills, [fill_row(f, fill_id, journal_id)
                                                                for fill_id, journal_id, f in batch.fills])
            if batch.conflicts:
                await conn.exec_driver_sql(self._insert_conflicts, [conflict_row(c) for c in batch.conflicts])
            for session, seq in batch.last_seq.items():
                await self._set_last_seq(conn, session, seq, session in batch.resets, stamp,
                                         batch.session_days.get(session, KEEP))
            for session, values in batch.status.items():
                if values:
                    await self._set_session_status(conn, session, values, stamp)
            for applied in batch.resets_applied:
                r = schema.session_resets
                await conn.execute(r.update().where(r.c.id == applied["id"]).values(
                    {k: v for k, v in applied.items() if k != "id"}))
            if batch.prices:
                prices = [price_row(q, journal_id, received)
                          for q, journal_id, received in batch.prices.values()]
                await conn.exec_driver_sql(self._upsert_price, prices)
            if batch.breaks:
                await self._changes.write(conn, batch.breaks)

    async def latest_quotes(self) -> list[tuple[str, str, int, int]]:
        """(symbol, price text, received_us, journal_id): each pair's latest
        accepted quote (market_prices)."""
        async with self.engine.connect() as conn:
            rows = (await conn.exec_driver_sql(
                "SELECT symbol, price, received_us, journal_id FROM market_prices")).all()
        return [(str(symbol), str(price), int(received), int(journal_id))
                for symbol, price, received, journal_id in cast("list[tuple[Any, Any, Any, Any]]", rows)]

    async def traded_symbols(self) -> list[str]:
        """The pairs with a trade (kind F) in the fills."""
        async with self.engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT DISTINCT symbol FROM fills WHERE kind = 'F'")).all()
        return sorted(str(symbol) for (symbol,) in rows)

    async def trades_after(self, journal_id: int, after_id: int, limit: int = 20_000,
                           ) -> list[tuple[int, int, str, str, int]]:
        """(fill id, journal_id, symbol, spot price text, received_us) of the
        trades (kind F) journaled after ``journal_id``, from fill id
        ``after_id`` on, in the order the intake accepted them (LastSpotRate,
        else LastPx: the price that moves the intake's reference)."""
        async with self.engine.connect() as conn:
            f = schema.fills.c
            rows = (await conn.execute(
                select(f.id, f.journal_id, f.symbol, func.coalesce(f.spot_rate, f.last_px), f.received_us)
                .where(f.kind == "F", f.journal_id > journal_id, f.id > after_id)
                .order_by(f.id).limit(limit))).all()
        return [(int(i), int(j), str(symbol), str(price), int(received))
                for i, j, symbol, price, received in cast("list[tuple[Any, Any, Any, Any, Any]]", rows)]

    @staticmethod
    async def _set_last_seq(conn: Any, session: str, seq: int, reset: bool, stamp: int,
                            day: Any = None) -> None:
        s = schema.session_state
        values: dict[str, Any] = {"last_seq": seq, "updated_us": stamp}
        if day is not KEEP:
            values["session_day"] = day
        if reset:
            values["resets"] = s.c.resets + 1
        result = await conn.execute(s.update().where(s.c.session == session).values(**values))
        if result.rowcount == 0:
            await conn.execute(insert(s).values(session=session, last_seq=seq, updated_us=stamp,
                                                resets=1 if reset else 0,
                                                session_day=None if day is KEEP else day))

    @staticmethod
    async def _set_session_status(conn: Any, session: str, values: dict[str, Any], stamp: int) -> None:
        s = schema.session_state
        result = await conn.execute(s.update().where(s.c.session == session).values(**values))
        if result.rowcount == 0:
            await conn.execute(insert(s).values(session=session, last_seq=0, updated_us=stamp, resets=0,
                                                **values))

    # -- session days and `session reset` -------------------------------
    async def commit_session_day(self, session: str, day: str | None, last_seq: int = 0,
                                 reset: bool = True) -> None:
        """A new session day at start: the committed inbound MsgSeqNum starts
        again (the previous day's can no longer be resent)."""
        async with self.engine.begin() as conn:
            await self._set_last_seq(conn, session, last_seq, reset, now_us(), day)

    async def set_sessions_down(self, sessions: Sequence[str], reason: str) -> None:
        """Every session not logged on (the engine starts or stops)."""
        s = schema.session_state
        stamp = now_us()
        async with self.engine.begin() as conn:
            for session in sessions:
                await conn.execute(s.update().where((s.c.session == session) & (s.c.logged_on.is_(True)))
                                   .values(logged_on=False, last_logout_us=stamp, last_reason=reason))

    async def clear_pending_outbound(self, sessions: Sequence[str]) -> None:
        s = schema.session_state
        async with self.engine.begin() as conn:
            for session in sessions:
                await conn.execute(s.update().where(s.c.session == session).values(pending_outbound=None))

    async def request_session_reset(self, session: str, by: str, reason: str | None, inbound: int | None,
                                    outbound: int | None) -> int:
        """Queue a `session reset` for the running engine (state pending)."""
        r = schema.session_resets
        async with self.engine.begin() as conn:
            result = await conn.execute(insert(r).values(
                session=session, requested_by=by, requested_us=now_us(), reason=reason, inbound=inbound,
                outbound=outbound, state="pending", via="engine"))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    async def apply_session_reset(self, session: str, by: str, reason: str | None, inbound: int | None,
                                  outbound: int | None, day: str | None) -> dict[str, Any]:
        """`session reset` with no engine running: the committed inbound number
        (and its session day) and the outbound number for the next start, with
        the audit row, in one transaction."""
        s, r = schema.session_state, schema.session_resets
        stamp = now_us()
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(s.c.last_seq, s.c.pending_outbound)
                                      .where(s.c.session == session))).first()
            before_last = None if row is None else int(row.last_seq)
            if inbound is not None:
                await self._set_last_seq(conn, session, inbound - 1, True, stamp, day)
            if outbound is not None:
                await self._set_session_status(conn, session, {"pending_outbound": outbound}, stamp)
            values = {"session": session, "requested_by": by, "requested_us": stamp, "reason": reason,
                      "inbound": inbound, "outbound": outbound, "state": "applied", "via": "database",
                      "before_last_seq": before_last,
                      "before_inbound": None if before_last is None else before_last + 1,
                      "after_inbound": inbound, "after_outbound": outbound, "applied_us": stamp}
            result = await conn.execute(insert(r).values(**values))
            key = result.inserted_primary_key
            assert key is not None
            values["id"] = int(key[0])
        return values

    async def pending_session_resets(self) -> list[dict[str, Any]]:
        r = schema.session_resets
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(r).where(r.c.state == "pending").order_by(r.c.id))
            return [dict(x._mapping) for x in rows]

    async def session_reset_row(self, reset_id: int) -> dict[str, Any] | None:
        r = schema.session_resets
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(r).where(r.c.id == reset_id))).first()
        return None if row is None else dict(row._mapping)

    async def fail_session_reset(self, reset_id: int, error: str) -> None:
        r = schema.session_resets
        async with self.engine.begin() as conn:
            await conn.execute(r.update().where(r.c.id == reset_id).values(
                state="failed", error=error[:300], applied_us=now_us()))

    # -- reports --------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        j, f = schema.journal.c, schema.fills.c
        async with self.engine.connect() as conn:
            executions = (await conn.execute(select(func.count()).select_from(schema.fills))).scalar()
            outcomes: dict[str, int] = dict((await conn.execute(
                select(j.outcome, func.count()).group_by(j.outcome))).all())
            conflicts = (await conn.execute(select(func.count()).select_from(schema.conflicts))).scalar()
            by_kind: dict[str, int] = dict(
                (await conn.execute(select(f.kind, func.count()).group_by(f.kind))).all())
            by_session: dict[str, int] = dict((await conn.execute(
                select(f.session, func.count()).group_by(f.session))).all())
            seqs = (await conn.execute(select(schema.session_state))).all()
            not_utf8 = (await conn.execute(select(func.count()).select_from(schema.journal)
                                           .where(j.raw_encoding != "utf-8"))).scalar()
        return {
            "executions": int(executions or 0),
            "executions_by_kind": {str(k): int(v) for k, v in by_kind.items()},
            "duplicates_ignored": int(outcomes.get("duplicate", 0)),
            "conflicts": int(conflicts or 0),
            "rejected": int(sum(outcomes.get(o, 0) for o in REJECTED_OUTCOMES)),
            "rejected_by_outcome": {o: int(outcomes.get(o, 0)) for o in REJECTED_OUTCOMES},
            "not_fills": int(outcomes.get("not_a_fill", 0)),
            "oversized": int(outcomes.get("oversized", 0)),
            "poison": int(outcomes.get("poison", 0)),
            "raw_not_utf8": int(not_utf8 or 0),
            "journal": int(sum(outcomes.values())),
            "sessions": {r.session: {"last_seq": int(r.last_seq), "resets": int(r.resets),
                                     "executions": int(by_session.get(r.session, 0)),
                                     "session_day": r.session_day,
                                     "logged_on": r.logged_on,
                                     "last_logon": _iso(r.last_logon_us),
                                     "last_logout": _iso(r.last_logout_us),
                                     "last_reason": r.last_reason}
                         for r in seqs},
        }

    async def journal_rows(self, session: str | None = None) -> list[dict[str, Any]]:
        return await self._rows(schema.journal, session)

    async def fills_rows(self, session: str | None = None) -> list[dict[str, Any]]:
        return await self._rows(schema.fills, session)

    async def _rows(self, table: Any, session: str | None) -> list[dict[str, Any]]:
        query = select(table).order_by(table.c.id)
        if session is not None:
            query = query.where(table.c.session == session)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]
