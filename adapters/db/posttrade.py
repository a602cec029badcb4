"""Storage of the post-trade stages: one transaction per batch, and the reads a
restart and a reversal need.

Rows arrive as tuples in the column order of the INSERTs below and go out
with driver-level executemany (as the intake does).  Upserts use
``INSERT ... ON CONFLICT ... DO UPDATE``, which SQLite and PostgreSQL share.
Amounts are exact decimal text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.repository import Database, now_us, us_to_datetime
from stp.booking import Booking, BookingKind, Posting, TradeAmounts
from stp.breaks import Break, occurrence_after_detection
from stp.events import BusEvent, break_changed, break_detected
from stp.fills import ExecKind, Fill, Side
from stp.valuedates import CurrencyPair

_UPSERTS = {
    "bookings": ("INSERT INTO bookings (booking_id, seq, kind, fill_id, fill_session, fill_exec_id, "
                 "reverses, account, counterparty, pair, side, base_amount, quote_amount, price, "
                 "value_date, booked_us, allocated_from, allocated_by) VALUES ({})", 18),
    "postings": ("INSERT INTO postings (id, booking_id, ledger, party, amount, value_date) VALUES ({})", 6),
    "positions": ("INSERT INTO positions (account, pair, quantity, average_price, realised_pnl, quote_flow, "
                  "updated_us) VALUES ({}) ON CONFLICT (account, pair) DO UPDATE SET "
                  "quantity = excluded.quantity, average_price = excluded.average_price, "
                  "realised_pnl = excluded.realised_pnl, quote_flow = excluded.quote_flow, "
                  "updated_us = excluded.updated_us", 7),
    "position_value_dates": ("INSERT INTO position_value_dates (account, pair, value_date, quantity) "
                             "VALUES ({}) ON CONFLICT (account, pair, value_date) DO UPDATE SET "
                             "quantity = excluded.quantity", 4),
    "nets": ("INSERT INTO nets (counterparty, currency, value_date, amount, updated_us) VALUES ({}) "
             "ON CONFLICT (counterparty, currency, value_date) DO UPDATE SET amount = excluded.amount, "
             "updated_us = excluded.updated_us", 5),
    "instructions": ("INSERT INTO instructions (instruction_id, counterparty, currency, value_date, "
                     "version, adjustment, amount, state, ssi, instructed_us, settled_us, "
                     "failure_reason, updated_us) VALUES ({}) ON CONFLICT (instruction_id) DO UPDATE "
                     "SET amount = excluded.amount, state = excluded.state, ssi = excluded.ssi, "
                     "instructed_us = excluded.instructed_us, settled_us = excluded.settled_us, "
                     "failure_reason = excluded.failure_reason, updated_us = excluded.updated_us", 13),
    "breaks": ("INSERT INTO breaks (break_id, type, severity, keys, summary, ours, theirs, state, "
               "detected_us, last_seen_us, occurrences, cut_off_us) VALUES ({}) ON CONFLICT (break_id) "
               "DO UPDATE SET last_seen_us = excluded.last_seen_us, occurrences = breaks.occurrences + 1",
               12),
    "confirmations": ("INSERT INTO confirmations (fill_id, session, exec_id, state, differences, "
                      "updated_us) VALUES ({}) ON CONFLICT (fill_id) DO UPDATE SET state = excluded.state, "
                      "differences = excluded.differences, updated_us = excluded.updated_us", 6),
    "margin_accounts": ("INSERT INTO margin_accounts (account, currency, balance, unrealised_pnl, equity, "
                        "used_margin, free_margin, margin_level, state, updated_us, priced_state) "
                        "VALUES ({}) "
                        "ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, "
                        "unrealised_pnl = excluded.unrealised_pnl, equity = excluded.equity, "
                        "used_margin = excluded.used_margin, free_margin = excluded.free_margin, "
                        "margin_level = excluded.margin_level, state = excluded.state, "
                        "updated_us = excluded.updated_us, priced_state = excluded.priced_state", 11),
    "margin_events": ("INSERT INTO margin_events (id, account, kind, margin_level, equity, used_margin, "
                      "at_us) VALUES ({})", 7),
    # events for the bus, committed with what they describe (transactional outbox)
    "outbox": ("INSERT INTO outbox (event_id, topic, payload, retain, created_us) VALUES ({})", 5),
}
_BREAK_STATE = ("UPDATE breaks SET state = ?, acknowledged_by = COALESCE(?, acknowledged_by), "
                "acknowledged_us = COALESCE(?, acknowledged_us), resolved_by = COALESCE(?, resolved_by), "
                "resolved_us = COALESCE(?, resolved_us), resolution = COALESCE(?, resolution) "
                "WHERE break_id = ?")
# a resolved break detected again: open again, as its next occurrence; who
# acknowledged and resolved the previous one, and why, are cleared (the new
# occurrence has not been acknowledged nor resolved); resolved_us stays, the
# time the previous occurrence was resolved (reopened_us is after it)
_REOPEN = ("UPDATE breaks SET state = 'open', occurrence = ?, reopened_us = ?, severity = ?, summary = ?, "
           "ours = ?, theirs = ?, cut_off_us = ?, escalated_us = NULL, acknowledged_by = NULL, "
           "acknowledged_us = NULL, resolved_by = NULL, resolution = NULL "
           "WHERE break_id = ? AND state = 'resolved'")
# unreversed trade bookings (callers add their conditions)
_ACTIVE_TRADES = ("SELECT b.booking_id, b.account, b.counterparty, b.pair, b.side, b.base_amount, "
                  "b.quote_amount, b.price, b.value_date FROM bookings b WHERE b.kind = 'trade' "
                  "AND NOT EXISTS (SELECT 1 FROM bookings r WHERE r.reverses = b.booking_id) ")
# the same with the postings of each (one row per posting, in posting id order)
_ACTIVE_TRADES_WITH_POSTINGS = (
    "SELECT b.booking_id, b.fill_session, b.fill_exec_id, b.account, b.counterparty, b.pair, b.side, "
    "b.base_amount, b.quote_amount, b.price, b.value_date, p.ledger, p.party, p.amount, p.value_date "
    "FROM bookings b LEFT JOIN postings p ON p.booking_id = b.booking_id WHERE b.kind = 'trade' "
    "AND NOT EXISTS (SELECT 1 FROM bookings r WHERE r.reverses = b.booking_id) ")
# the order a batch is written in
_TABLES = tuple(_UPSERTS)


# date -> its ISO text, for SQLite (bounded: value dates are few)
_ISO_DAYS: dict[date, str] = {}


def _iso_day(d: Any) -> Any:
    """What sqlite3's default adapter binds for a date (its ISO text), without
    the adapter's Python call per value in the driver's thread; anything but a
    plain date is left to the driver."""
    text = _ISO_DAYS.get(d)
    if text is None:
        if type(d) is not date:
            return d
        if len(_ISO_DAYS) >= 10_000:
            _ISO_DAYS.clear()
        text = _ISO_DAYS[d] = d.isoformat()
    return text


def _same(d: Any) -> Any:
    return d


def text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(slots=True)
class PostTradeWrite:
    """Everything one batch changes, written in one transaction."""

    rows: dict[str, dict[Any, tuple[Any, ...]]] = field(
        default_factory=lambda: {t: {} for t in _TABLES})
    inbox_done: list[tuple[int, str]] = field(default_factory=list)    # (id, result)
    inbox_replies: dict[int, str] = field(default_factory=dict)        # id -> the reply published
    break_states: list[tuple[Any, ...]] = field(default_factory=list)  # lifecycle changes
    # break id -> its state after this batch's changes (a tick of N commands
    # looked them up by scanning break_states: N^2/2)
    changed_state: dict[str, str] = field(default_factory=dict)
    escalated: list[tuple[int, str]] = field(default_factory=list)     # (stamp, break_id)
    # break id -> its detections' (outbox key, break, topic prefix, stamp): a
    # resolved break detected again reopens as its next occurrence, with events
    # of their own (``PostTradeStore.write_rows``)
    detected: dict[str, list[tuple[Any, Break, str, int]]] = field(default_factory=dict)
    # breaks the engine resolves itself: (break, by, reason, topic prefix, stamp),
    # and their ids (a detection of one of them in the same write is dropped)
    resolved: list[tuple[Break, str, str, str, int]] = field(default_factory=list)
    resolving: set[str] = field(default_factory=set)
    cursor: int | None = None

    def put(self, table: str, key: Any, row: tuple[Any, ...]) -> None:
        """Upserted tables keep the last row per key; insert-only tables need unique keys."""
        self.rows[table][key] = row

    def change_break(self, change: tuple[Any, ...]) -> None:
        """A lifecycle change: (state, acknowledged by, at, resolved by, at, reason, break id)."""
        self.break_states.append(change)
        self.changed_state[change[-1]] = change[0]

    def publish(self, event: BusEvent, stamp_us: int) -> Any:
        """Queue a bus event (its key in the outbox rows is returned);
        retained topics keep only the batch's last state."""
        outbox = self.rows["outbox"]
        key = event.topic if event.retain else (event.event_id, len(outbox))
        outbox[key] = (event.event_id, event.topic, event.payload, event.retain, stamp_us)
        return key

    def __bool__(self) -> bool:
        return any(self.rows.values()) or bool(self.inbox_done) or bool(self.break_states) \
            or bool(self.escalated) or bool(self.resolved) or self.cursor is not None


class PostTradeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        qmark = db.engine.dialect.paramstyle == "qmark"
        self._sql = {t: sql.format(", ".join("?" if qmark else f"${i + 1}" for i in range(n)))
                     for t, (sql, n) in _UPSERTS.items()}
        self._qmark = qmark
        # a date as a statement parameter: SQLite stores the ISO text either way
        # (bound here, it skips the adapter call per value); asyncpg wants the date
        self.day: Callable[[Any], Any] = _iso_day if db.is_sqlite else _same

    def query(self, sql: str) -> str:
        """Queries are written with ?; PostgreSQL (asyncpg) wants $1, $2, ..."""
        if self._qmark:
            return sql
        parts = sql.split("?")
        return "".join(part + (f"${i + 1}" if i < len(parts) - 1 else "") for i, part in enumerate(parts))

    async def write(self, w: PostTradeWrite) -> None:
        stamp = now_us()
        async with self.db.engine.begin() as conn:
            await self.write_rows(conn, w)
            mark_done = self.query("UPDATE inbox SET applied_us = ?, result = ?, reply = ? WHERE id = ?")
            replies = w.inbox_replies
            for inbox_id, result in w.inbox_done:
                await conn.exec_driver_sql(mark_done, (stamp, result, replies.get(inbox_id), inbox_id))
            if w.cursor is not None:
                await self._set_cursor(conn, w.cursor, stamp)

    async def write_rows(self, conn: AsyncConnection, w: PostTradeWrite) -> None:
        """The rows of ``w`` inside the caller's transaction."""
        if w.resolving and w.detected:
            _drop_resolved_detections(w)
        reopened = await self._occurrences(conn, w) if w.detected else []
        resolved_states, resolved_events = await self._resolutions(conn, w) if w.resolved else ([], [])
        for table in _TABLES:
            rows = w.rows[table]
            if rows:
                await conn.exec_driver_sql(self._sql[table], list(rows.values()))
        if w.break_states:
            await conn.exec_driver_sql(self.query(_BREAK_STATE), w.break_states)
        if w.escalated:
            await conn.exec_driver_sql(self.query("UPDATE breaks SET escalated_us = ? WHERE break_id = ?"),
                                       w.escalated)
        if reopened:
            await conn.exec_driver_sql(self.query(_REOPEN), reopened)
        if resolved_states:
            await conn.exec_driver_sql(self.query(_BREAK_STATE), resolved_states)
            await conn.exec_driver_sql(self._sql["outbox"], resolved_events)

    async def _resolutions(self, conn: AsyncConnection, w: PostTradeWrite
                           ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The state changes and events of the breaks the engine resolves
        (``w.resolved``) that are stored and not resolved already, neither in
        the database nor by a lifecycle change of the same write
        (``w.changed_state``); each event carries the stored occurrence (a
        reopened break's resolution is that occurrence's, not the first's).
        Detections of the same write were dropped (``_drop_resolved_detections``)."""
        ids = list({brk.break_id for brk, *_ in w.resolved})
        stored: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await conn.exec_driver_sql(self.query(
                "SELECT break_id, state, occurrence FROM breaks WHERE break_id IN ("
                + ", ".join("?" * len(chunk)) + ")"), tuple(chunk))
            for row in rows.all():
                r: tuple[Any, ...] = tuple(row)
                stored[str(r[0])] = (str(r[1]), int(r[2]))
        states: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for brk, by, reason, prefix, stamp in w.resolved:
            state, occurrence = stored.get(brk.break_id, ("resolved", 1))
            state = w.changed_state.get(brk.break_id, state)      # the desk's, earlier in this write
            if state == "resolved":
                continue
            stored[brk.break_id] = ("resolved", occurrence)
            states.append(("resolved", None, None, by, stamp, reason, brk.break_id))
            e = break_changed(brk.break_id, brk.type.value, brk.keys, "resolved", by, reason, prefix,
                              us_to_datetime(stamp), occurrence)
            events.append((e.event_id, e.topic, e.payload, e.retain, stamp))
        return states, events

    async def _occurrences(self, conn: AsyncConnection, w: PostTradeWrite) -> list[tuple[Any, ...]]:
        """The stored state of each break ``w`` detects: one seen again after
        its occurrence n, or resolved (it reopens as occurrence n + 1), gets
        that occurrence's events (``stp.breaks.occurrence_id``) instead of the
        first's.  Returns the reopenings to write (``_REOPEN``)."""
        ids = list(w.detected)
        stored: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await conn.exec_driver_sql(self.query(
                "SELECT break_id, state, occurrence FROM breaks WHERE break_id IN ("
                + ", ".join("?" * len(chunk)) + ")"), tuple(chunk))
            for row in rows.all():
                r: tuple[Any, ...] = tuple(row)
                stored[str(r[0])] = (str(r[1]), int(r[2]))
        for change in w.break_states:       # changed earlier in this same transaction
            if change[-1] in stored:
                stored[change[-1]] = (change[0], stored[change[-1]][1])
        reopened: list[tuple[Any, ...]] = []
        outbox = w.rows["outbox"]
        for break_id, (state, occurrence) in stored.items():
            n, reopens = occurrence_after_detection(state, occurrence)
            if n == 1:
                continue                    # the events queued already carry the break id
            stamp = 0
            for key, brk, prefix, stamp in w.detected[break_id]:
                event = break_detected(brk, prefix, us_to_datetime(stamp), n)
                outbox[key] = (event.event_id, event.topic, event.payload, event.retain, stamp)
            if reopens:
                new = w.rows["breaks"][break_id]
                # the new occurrence's values, its cut-off, not escalated yet
                reopened.append((n, stamp, new[2], new[4], new[5], new[6], new[11], break_id))
        return reopened

    async def _set_cursor(self, conn: AsyncConnection, fill_id: int, stamp: int) -> None:
        result = await conn.exec_driver_sql(
            self.query("UPDATE pipeline_cursor SET last_fill_id = ?, updated_us = ? WHERE stage = ?"),
            (fill_id, stamp, "posttrade"))
        if result.rowcount == 0:
            await conn.exec_driver_sql(
                self.query("INSERT INTO pipeline_cursor (stage, last_fill_id, updated_us) VALUES (?, ?, ?)"),
                ("posttrade", fill_id, stamp))

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.db.engine.connect() as conn:
            return [tuple(r) for r in (await conn.exec_driver_sql(self.query(sql), params)).all()]

    # -- restart ------------------------------------------------------------
    async def cursor(self) -> int:
        rows = await self.fetch("SELECT last_fill_id FROM pipeline_cursor WHERE stage = ?", ("posttrade",))
        return int(rows[0][0]) if rows else 0

    async def next_ids(self) -> tuple[int, int, int]:
        """Next booking seq, posting id, margin event id."""
        b = await self.fetch("SELECT COALESCE(MAX(seq), 0) FROM bookings")
        p = await self.fetch("SELECT COALESCE(MAX(id), 0) FROM postings")
        e = await self.fetch("SELECT COALESCE(MAX(id), 0) FROM margin_events")
        return int(b[0][0]) + 1, int(p[0][0]) + 1, int(e[0][0]) + 1

    async def fills_after(self, fill_id: int, limit: int) -> list[tuple[int, Fill]]:
        rows = await self.fetch(
            "SELECT id, session, exec_id, kind, exec_ref_id, order_id, cl_ord_id, account, symbol, side, "
            "currency, last_qty, last_px, cum_qty, leaves_qty, avg_px, order_qty, trade_date, settl_type, "
            "settl_date, transact_us, received_us, spot_rate, forward_points, content_hash "
            "FROM fills WHERE id > ? ORDER BY id LIMIT ?", (fill_id, limit))
        return [(int(r[0]), fill_from_row(r[1:])) for r in rows]

    async def active_trade_bookings(self, keys: Iterable[tuple[str, str]]
                                    ) -> dict[tuple[str, str], Booking]:
        """``active_trade_booking`` of many fill keys (session, exec_id) at once:
        one query per session and 500 keys (a batch's cancels and corrections)."""
        by_session: dict[str, list[str]] = {}
        for session, exec_id in keys:
            by_session.setdefault(session, []).append(exec_id)
        heads: dict[str, tuple[Any, ...]] = {}
        postings: dict[str, list[Posting]] = {}
        for session, exec_ids in by_session.items():
            for i in range(0, len(exec_ids), 500):
                chunk = exec_ids[i:i + 500]
                rows = await self.fetch(
                    _ACTIVE_TRADES_WITH_POSTINGS + "AND b.fill_session = ? AND b.fill_exec_id IN ("
                    + ", ".join("?" * len(chunk)) + ") ORDER BY p.id", (session, *chunk))
                for r in rows:
                    booking_id = r[0]
                    if booking_id not in heads:
                        heads[booking_id] = r[:11]
                        postings[booking_id] = []
                    if r[11] is not None:
                        postings[booking_id].append(Posting(r[11], r[12], Decimal(r[13]), _date(r[14])))
        out: dict[tuple[str, str], Booking] = {}
        for booking_id, r in heads.items():
            key = (r[1], r[2])
            if key in out:
                continue
            out[key] = Booking(
                booking_id=booking_id, kind=BookingKind.TRADE, fill_key=key, reverses=None,
                account=r[3], counterparty=r[4], pair=r[5], postings=tuple(postings[booking_id]),
                trade=_trade(r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]))
        return out

    async def active_trade_booking(self, session: str, exec_id: str) -> Booking | None:
        rows = await self.fetch(_ACTIVE_TRADES + "AND b.fill_session = ? AND b.fill_exec_id = ?",
                                (session, exec_id))
        if not rows:
            return None
        r = rows[0]
        postings = await self.fetch("SELECT ledger, party, amount, value_date FROM postings "
                                    "WHERE booking_id = ? ORDER BY id", (r[0],))
        return Booking(
            booking_id=r[0], kind=BookingKind.TRADE, fill_key=(session, exec_id), reverses=None,
            account=r[1], counterparty=r[2], pair=r[3],
            postings=tuple(Posting(p[0], p[1], Decimal(p[2]), _date(p[3])) for p in postings),
            trade=_trade(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]))


