"""In-memory fakes of the stages' ports (``handlers.ports``), for fast unit
tests of the handlers: no database, no sockets, no processes.

``FakePostTradeStore`` is ``PostTradeStore`` and ``ReconStore``; it commits
each ``BatchChanges`` as ``adapters.db.posttrade`` / ``adapters.db.rows`` do
(same keys, same upserts, the break bookkeeping: a detection dropped when the
engine resolves the break in the same write, a resolved break detected again
reopening as its next occurrence, resolutions of breaks stored and not
resolved only) and answers the reads from what it committed, in the shapes
the database adapter returns.  A write is all or nothing: it is applied to a
copy of the tables, which replaces them only when it succeeded.

``FakeIntakeStore`` is ``IntakeStore``; it may share the post-trade store's
tables (one database: the fills it commits are the post-trade's input, its
breaks go into the same breaks and outbox).  ``FakeInbound`` is an
``InboundSource``.

Either store can be told to fail its next writes (``fail_next``) with a
``ConnectionError``, which ``unavailable`` says is about reaching the store.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.reference import load_reference
from handlers.ports import FillKey, InboundSource, IntakeStore, PostTradeStore, ReconStore, now_us
from stp.booking import Booking, BookingKind, Posting
from stp.breaks import Break, BreakType, StoredBreak, occurrence_after_detection
from stp.changes import BatchChanges, Booked, Confirmation, MarkingFills
from stp.events import BusEvent, break_changed, break_detected
from stp.fills import ExecKind, Fill, Side
from stp.inbound import Inbound
from stp.intake import Conflict, IntakeBatch, IntakeState, JournalEntry
from stp.margin import AccountMargin, MarginEvent, MarginState
from stp.marketdata import Quote
from stp.netting import NetKey
from stp.positions import Position
from stp.reconcile import ReconRun
from stp.settlement import Instruction, InstructionState
from stp.timestamps import datetime_to_us, us_to_datetime
from stp.valuedates import CurrencyPair, value_date


class FakeIntegrityError(Exception):
    """What the database raises for a duplicate primary or unique key."""


@dataclass(frozen=True, slots=True)
class BreakRecord:
    """A row of ``breaks``: the break as last (re)opened and its lifecycle."""

    brk: Break
    state: str
    occurrence: int
    occurrences: int                 # how many times it was detected
    detected_us: int
    last_seen_us: int
    cut_off_us: int | None
    escalated_us: int | None = None
    acknowledged_by: str | None = None
    acknowledged_us: int | None = None
    resolved_by: str | None = None
    resolved_us: int | None = None
    resolution: str | None = None
    reopened_us: int | None = None


@dataclass(frozen=True, slots=True)
class InboxRow:
    inbox_id: int
    kind: str
    payload: str
    applied_us: int | None = None
    result: str | None = None
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A row of ``session_state``."""

    last_seq: int
    resets: int
    session_day: str | None


@dataclass(slots=True)
class Tables:
    """The committed state.  Every value is immutable: a shallow copy of each
    table (``copy``) is a snapshot a write can change on its own."""

    # post-trade
    bookings: dict[str, Booked] = field(default_factory=dict)
    postings: dict[int, tuple[str, Posting]] = field(default_factory=dict)   # id -> (booking id, posting)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    dated: dict[tuple[str, str, date], Decimal] = field(default_factory=dict)
    nets: dict[NetKey, Decimal] = field(default_factory=dict)
    instructions: dict[str, Instruction] = field(default_factory=dict)
    breaks: dict[str, BreakRecord] = field(default_factory=dict)
    confirmations: dict[int, Confirmation] = field(default_factory=dict)
    margins: dict[str, AccountMargin] = field(default_factory=dict)
    margin_events: dict[int, MarginEvent] = field(default_factory=dict)
    outbox: list[tuple[BusEvent, int]] = field(default_factory=list)        # in publish order
    inbox: dict[int, InboxRow] = field(default_factory=dict)
    cursor: int | None = None
    recon_runs: list[ReconRun] = field(default_factory=list)
    # intake
    journal: list[JournalEntry] = field(default_factory=list)
    fills: dict[int, tuple[int, Fill]] = field(default_factory=dict)          # id -> (journal id, fill)
    conflicts: list[Conflict] = field(default_factory=list)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    market_prices: dict[str, tuple[Quote, int, int]] = field(default_factory=dict)  # (quote, journal, us)

    def copy(self) -> Tables:
        return Tables(**{f.name: copy.copy(getattr(self, f.name)) for f in fields(self)})


