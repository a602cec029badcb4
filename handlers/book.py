"""Book stage: double-entry bookings and positions.

Bookings are immutable: a cancel books a reversal of the fill's active
booking, a correction a reversal and the corrected trade.  The active booking
of a fill is looked up in this batch first, then in the database, so memory
does not grow with the number of fills.  Positions are kept in memory (one
per account and pair) and updated booking by booking; a reversal applies the
opposite of the original trade at its original price (``stp.positions``), so
every booking costs the same however long the history.

Every LP fill books, allocated or not (``stp.allocation``): on the client
account its report names, else the one its matched platform record names,
else (a correction) the corrected booking's, else on the LP session's house
account with an ``unallocated`` break.  A house fill still waiting for its
platform record is remembered (``pending``, bounded like the matcher's
memory) so that the record, when it comes, allocates it (``allocate``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace

from handlers.ports import BookingReader
from stp.allocation import AccountSource, Houses, allocate, resolve_account, unallocated_break
from stp.booking import Booking, BookingKind, book_fill
from stp.breaks import Break
from stp.changes import BatchChanges, Booked
from stp.fills import ExecKind, Fill
from stp.positions import PositionBook


class BookStage:
    def __init__(self, store: BookingReader, accounts: frozenset[str], next_seq: int,
                 next_posting_id: int, houses: Houses | None = None,
                 pending_us: int = 120_000_000) -> None:
        self.store = store
        self.accounts = accounts
        # None: no house accounts, a fill without a known account is an unknown_account break
        self.houses = houses
        # fill key -> its house booking, for the house fills waiting for their platform record
        # (the matcher forgets a fill after about two windows: so does this)
        self.pending: OrderedDict[tuple[str, str], tuple[Booking, int]] = OrderedDict()
        self._pending_ids: dict[str, tuple[str, str]] = {}         # house booking id -> fill key
        self.max_pending = 500_000
        self.pending_us = pending_us
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

    def book(self, fill_id: int, fill: Fill, w: BatchChanges, now_us: int,
             platform: Fill | None = None, awaiting_platform: bool = False,
             disagreeing: Fill | None = None) -> tuple[tuple[Booking, ...], tuple[Break, ...]]:
        """The bookings and breaks of an LP fill.  ``platform``: the platform
        record it was matched with; ``awaiting_platform``: its record may
        still come (the matcher holds the fill); ``disagreeing``: a record
        it was paired with that differs in more than the account (its account
        is not used; the ``unallocated`` break names it)."""
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
        unallocated: Break | None = None
        booked = fill
        houses = self.houses
        if houses is not None and fill.kind is not ExecKind.CANCEL:
            account, source = resolve_account(fill, platform, original, self.accounts, houses)
            if source is AccountSource.HOUSE:
                unallocated = unallocated_break(fill, account, platform or disagreeing)
            if account != fill.account:
                booked = replace(fill, account=account)
        result = book_fill(booked, original, self.accounts)
        breaks = result.breaks
        for booking in result.bookings:
            self._add(booking, fill_id, w, now_us)
            if booking.kind is BookingKind.TRADE and unallocated is not None:
                breaks += (unallocated,)
                if awaiting_platform and booking.fill_key is not None:
                    self._remember(booking.fill_key, booking, now_us)
        return result.bookings, breaks

    def _add(self, booking: Booking, fill_id: int | None, w: BatchChanges, now_us: int,
             by: str | None = None) -> None:
        self.write_booking(booking, fill_id, w, now_us, by)
        if booking.kind is BookingKind.TRADE and booking.fill_key is not None:
            if booking.fill_key in self._referenced:
                self._batch_trades[booking.fill_key] = booking
        elif booking.kind is BookingKind.REVERSAL and booking.reverses:
            self._batch_reversed.add(booking.reverses)
            reversed_key = self._pending_ids.pop(booking.reverses, None)
            if reversed_key is not None:
                self.pending.pop(reversed_key, None)

    def remember(self, key: tuple[str, str], booking: Booking, at_us: int) -> None:
        """A house booking of fill ``key`` waits for its platform record
        (``allocate_pending``): a reload rebuilds ``pending`` so (call in the
        order the fills arrived)."""
        if self.houses is not None and self.houses.is_house(booking.account) \
                and booking.kind is BookingKind.TRADE:
            self._remember(key, booking, at_us)

    def _remember(self, key: tuple[str, str], booking: Booking, now_us: int) -> None:
        pending, ids = self.pending, self._pending_ids
        pending[key] = (booking, now_us)
        ids[booking.booking_id] = key
        while pending:
            oldest_key, (oldest, at) = next(iter(pending.items()))
            if len(pending) <= self.max_pending and now_us - at <= self.pending_us:
                break
            del pending[oldest_key]
            ids.pop(oldest.booking_id, None)

    def _forget(self, key: tuple[str, str]) -> None:
        entry = self.pending.pop(key, None)
        if entry is not None:
            self._pending_ids.pop(entry[0].booking_id, None)

    def allocate_pending(self, lp_fill: Fill, platform: Fill, w: BatchChanges,
                         now_us: int) -> tuple[Booking, ...]:
        """A platform record matched LP fill ``lp_fill``: if that fill waits on
        its house account and the record names a client account, move it there
        (reversal + client booking).  Nothing otherwise."""
        key = (lp_fill.session, lp_fill.exec_id)
        entry = self.pending.get(key)
        houses = self.houses
        if entry is None or houses is None or entry[0].booking_id in self._batch_reversed:
            return ()
        house = entry[0]
        account = platform.account
        if account is None or account not in self.accounts or houses.is_house(account):
            return ()
        self._forget(key)
        bookings = allocate(house, account, self.accounts, houses, key)
        for booking in bookings:
            self._add(booking, None, w, now_us, f"match:{platform.session}/{platform.exec_id}")
        return bookings

    def allocate_active(self, booking: Booking | None, account: str, key: tuple[str, str], by: str,
                        w: BatchChanges, now_us: int) -> tuple[Booking, ...]:
        """The desk's allocation of fill ``key`` (its active booking, read by
        the caller) to ``account``; raises AllocationError if refused."""
        assert self.houses is not None
        bookings = allocate(booking, account, self.accounts, self.houses, key)
        self._forget(key)
        for b in bookings:
            self._add(b, None, w, now_us, by)
        return bookings

    def write_booking(self, b: Booking, fill_id: int | None, w: BatchChanges, now_us: int,
                      by: str | None = None) -> None:
        """The booking into the ledger: the next sequence number, and the
        next posting ids for its postings."""
        w.bookings[b.booking_id] = Booked(b, self.next_seq, fill_id, self.next_posting_id, now_us, by)
        self.next_seq += 1
        self.next_posting_id += len(b.postings)


class PositionKeeper(PositionBook):
    """The positions stage: ``stp.positions.PositionBook`` moves the positions
    booking by booking; a batch's rows (the final state of each position and
    value date quantity it moved) are written once, at the end of the batch
    (``end_batch``)."""

    __slots__ = ()

    def end_batch(self, w: BatchChanges, now_us: int) -> None:
        """Write the rows of the positions the batch moved."""
        moved = self.take_moved()
        positions, dated = self.positions, self.dated
        for key in moved.positions:
            position = positions[key]
            w.positions[key] = (position, now_us)
        for dkey in moved.dated:
            account, pair, vd = dkey
            w.dated[dkey] = dated[(account, pair)][vd]