def _drop_resolved_detections(w: PostTradeWrite) -> None:
    """A break the engine resolves in the same write that detects it: the
    detection is dropped (its cause is gone before anything is committed),
    so a break raised and resolved within one batch is never raised, and a
    stored one is resolved, not seen again or reopened first."""
    outbox, rows = w.rows["outbox"], w.rows["breaks"]
    for break_id in w.resolving.intersection(w.detected):
        for key, *_ in w.detected.pop(break_id):
            outbox.pop(key, None)
        rows.pop(break_id, None)


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _trade(account: str, counterparty: str, pair: str, side: str, base: str, quote: str, price: str,
           value_date: Any) -> TradeAmounts:
    return TradeAmounts(account=account, counterparty=counterparty, pair=CurrencyPair.parse(pair),
                        side=Side(side), base_amount=Decimal(base), quote_amount=Decimal(quote),
                        price=Decimal(price), value_date=_date(value_date))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = {kind.value: kind for kind in ExecKind}
_SIDES = {side.value: side for side in Side}
_PAIRS: dict[str, CurrencyPair] = {}            # symbol -> parsed pair (bounded: a few dozen)


def _pair(symbol: str) -> CurrencyPair:
    pair = _PAIRS.get(symbol)
    if pair is None:
        pair = CurrencyPair.parse(symbol)
        if len(_PAIRS) < 4096:
            _PAIRS[symbol] = pair
    return pair


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


