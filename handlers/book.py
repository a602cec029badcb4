"""Book stage: double-entry bookings and positions.

Bookings are immutable: a cancel books a reversal of the fill's active
booking, a correction a reversal and the corrected trade.  The active booking
of a fill is looked up in this batch first, then in the database, so memory
does not grow with the number of fills.  Positions are kept in memory (one
per account and pair) and updated booking by booking; a reversal applies the
opposite of the original trade at its original price (``stp.positions``), so
every booking costs the same however long the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from adapters.db.posttrade import PostTradeStore, PostTradeWrite, text
from stp.booking import Booking, BookingKind, book_fill
from stp.breaks import Break
from stp.fills import ExecKind, Fill
from stp.positions import Position, apply_trade

_Key = tuple[str, str]          # (account, pair)
_ZERO = Decimal(0)


class BookStage:
    def __init__(self, store: PostTradeStore, accounts: frozenset[str], next_seq: int,
                 next_posting_id: int) -> None:
        self.store = store
        self.accounts = accounts
        self.next_seq = next_seq
        self.next_posting_id = next_posting_id
        self._batch_trades: dict[tuple[str, str], Booking] = {}   # fill key -> this batch's trade
        self._batch_reversed: set[str] = set()
        # fill key -> its active trade booking in the database (read once per batch)
        self._stored: dict[tuple[str, str], Booking] = {}
        self._referenced: set[tuple[str, str]] = set()    # fill keys the batch's cancels/corrections name

    async def begin_batch(self, fills: Iterable[Fill]) -> None:
        """Read at once the active bookings the batch's cancels and corrections
        refer to (the database does not change until the batch commits)."""
        keys = {(f.session, f.exec_ref_id) for f in fills
                if f.kind is not ExecKind.TRADE and f.exec_ref_id}
        self._referenced = keys         # the batch's trades only these can refer to are kept
        self._stored = await self.store.active_trade_bookings(keys) if keys else {}

    def end_batch(self) -> None:
        self._batch_trades.clear()
        self._batch_reversed.clear()
        self._stored = {}
        self._referenced = set()

    def book(self, fill_id: int, fill: Fill, w: PostTradeWrite,
             now_us: int) -> tuple[tuple[Booking, ...], tuple[Break, ...]]:
        original: Booking | None = None
        if fill.kind is not ExecKind.TRADE and fill.exec_ref_id:
            key = (fill.session, fill.exec_ref_id)
            original = self._batch_trades.get(key)
            if original is not None and original.booking_id in self._batch_reversed:
                original = None
            elif original is None:
                original = self._stored.get(key)
                if original is not None and original.booking_id in self._batch_reversed:
                    original = None
        result = book_fill(fill, original, self.accounts)
        for booking in result.bookings:
            self.write_booking(booking, fill_id, w, now_us)
            if booking.kind is BookingKind.TRADE and booking.fill_key is not None:
                if booking.fill_key in self._referenced:
                    self._batch_trades[booking.fill_key] = booking
            elif booking.kind is BookingKind.REVERSAL and booking.reverses:
                self._batch_reversed.add(booking.reverses)
        return result.bookings, result.breaks

    def write_booking(self, b: Booking, fill_id: int | None, w: PostTradeWrite, now_us: int) -> None:
        t = b.trade
        day = self.store.day
        session, exec_id = b.fill_key if b.fill_key else (None, None)
        if t is not None:
            trade: tuple[Any, ...] = (t.side._value_, text(t.base_amount), text(t.quote_amount),
                                      text(t.price), day(t.value_date))
        else:
            trade = (None, None, None, None, None)
        w.rows["bookings"][b.booking_id] = (
            b.booking_id, self.next_seq, b.kind._value_, fill_id, session, exec_id, b.reverses,
            b.account, b.counterparty, b.pair, *trade, now_us)
        self.next_seq += 1
        postings = w.rows["postings"]
        posting_id = self.next_posting_id
        for p in b.postings:
            postings[posting_id] = (posting_id, b.booking_id, p.ledger, p.party, str(p.amount),
                                    day(p.value_date))
            posting_id += 1
        self.next_posting_id = posting_id


class PositionKeeper:
    """Positions per (account, pair) and per value date, moved booking by
    booking; a batch's rows (the final state of each position it moved) are
    written once, at the end of the batch (``end_batch``)."""

    def __init__(self, positions: dict[_Key, Position],
                 dated: dict[_Key, dict[object, Decimal]]) -> None:
        self.positions = positions
        self.dated = dated
        # this batch's moved positions and (account, pair, value date)s, in order
        self._moved: dict[_Key, None] = {}
        self._moved_dated: dict[tuple[str, str, object], None] = {}

    def apply(self, booking: Booking) -> Position | None:
        t = booking.trade
        if t is None or booking.account is None or booking.pair is None:
            return None
        key = (booking.account, booking.pair)
        sign = booking.sign
        position = apply_trade(self.positions.get(key), t, sign)
        self.positions[key] = position
        dated = self.dated.get(key)
        if dated is None:
            dated = self.dated[key] = {}
        vd = t.value_date
        dated[vd] = dated.get(vd, _ZERO) + sign * t.base_amount
        self._moved[key] = None
        if vd is not None:
            self._moved_dated[(key[0], key[1], vd)] = None
        return position

    def end_batch(self, w: PostTradeWrite, now_us: int) -> None:
        """Write the rows of the positions the batch moved."""
        positions, dated = self.positions, self.dated
        for key in self._moved:
            position = positions[key]
            w.put("positions", key, (key[0], key[1], str(position.quantity), text(position.average_price),
                                     str(position.realised_pnl), str(position.quote_flow), now_us))
        for dkey in self._moved_dated:
            account, pair, vd = dkey
            w.put("position_value_dates", dkey, (account, pair, vd, str(dated[(account, pair)][vd])))
        self.abort_batch()

    def abort_batch(self) -> None:
        self._moved = {}
        self._moved_dated = {}
