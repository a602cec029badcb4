"""Settlement netting: one amount per (counterparty, currency, value date).

Bookings come in as balanced postings (see the booking module).  Only the
counterparty's postings matter here: those whose party is ``"lp:<session>"``.
When a client buys 1,000,000 EUR/USD at 1.1000 the LP side is posted
-1,000,000 EUR / +1,100,000 USD, i.e. the LP gives EUR and takes USD; from the
broker's point of view we *receive* EUR and *pay* USD.  So::

    net = -(sum of the counterparty's postings)   # positive: we receive

The book is incremental: ``apply`` adds one booking's contribution, and
``take_changes`` gives the nets a batch of bookings moved.  A cancel or
correct is just another booking (a reversal has negated postings), so it
nets out.  A net that comes back to zero is kept, with amount 0: an
instruction may already exist for it.

Amounts are added exactly (38 digits, Inexact trapped): a sum that would
have to round raises instead of losing a cent.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Context, Decimal, Inexact
from typing import Any, Final, Protocol

from stp.currency import decimal_context
from stp.frozen import fast_init

__all__ = [
    "LP_PARTY_PREFIX",
    "BookingLike",
    "NetBook",
    "NetChange",
    "NetKey",
    "NettingError",
    "PostingLike",
    "contributions",
    "exact_context",
    "nonnegative_zero",
]

#: Party prefix of the counterparty's (LP's) postings: "lp:<session>".
LP_PARTY_PREFIX: Final = "lp:"
_PREFIX_LEN: Final = len(LP_PARTY_PREFIX)

_ZERO: Final = Decimal(0)


class PostingLike(Protocol):
    """What netting needs of a posting (structurally: stp.booking's Posting)."""

    @property
    def ledger(self) -> str: ...        # the currency

    @property
    def party(self) -> str: ...         # "client:<acc>", "lp:<session>", "bank:client-money"

    @property
    def amount(self) -> Decimal: ...    # signed, in the ledger currency

    @property
    def value_date(self) -> date | None: ...


class BookingLike(Protocol):
    """What netting needs of a booking (structurally: stp.booking's Booking)."""

    @property
    def booking_id(self) -> str: ...

    @property
    def counterparty(self) -> str | None: ...

    @property
    def postings(self) -> Sequence[PostingLike]: ...


class NettingError(ValueError):
    """A booking cannot be netted (no value date, inconsistent counterparty,
    an id re-used with different content, an amount that is not a finite
    Decimal)."""


@dataclass(frozen=True, slots=True, order=True)
class NetKey:
    counterparty: str        # the LP session name (= reference Counterparty.name)
    currency: str
    value_date: date

    def __str__(self) -> str:
        return f"{self.counterparty}/{self.currency}/{self.value_date.isoformat()}"


@fast_init
@dataclass(frozen=True, slots=True)
class NetChange:
    """One net moved by a batch of bookings: ``before`` the batch -> ``after``
    it (positive: we receive); ``booking_id``: the batch's last booking that
    moved it."""

    key: NetKey
    before: Decimal
    after: Decimal
    booking_id: str

    @property
    def delta(self) -> Decimal:
        return exact_context().subtract(self.after, self.before)


_EXACT = decimal_context().copy()
_EXACT.traps[Inexact] = True            # exact sums or an error, never a rounded one


def exact_context() -> Context:
    """decimal_context() with Inexact trapped: exact sums or an error (shared:
    do not change it)."""
    return _EXACT


def nonnegative_zero(amount: Decimal) -> Decimal:
    """Negative zero becomes zero."""
    return amount.copy_abs() if amount.is_zero() else amount


# NetKey per (counterparty, currency, value date), shared: a key is immutable, and
# one instance per net makes dict lookups an identity check (bounded: cleared
# when full, which only costs new instances)
_KEYS: dict[tuple[str, str, date], NetKey] = {}
_KEYS_MAX: Final = 100_000


def _net_key(session: str, currency: str, value_date: date) -> NetKey:
    fields = (session, currency, value_date)
    key = _KEYS.get(fields)
    if key is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        key = _KEYS[fields] = NetKey(session, currency, value_date)
    return key


def _invalid(booking: BookingLike, posting: PostingLike) -> NettingError:
    """The error of an LP posting that cannot be netted (checked in this order)."""
    session = posting.party[len(LP_PARTY_PREFIX):]
    where = f"booking {booking.booking_id!r}, posting {posting.party} {posting.ledger}"
    if not session:
        return NettingError(f"{where}: LP party without a session name")
    if booking.counterparty is not None and booking.counterparty not in (session, posting.party):
        return NettingError(
            f"{where}: LP session {session!r} is not the booking's counterparty "
            f"{booking.counterparty!r}"
        )
    if not isinstance(posting.amount, Decimal) or not posting.amount.is_finite():
        return NettingError(f"{where}: amount {posting.amount!r} is not a finite Decimal")
    return NettingError(f"{where}: no value date, cannot net for settlement")


def contributions(booking: BookingLike) -> dict[NetKey, Decimal]:
    """The booking's contribution to each net (from scratch, no state).

    Postings of parties other than ``lp:<session>`` are ignored; several
    postings on the same key are summed; keys whose contributions sum to zero
    are kept (with 0) so that a caller can see the booking touched them.
    Raises NettingError for an LP posting without a value date, an amount that
    is not a finite Decimal, or an LP session that contradicts
    ``booking.counterparty`` (which may be the session name or "lp:<session>").
    """
    subtract = _EXACT.subtract
    counterparty = booking.counterparty
    sums: dict[tuple[str, str, date], Decimal] = {}
    for posting in booking.postings:
        party = posting.party
        if not party.startswith(LP_PARTY_PREFIX):
            continue
        session = party[_PREFIX_LEN:]
        amount = posting.amount
        value_date = posting.value_date
        if (not session or (counterparty is not None and counterparty != session and counterparty != party)
                or not isinstance(amount, Decimal) or not amount.is_finite() or value_date is None):
            raise _invalid(booking, posting)
        fields = (session, posting.ledger, value_date)
        sums[fields] = subtract(sums.get(fields, _ZERO), amount)
    out: dict[NetKey, Decimal] = {}
    keys = _KEYS
    for fields, v in sums.items():
        key = keys.get(fields)
        if key is None:
            key = _net_key(*fields)
        out[key] = v.copy_abs() if v.is_zero() else v          # nonnegative_zero
    return out


class NetBook:
    """Nets per (counterparty, currency, value date), moved booking by booking;
    and the record of what the current batch moved (``take_changes``), so that
    a caller persists each net and hands it to settlement once per batch.

    Only the nets are held, not the bookings behind them: memory does not grow
    with the fills.  So the book does not recognise a booking applied twice
    (each booking is applied once: the pipeline's cursor) and cannot list a
    net's bookings (the database can).  A net that comes back to zero is kept,
    0: an instruction may already exist for it.  A key a booking touches with
    a contribution of zero (postings that cancel out) is created and counts
    as moved, with before = after.  Sums are exact (``exact_context``) and
    not normalised, as none is -0: a contribution is never -0
    (``contributions``) and a half-even sum of an amount and its opposite is
    +0.  Pure: no I/O, no clock.
    """

    __slots__ = ("_moved", "nets")

    def __init__(self, nets: dict[NetKey, Decimal] | None = None) -> None:
        """A book of ``nets`` (kept, not copied: the book moves them), empty if None."""
        self.nets: dict[NetKey, Decimal] = {} if nets is None else nets
        # this batch: net key -> [its amount before the batch, the last booking that moved it]
        self._moved: dict[NetKey, list[Any]] = {}

    def apply(self, booking: BookingLike) -> None:
        """Add the booking's ``contributions``.  Raises NettingError (and changes
        nothing) for a booking that cannot be netted; an amount beyond 38
        digits raises Inexact midway (a caller then rebuilds the book, as after
        any failed batch)."""
        nets, moved, add = self.nets, self._moved, _EXACT.add
        for key, delta in contributions(booking).items():
            before = nets.get(key, _ZERO)
            nets[key] = add(before, delta)
            seen = moved.get(key)
            if seen is None:
                moved[key] = [before, booking.booking_id]
            else:
                seen[1] = booking.booking_id

    def take_changes(self) -> list[NetChange]:
        """The nets moved since the last ``take_changes`` or ``abort_batch``, one
        change each (its amount before the batch -> now, the last booking that
        moved it), in the order they first moved; a new batch starts."""
        nets = self.nets
        changes = [NetChange(key, before, nets[key], booking_id)
                   for key, (before, booking_id) in self._moved.items()]
        self._moved = {}
        return changes

    def abort_batch(self) -> None:
        """Forget what the batch moved, not the moves: a caller that gives up
        a batch rebuilds the book (the pipeline reloads it from the database)."""
        self._moved = {}

    def for_date(self, value_date: date) -> dict[NetKey, Decimal]:
        """The nets of one value date (zero ones included)."""
        return {k: v for k, v in self.nets.items() if k.value_date == value_date}