class _Failing:
    """Fails the next ``n`` writes (``fail_next``): with a ConnectionError (the
    store is unavailable), or with ``error`` (anything else: what a write
    itself gets wrong, e.g. a constraint)."""

    failures = 0
    error: type[Exception] = ConnectionError

    def fail_next(self, n: int = 1, error: type[Exception] = ConnectionError) -> None:
        self.failures = n
        self.error = error

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error("fake store: write failed")

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)


# -- a batch's changes into the tables (adapters.db.rows.ChangesWriter.write) -------------------
def apply_changes(t: Tables, w: BatchChanges) -> None:
    """The changes of ``w`` into ``t`` (``w`` is left as it is)."""
    detected = {bid: list(ds) for bid, ds in w.detected.items()}
    new_breaks = dict(w.breaks)
    outbox = dict(w.outbox)
    # a break the engine resolves in the same write that detects it: never raised
    for bid in w.resolving & detected.keys():
        for d in detected.pop(bid):
            outbox.pop(d.outbox_key, None)
        new_breaks.pop(bid, None)
    # a stored break detected again: its occurrence's events; a resolved one reopens
    states = {bid: (t.breaks[bid].state, t.breaks[bid].occurrence) for bid in detected if bid in t.breaks}
    for change in w.lifecycle:
        if change.break_id in states:
            states[change.break_id] = (change.state, states[change.break_id][1])
    reopened: dict[str, tuple[int, int]] = {}          # break id -> (occurrence, at)
    for bid, (state, occurrence) in states.items():
        n, reopens = occurrence_after_detection(state, occurrence)
        if n == 1:
            continue
        at = 0
        for d in detected[bid]:
            at = d.at_us
            outbox[d.outbox_key] = (break_detected(d.brk, d.prefix, us_to_datetime(at), n), at)
        if reopens:
            reopened[bid] = (n, at)
    # the engine's resolutions of breaks stored and not resolved (nor by this write's desk)
    resolved: dict[str, tuple[str, int]] = {r.brk.break_id: (t.breaks[r.brk.break_id].state,
                                                             t.breaks[r.brk.break_id].occurrence)
                                            for r in w.resolved if r.brk.break_id in t.breaks}
    resolutions: list[tuple[str, str, int, str]] = []       # (break id, by, at, reason)
    resolution_events: list[tuple[BusEvent, int]] = []
    for r in w.resolved:
        bid = r.brk.break_id
        state, occurrence = resolved.get(bid, ("resolved", 1))
        state = w.changed_state.get(bid, state)
        if state == "resolved":
            continue
        resolved[bid] = ("resolved", occurrence)
        resolutions.append((bid, r.by, r.at_us, r.reason))
        resolution_events.append((break_changed(bid, r.brk.type.value, r.brk.keys, "resolved", r.by,
                                                r.reason, r.prefix, us_to_datetime(r.at_us), occurrence),
                                  r.at_us))
    # the rows
    seqs = {b.seq for b in t.bookings.values()}
    for booking_id, entry in w.bookings.items():
        if booking_id in t.bookings or entry.seq in seqs:
            raise FakeIntegrityError(f"booking {booking_id} (seq {entry.seq}) exists")
        seqs.add(entry.seq)
        t.bookings[booking_id] = entry
        for i, p in enumerate(entry.booking.postings):
            pid = entry.first_posting_id + i
            if pid in t.postings:
                raise FakeIntegrityError(f"posting {pid} exists")
            t.postings[pid] = (booking_id, p)
    for key, (position, _) in w.positions.items():
        t.positions[key] = position
    t.dated.update(w.dated)
    for net_key, (amount, _) in w.nets.items():
        t.nets[net_key] = amount
    for ins in w.instructions.values():
        # what instruction_row stores of it: one finish time, the update time
        finished = ins.settled_at or ins.failed_at
        t.instructions[ins.instruction_id] = replace(
            ins, updated_at=ins.updated_at or ins.instructed_at or datetime.now(UTC),
            settled_at=finished if ins.state is InstructionState.SETTLED else None,
            failed_at=finished if ins.state is InstructionState.FAILED else None)
    for bid, seen in new_breaks.items():
        old = t.breaks.get(bid)
        if old is None:
            t.breaks[bid] = BreakRecord(seen.brk, "open", 1, 1, seen.at_us, seen.at_us, seen.cut_off_us)
        else:
            t.breaks[bid] = replace(old, last_seen_us=seen.at_us, occurrences=old.occurrences + 1)
    t.confirmations.update(w.confirmations)
    for account, (margin, _) in w.margins.items():
        t.margins[account] = margin
    for event_id, (event, _) in w.margin_events.items():
        if event_id in t.margin_events:
            raise FakeIntegrityError(f"margin event {event_id} exists")
        t.margin_events[event_id] = event
    t.outbox += outbox.values()
    for change in w.lifecycle:
        old = t.breaks.get(change.break_id)
        if old is None:
            continue
        if change.state == "acknowledged":
            t.breaks[change.break_id] = replace(
                old, state=change.state, acknowledged_by=_coalesce(change.by, old.acknowledged_by),
                acknowledged_us=change.at_us)
        else:
            t.breaks[change.break_id] = replace(
                old, state=change.state, resolved_by=_coalesce(change.by, old.resolved_by),
                resolved_us=change.at_us, resolution=_coalesce(change.reason, old.resolution))
    for stamp, bid in w.escalated:
        if bid in t.breaks:
            t.breaks[bid] = replace(t.breaks[bid], escalated_us=stamp)
    for bid, (n, at) in reopened.items():
        old = t.breaks[bid]
        if old.state != "resolved":
            continue
        again = w.breaks[bid]
        t.breaks[bid] = replace(old, brk=again.brk, state="open", occurrence=n, reopened_us=at,
                                cut_off_us=again.cut_off_us, escalated_us=None, acknowledged_by=None,
                                acknowledged_us=None, resolved_by=None, resolution=None)
    for bid, by, at, reason in resolutions:
        old = t.breaks[bid]
        t.breaks[bid] = replace(old, state="resolved", resolved_by=by, resolved_us=at, resolution=reason)
    t.outbox += resolution_events