def fill_from_row(r: tuple[Any, ...]) -> Fill:
    """A stored fill back as the typed event (columns as in ``fills_after``).

    Per fill read back (the post-trade process reads every fill so): the
    enum members and parsed pairs are looked up, not rebuilt; microseconds
    since the epoch become timedelta(days, seconds, microseconds) given
    positionally (the same value; keywords cost half as much again)."""
    return Fill(
        session=r[0], exec_id=r[1], kind=_KINDS.get(r[2]) or ExecKind(r[2]), exec_ref_id=r[3],
        order_id=r[4], cl_ord_id=r[5], account=r[6], pair=_pair(r[7]),
        side=_SIDES.get(r[8]) or Side(r[8]), currency=r[9],
        last_qty=Decimal(r[10]), last_px=Decimal(r[11]), cum_qty=_dec(r[12]), leaves_qty=_dec(r[13]),
        avg_px=_dec(r[14]), order_qty=_dec(r[15]), trade_date=_date(r[16]), settl_type=r[17],
        settl_date=_date(r[18]),
        transact_time=None if r[19] is None else _EPOCH + timedelta(0, 0, int(r[19])),
        received_at=_EPOCH + timedelta(0, 0, int(r[20])), spot_rate=_dec(r[21]),
        forward_points=_dec(r[22]), content_hash=r[23])
