"""The post-trade tables' rows (the intake's: ``intake_rows.py``): each
domain value a batch changes (``stp.changes.BatchChanges``) becomes its row
here, and only here; and the
writer that puts a batch's rows into the database inside the caller's
transaction (the post-trade commit, and the intake's, whose breaks go with
its own rows).

Rows go out with driver-level executemany, in the column order of the
statements below.  Upserts use ``INSERT ... ON CONFLICT ... DO UPDATE``,
which SQLite and PostgreSQL share.  Amounts are exact decimal text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stp.breaks import occurrence_after_detection
from stp.changes import BatchChanges, Booked, Confirmation, Detected
from stp.events import BusEvent, break_changed, break_detected
from stp.margin import AccountMargin, MarginEvent
from stp.netting import NetKey
from stp.positions import Position
from stp.settlement import Instruction
from stp.timestamps import datetime_to_us, us_to_datetime

_STATEMENTS = {
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


def text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def stored_date(value: Any) -> date | None:
    """A date column as stored: a date (asyncpg), its ISO text (SQLite), or NULL."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# date -> its ISO text, for SQLite (bounded: value dates are few)
_ISO_DAYS: dict[date, str] = {}


def _iso_day(d: Any) -> Any:
    """What sqlite3's default adapter binds for a date (its ISO text), without
    the adapter's Python call per value in the driver's thread; anything but a
    plain date is left to the driver."""
    iso = _ISO_DAYS.get(d)
    if iso is None:
        if type(d) is not date:
            return d
        if len(_ISO_DAYS) >= 10_000:
            _ISO_DAYS.clear()
        iso = _ISO_DAYS[d] = d.isoformat()
    return iso


def _same(d: Any) -> Any:
    return d


def qmark_to_numbered(sql: str) -> str:
    """Queries are written with ?; PostgreSQL (asyncpg) wants $1, $2, ..."""
    parts = sql.split("?")
    return "".join(part + (f"${i + 1}" if i < len(parts) - 1 else "") for i, part in enumerate(parts))