def _coalesce(value: str | None, old: str | None) -> str | None:
    """SQL's COALESCE(value, old)."""
    return value if value is not None else old


class FakePostTradeStore(_Failing):
    """``handlers.ports.PostTradeStore`` and ``ReconStore`` in memory."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.writes: list[BatchChanges] = []        # every write committed, in order
        self.attempts = 0                           # every write tried (failed ones too)

    # -- test helpers -------------------------------------------------------------
    def add_fills(self, fills: Iterable[Fill]) -> list[tuple[int, Fill]]:
        """Fills as the intake commits them: the next ids, in order."""
        t = self.tables
        out: list[tuple[int, Fill]] = []
        for f in fills:
            fill_id = max(t.fills, default=0) + 1
            t.fills[fill_id] = (0, f)
            out.append((fill_id, f))
        return out

    def set_market_price(self, symbol: str, price: Decimal, received_us: int) -> None:
        """A quote as the intake commits it (``market_prices``)."""
        quote = Quote("LP1", symbol, price, None, us_to_datetime(received_us))
        self.tables.market_prices[symbol] = (quote, 0, received_us)

    def enqueue(self, kind: str, payload: dict[str, Any] | str) -> int:
        """A command into the inbox (``adapters.db.inbox.enqueue``)."""
        inbox = self.tables.inbox
        inbox_id = max(inbox, default=0) + 1
        inbox[inbox_id] = InboxRow(inbox_id, kind, payload if isinstance(payload, str) else
                                   json.dumps(payload, sort_keys=True))
        return inbox_id

    def inbox_result(self, inbox_id: int) -> str | None:
        return self.tables.inbox[inbox_id].result

    def events(self) -> list[dict[str, Any]]:
        """The outbox's CloudEvents, in publish order (each with its topic)."""
        return [{**json.loads(e.payload), "topic": e.topic} for e, _ in self.tables.outbox]

    def breaks_of(self, type_: BreakType) -> list[BreakRecord]:
        return [b for b in self.tables.breaks.values() if b.brk.type is type_]

    def snapshot(self) -> dict[str, Any]:
        """The committed tables without what follows the clock (stamps, event
        times and ids that carry them): two runs that did the same thing
        give equal snapshots."""
        t = self.tables
        return {
            "bookings": {k: (b.booking, b.seq, b.fill_id, b.first_posting_id, b.by)
                         for k, b in t.bookings.items()},
            "postings": dict(t.postings),
            "positions": dict(t.positions),
            "dated": dict(t.dated),
            "nets": dict(t.nets),
            "instructions": {k: (i.key, i.amount, i.state, i.version, i.adjustment, i.ssi)
                             for k, i in t.instructions.items()},
            "breaks": {k: (b.brk, b.state, b.occurrence, b.occurrences, b.cut_off_us, b.acknowledged_by,
                           b.resolved_by, b.resolution) for k, b in t.breaks.items()},
            "confirmations": {k: replace(c, at_us=0) for k, c in t.confirmations.items()},
            "margins": dict(t.margins),
            "margin_events": dict(t.margin_events),
            "outbox": [(e["topic"], e["type"], e["subject"], e["data"]) for e in self.events()],
            "inbox": {k: (r.result, r.applied_us is not None) for k, r in t.inbox.items()},
            "cursor": t.cursor,
        }

    # -- ChangesStore -------------------------------------------------------------
    async def write(self, w: BatchChanges) -> None:
        self.attempts += 1
        self._maybe_fail()
        stamp = now_us()
        staged = self.tables.copy()
        apply_changes(staged, w)
        for inbox_id, result in w.inbox_done:
            row = staged.inbox.get(inbox_id)
            if row is not None:
                staged.inbox[inbox_id] = replace(row, applied_us=stamp, result=result,
                                                 reply=w.inbox_replies.get(inbox_id))
        if w.cursor is not None:
            staged.cursor = w.cursor
        self.tables = staged
        self.writes.append(w)

    # -- ReconStore -----------------------------------------------------------------
    async def record_recon(self, w: BatchChanges, run: ReconRun) -> None:
        self.attempts += 1
        self._maybe_fail()
        staged = self.tables.copy()
        apply_changes(staged, w)
        staged.recon_runs.append(run)
        self.tables = staged
        self.writes.append(w)

    async def session_fills(self, session: str) -> list[Fill]:
        return [f for _, (_, f) in sorted(self.tables.fills.items()) if f.session == session]

    async def counterparty_nets(self, counterparty: str) -> dict[tuple[str, date], Decimal]:
        return {(k.currency, k.value_date): a for k, a in self.tables.nets.items()
                if k.counterparty == counterparty}

    # -- BookingReader, BreakReader -------------------------------------------------
    async def active_trade_bookings(self, keys: Iterable[FillKey]) -> dict[FillKey, Booking]:
        t = self.tables
        wanted = set(keys)
        reversed_ids = {b.booking.reverses for b in t.bookings.values() if b.booking.reverses}
        out: dict[FillKey, Booking] = {}
        for entry in sorted(t.bookings.values(), key=lambda e: e.first_posting_id):
            b = entry.booking
            if b.kind is not BookingKind.TRADE or b.fill_key not in wanted or b.booking_id in reversed_ids:
                continue
            if b.fill_key in out:
                continue
            postings = tuple(p for _, (bid, p) in sorted(t.postings.items()) if bid == b.booking_id)
            # what the database keeps of it (allocated_from is not read back)
            out[b.fill_key] = Booking(b.booking_id, BookingKind.TRADE, b.fill_key, None, b.account,
                                      b.counterparty, b.pair, postings, b.trade)
        return out

    async def stored_break(self, break_id: str) -> StoredBreak | None:
        r = self.tables.breaks.get(break_id)
        return None if r is None else _stored(r)

    async def escalations_due(self, until_us: int, limit: int = 1000) -> list[StoredBreak]:
        due = [r for r in self.tables.breaks.values() if r.escalated_us is None and r.cut_off_us is not None
               and r.cut_off_us <= until_us and r.state != "resolved"]
        due.sort(key=lambda r: r.cut_off_us or 0)
        return [_stored(r) for r in due[:limit]]

    # -- PostTradeStore ---------------------------------------------------------------
    async def cursor(self) -> int:
        return self.tables.cursor or 0

    async def next_ids(self) -> tuple[int, int, int]:
        t = self.tables
        return (max((b.seq for b in t.bookings.values()), default=0) + 1, max(t.postings, default=0) + 1,
                max(t.margin_events, default=0) + 1)

    async def waiting_fills(self) -> list[tuple[int, Fill]]:
        return [(i, f) for i, (_, f) in sorted(self.tables.fills.items())
                if (c := self.tables.confirmations.get(i)) is not None and c.state == "received"]

    async def fills_after(self, fill_id: int, limit: int) -> list[tuple[int, Fill]]:
        return [(i, f) for i, (_, f) in sorted(self.tables.fills.items()) if i > fill_id][:limit]

    async def positions(self) -> dict[tuple[str, str], Position]:
        # as the database reads them back: the cost is quantity x average price
        out: dict[tuple[str, str], Position] = {}
        for key, p in self.tables.positions.items():
            cost = p.quantity * p.average_price if p.average_price is not None else Decimal(0)
            out[key] = Position(p.account, p.pair, p.quantity, p.average_price, p.realised_pnl, cost,
                                p.quote_flow)
        return out

    async def dated_positions(self) -> dict[tuple[str, str], dict[date | None, Decimal]]:
        out: dict[tuple[str, str], dict[date | None, Decimal]] = {}
        for (account, pair, vd), qty in self.tables.dated.items():
            out.setdefault((account, pair), {})[vd] = qty
        return out

    async def nets(self) -> dict[NetKey, Decimal]:
        return dict(self.tables.nets)

    async def marking_fills(self, lp_sessions: Collection[str]) -> dict[str, MarkingFills]:
        flagged = {(b.brk.keys.get("session"), b.brk.keys.get("exec_id")) for b in self.tables.breaks.values()
                   if b.brk.type is BreakType.PRICE_OUT_OF_TOLERANCE}
        booked = {e.fill_id for e in self.tables.bookings.values()}
        out: dict[str, MarkingFills] = {}
        for fill_id, (_, f) in sorted(self.tables.fills.items(), reverse=True):
            if f.session not in lp_sessions or fill_id not in booked or (f.session, f.exec_id) in flagged:
                continue
            current = out.get(f.symbol)
            if current is None:
                out[f.symbol] = MarkingFills(f, f if f.kind is ExecKind.TRADE else None)
            elif current.trade is None and f.kind is ExecKind.TRADE:
                out[f.symbol] = MarkingFills(current.mark, f)
        return out

    async def market_prices(self) -> list[tuple[str, Decimal, int]]:
        return [(symbol, q.price, received) for symbol, (q, _, received) in self.tables.market_prices.items()]

    async def client_cash(self) -> list[tuple[str, str, Decimal]]:
        t = self.tables
        out: list[tuple[str, str, Decimal]] = []
        for booking_id, p in t.postings.values():
            b = t.bookings[booking_id].booking
            if b.kind in (BookingKind.CASH, BookingKind.ADJUSTMENT) and p.party.startswith("client:"):
                out.append((str(b.account), p.ledger, p.amount))
        return out

    async def unresolved_unpriced(self) -> list[tuple[str, str]]:
        return [(str(r.brk.keys.get("account")), str(r.brk.keys.get("currency")))
                for r in self.tables.breaks.values()
                if r.brk.type is BreakType.MARGIN_UNPRICED and r.state != "resolved"]

    async def margin_states(self) -> dict[str, MarginState]:
        return {a: m.priced_state for a, m in self.tables.margins.items()}

    async def instructions_since(self, since: date) -> list[Instruction]:
        out = [i for i in self.tables.instructions.values() if i.key.value_date >= since]
        out.sort(key=lambda i: (i.key.counterparty, i.key.currency, i.key.value_date, i.version))
        return out

    async def pending_inbox(self) -> list[tuple[int, str, str]]:
        return [(r.inbox_id, r.kind, r.payload) for _, r in sorted(self.tables.inbox.items())
                if r.applied_us is None]

    async def booking_exists(self, booking_id: str) -> bool:
        return booking_id in self.tables.bookings


def _stored(r: BreakRecord) -> StoredBreak:
    brk = r.brk
    return StoredBreak(brk.break_id, brk.type.value, brk.level.value, r.state, dict(brk.keys), brk.summary,
                       r.cut_off_us, r.occurrence)


class FakeIntakeStore(_Failing):
    """``handlers.ports.IntakeStore`` in memory; with ``store``, on the same
    tables as that post-trade store (one database)."""

    def __init__(self, store: FakePostTradeStore | None = None) -> None:
        self.store = store if store is not None else FakePostTradeStore()
        self.batches: list[IntakeBatch] = []        # every batch committed, in order

    @property
    def tables(self) -> Tables:
        return self.store.tables

    def load_state(self) -> IntakeState:
        """``Database.load_intake_state``."""
        t = self.tables
        return IntakeState(max((j.journal_id for j in t.journal), default=0) + 1, max(t.fills, default=0) + 1,
                           max((c.conflict_id for c in t.conflicts), default=0) + 1,
                           {s: r.last_seq for s, r in t.sessions.items()},
                           {s: r.session_day for s, r in t.sessions.items()})

    async def write_intake(self, batch: IntakeBatch) -> None:
        self._maybe_fail()
        t = self.tables.copy()
        t.journal += batch.journal
        keys = {(f.session, f.exec_id) for _, f in t.fills.values()}
        for fill_id, journal_id, fill in batch.fills:
            key = (fill.session, fill.exec_id)
            if fill_id in t.fills or key in keys:
                raise FakeIntegrityError(f"fill {fill_id} {key} exists")
            keys.add(key)
            t.fills[fill_id] = (journal_id, fill)
        t.conflicts += batch.conflicts
        for session, seq in batch.last_seq.items():
            old = t.sessions.get(session)
            # a session without a day in the batch keeps its own (``repository.KEEP``)
            day = batch.session_days.get(session, old.session_day if old is not None else None)
            resets = (old.resets if old is not None else 0) + (session in batch.resets)
            t.sessions[session] = SessionRow(seq, resets, day)
        t.market_prices.update(batch.prices)
        if batch.breaks:
            apply_changes(t, batch.breaks)
        self.store.tables = t
        self.batches.append(batch)

    async def known_hashes(self, keys: Sequence[FillKey]) -> dict[FillKey, str]:
        wanted = set(keys)
        return {(f.session, f.exec_id): f.content_hash for _, f in self.tables.fills.values()
                if (f.session, f.exec_id) in wanted}

    async def latest_quotes(self) -> list[tuple[str, str, int, int]]:
        return [(symbol, str(q.price), received, journal_id)
                for symbol, (q, journal_id, received) in self.tables.market_prices.items()]

    async def traded_symbols(self) -> list[str]:
        return sorted({f.symbol for _, f in self.tables.fills.values() if f.kind is ExecKind.TRADE})

    async def trades_after(self, journal_id: int, after_id: int, limit: int = 20_000,
                           ) -> list[tuple[int, int, str, str, int]]:
        rows = [(i, j, f.symbol, str(f.spot_rate or f.last_px), datetime_to_us(f.received_at))
                for i, (j, f) in sorted(self.tables.fills.items())
                if f.kind is ExecKind.TRADE and j > journal_id and i > after_id]
        return rows[:limit]