# -- value -> row, one function per table --------------------------------------
def booking_rows(entry: Booked, day: Callable[[Any], Any]
                 ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """A booking's row and its postings' rows (consecutive ids from the first)."""
    b = entry.booking
    t = b.trade
    session, exec_id = b.fill_key if b.fill_key else (None, None)
    if t is not None:
        trade: tuple[Any, ...] = (t.side._value_, text(t.base_amount), text(t.quote_amount),
                                  text(t.price), day(t.value_date))
    else:
        trade = (None, None, None, None, None)
    row = (b.booking_id, entry.seq, b.kind._value_, entry.fill_id, session, exec_id, b.reverses,
           b.account, b.counterparty, b.pair, *trade, entry.at_us, b.allocated_from, entry.by)
    first = entry.first_posting_id
    postings = [(first + i, b.booking_id, p.ledger, p.party, str(p.amount), day(p.value_date))
                for i, p in enumerate(b.postings)]
    return row, postings


def position_row(key: tuple[str, str], position: Position, at_us: int) -> tuple[Any, ...]:
    """The position of (account, pair) ``key``."""
    return (key[0], key[1], str(position.quantity), text(position.average_price),
            str(position.realised_pnl), str(position.quote_flow), at_us)


def net_row(key: NetKey, amount: Decimal, at_us: int) -> tuple[Any, ...]:
    return (key.counterparty, key.currency, key.value_date, str(amount), at_us)


def _us(dt: datetime | None) -> int | None:
    return None if dt is None else datetime_to_us(dt)


def instruction_row(ins: Instruction) -> tuple[Any, ...]:
    ssi = None if ins.ssi is None else to_json({"bank_bic": ins.ssi.bank_bic, "account": ins.ssi.account,
                                                "version": ins.ssi.version})
    updated = ins.updated_at or ins.instructed_at or datetime.now(UTC)
    return (ins.instruction_id, ins.key.counterparty, ins.key.currency, ins.key.value_date, ins.version,
            ins.adjustment, str(ins.amount), ins.state.value, ssi, _us(ins.instructed_at),
            _us(ins.settled_at or ins.failed_at), ins.failure_reason, _us(updated))


def break_row(d: Detected) -> tuple[Any, ...]:
    brk = d.brk
    return (brk.break_id, brk.type.value, brk.level.value, to_json(brk.keys), brk.summary,
            to_json(brk.ours), to_json(brk.theirs), "open", d.at_us, d.at_us, 1, d.cut_off_us)


def confirmation_row(c: Confirmation) -> tuple[Any, ...]:
    if c.expired_by is not None:
        differences: str | None = to_json({"break": c.expired_by})
    elif c.differences:
        differences = to_json([{"field": d.field, "lp": d.lp, "platform": d.platform}
                               for d in c.differences])
    else:
        differences = None
    return (c.fill_id, c.session, c.exec_id, c.state, differences, c.at_us)


def margin_row(account: str, m: AccountMargin, at_us: int) -> tuple[Any, ...]:
    return (account, m.currency, str(m.balance), str(m.unrealised_pnl), str(m.equity), str(m.used_margin),
            str(m.free_margin), text(m.margin_level), m.state, at_us, m.priced_state)


def margin_event_row(event_id: int, e: MarginEvent, at_us: int) -> tuple[Any, ...]:
    return (event_id, e.account, str(e.kind), text(e.margin_level), str(e.equity), str(e.used_margin), at_us)


def outbox_row(event: BusEvent, at_us: int) -> tuple[Any, ...]:
    return (event.event_id, event.topic, event.payload, event.retain, at_us)


class ChangesWriter:
    """Writes a ``BatchChanges`` inside the caller's transaction."""

    def __init__(self, qmark: bool, sqlite: bool) -> None:
        self._qmark = qmark
        self._sql = {t: sql.format(", ".join("?" if qmark else f"${i + 1}" for i in range(n)))
                     for t, (sql, n) in _STATEMENTS.items()}
        # a date as a statement parameter: SQLite stores the ISO text either way
        # (bound here, it skips the adapter call per value); asyncpg wants the date
        self.day: Callable[[Any], Any] = _iso_day if sqlite else _same

    def query(self, sql: str) -> str:
        return sql if self._qmark else qmark_to_numbered(sql)

    def rows(self, w: BatchChanges) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Every table's rows, in the order a batch is written in."""
        day = self.day
        bookings: list[tuple[Any, ...]] = []
        postings: list[tuple[Any, ...]] = []
        for entry in w.bookings.values():
            row, booking_postings = booking_rows(entry, day)
            bookings.append(row)
            postings += booking_postings
        return [
            ("bookings", bookings),
            ("postings", postings),
            ("positions", [position_row(key, p, at) for key, (p, at) in w.positions.items()]),
            ("position_value_dates", [(account, pair, vd, str(qty))
                                      for (account, pair, vd), qty in w.dated.items()]),
            ("nets", [net_row(key, amount, at) for key, (amount, at) in w.nets.items()]),
            ("instructions", [instruction_row(i) for i in w.instructions.values()]),
            ("breaks", [break_row(d) for d in w.breaks.values()]),
            ("confirmations", [confirmation_row(c) for c in w.confirmations.values()]),
            ("margin_accounts", [margin_row(a, m, at) for a, (m, at) in w.margins.items()]),
            ("margin_events", [margin_event_row(i, e, at) for i, (e, at) in w.margin_events.items()]),
            ("outbox", [outbox_row(e, at) for e, at in w.outbox.values()]),
        ]

    async def write(self, conn: AsyncConnection, w: BatchChanges) -> None:
        """The changes of ``w`` inside the caller's transaction."""
        if w.resolving and w.detected:
            _drop_resolved_detections(w)
        reopened = await self._occurrences(conn, w) if w.detected else []
        resolved_states, resolved_events = await self._resolutions(conn, w) if w.resolved else ([], [])
        for table, rows in self.rows(w):
            if rows:
                await conn.exec_driver_sql(self._sql[table], rows)
        if w.lifecycle:
            await conn.exec_driver_sql(self.query(_BREAK_STATE), [
                (c.state, c.by, c.at_us, None, None, None, c.break_id) if c.state == "acknowledged"
                else (c.state, None, None, c.by, c.at_us, c.reason, c.break_id) for c in w.lifecycle])
        if w.escalated:
            await conn.exec_driver_sql(self.query("UPDATE breaks SET escalated_us = ? WHERE break_id = ?"),
                                       w.escalated)
        if reopened:
            await conn.exec_driver_sql(self.query(_REOPEN), reopened)
        if resolved_states:
            await conn.exec_driver_sql(self.query(_BREAK_STATE), resolved_states)
            await conn.exec_driver_sql(self._sql["outbox"], resolved_events)

    async def _stored_states(self, conn: AsyncConnection, ids: list[str]) -> dict[str, tuple[str, int]]:
        stored: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await conn.exec_driver_sql(self.query(
                "SELECT break_id, state, occurrence FROM breaks WHERE break_id IN ("
                + ", ".join("?" * len(chunk)) + ")"), tuple(chunk))
            for row in rows.all():
                r: tuple[Any, ...] = tuple(row)
                stored[str(r[0])] = (str(r[1]), int(r[2]))
        return stored

    async def _resolutions(self, conn: AsyncConnection, w: BatchChanges
                           ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The state changes and events of the breaks the engine resolves
        (``w.resolved``) that are stored and not resolved already, neither in
        the database nor by a lifecycle change of the same write
        (``w.changed_state``); each event carries the stored occurrence (a
        reopened break's resolution is that occurrence's, not the first's).
        Detections of the same write were dropped (``_drop_resolved_detections``)."""
        stored = await self._stored_states(conn, list({r.brk.break_id for r in w.resolved}))
        states: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for r in w.resolved:
            brk = r.brk
            state, occurrence = stored.get(brk.break_id, ("resolved", 1))
            state = w.changed_state.get(brk.break_id, state)      # the desk's, earlier in this write
            if state == "resolved":
                continue
            stored[brk.break_id] = ("resolved", occurrence)
            states.append(("resolved", None, None, r.by, r.at_us, r.reason, brk.break_id))
            e = break_changed(brk.break_id, brk.type.value, brk.keys, "resolved", r.by, r.reason, r.prefix,
                              us_to_datetime(r.at_us), occurrence)
            events.append(outbox_row(e, r.at_us))
        return states, events

    async def _occurrences(self, conn: AsyncConnection, w: BatchChanges) -> list[tuple[Any, ...]]:
        """The stored state of each break ``w`` detects: one seen again after
        its occurrence n, or resolved (it reopens as occurrence n + 1), gets
        that occurrence's events (``stp.breaks.occurrence_id``) instead of the
        first's.  Returns the reopenings to write (``_REOPEN``)."""
        stored = await self._stored_states(conn, list(w.detected))
        for change in w.lifecycle:       # changed earlier in this same transaction
            if change.break_id in stored:
                stored[change.break_id] = (change.state, stored[change.break_id][1])
        reopened: list[tuple[Any, ...]] = []
        outbox = w.outbox
        for break_id, (state, occurrence) in stored.items():
            n, reopens = occurrence_after_detection(state, occurrence)
            if n == 1:
                continue                    # the events queued already carry the break id
            stamp = 0
            for detection in w.detected[break_id]:
                stamp = detection.at_us
                outbox[detection.outbox_key] = (
                    break_detected(detection.brk, detection.prefix, us_to_datetime(stamp), n), stamp)
            if reopens:
                new = break_row(w.breaks[break_id])
                # the new occurrence's values, its cut-off, not escalated yet
                reopened.append((n, stamp, new[2], new[4], new[5], new[6], new[11], break_id))
        return reopened


def _drop_resolved_detections(w: BatchChanges) -> None:
    """A break the engine resolves in the same write that detects it: the
    detection is dropped (its cause is gone before anything is committed),
    so a break raised and resolved within one batch is never raised, and a
    stored one is resolved, not seen again or reopened first."""
    outbox, breaks = w.outbox, w.breaks
    for break_id in w.resolving.intersection(w.detected):
        for detection in w.detected.pop(break_id):
            outbox.pop(detection.outbox_key, None)
        breaks.pop(break_id, None)