class FakeInbound:
    """``handlers.ports.InboundSource``: the gateway's hand-off as a deque."""

    def __init__(self, items: Iterable[Inbound] = ()) -> None:
        self.items: deque[Inbound] = deque()
        self.wakeup = asyncio.Event()
        self.high_water = 0
        for item in items:
            self.put(item)

    def put(self, item: Inbound) -> None:
        if not self.items:
            self.wakeup.set()
        self.items.append(item)

    def take(self, limit: int) -> list[Inbound]:
        self.high_water = max(self.high_water, len(self.items))
        return [self.items.popleft() for _ in range(min(limit, len(self.items)))]

    def __len__(self) -> int:
        return len(self.items)


# -- test data ------------------------------------------------------------------------------------
REFERENCE = load_reference(Path(__file__).resolve().parents[2] / "config" / "reference")
TRADE_DATE = date(2030, 1, 7)                        # a Monday well ahead: no cut-off has passed
RECEIVED = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def spot(symbol: str = "EUR/USD", trade_date: date = TRADE_DATE) -> date:
    """The pair's spot value date (what the engine computes for SettlType 0)."""
    return value_date(trade_date, REFERENCE.pair_for(CurrencyPair.parse(symbol)), "0")


def make_fill(exec_id: str = "E1", *, session: str = "LP1", account: str | None = "ACC001",
              symbol: str = "EUR/USD", side: Side = Side.BUY, qty: str = "1000000", px: str = "1.1000",
              kind: ExecKind = ExecKind.TRADE, exec_ref_id: str | None = None,
              received: datetime = RECEIVED) -> Fill:
    """A spot fill built directly (no wire format), as the intake commits it."""
    pair = CurrencyPair.parse(symbol)
    f = Fill(session=session, exec_id=exec_id, kind=kind, exec_ref_id=exec_ref_id, order_id=f"O-{exec_id}",
             cl_ord_id=f"C-{exec_id}", account=account, pair=pair, side=side, currency=pair.base,
             last_qty=Decimal(qty), last_px=Decimal(px), cum_qty=None, leaves_qty=None, avg_px=None,
             order_qty=None, trade_date=TRADE_DATE, settl_type="0", settl_date=spot(symbol),
             transact_time=received, received_at=received)
    return replace(f, content_hash=f"{session}|{exec_id}|{kind.value}|{account}|{side.value}|{qty}|{px}")


def _conforms(store: FakePostTradeStore, intake: FakeIntakeStore, inbound: FakeInbound,
              ) -> tuple[PostTradeStore, ReconStore, IntakeStore, InboundSource]:
    """mypy checks here that the fakes satisfy the ports."""
    return store, store, intake, inbound
