"""Bookings: immutable double-entry postings, one ledger per currency.

A fill books as one ``Booking`` of four postings: the client and the LP
(counterparty = the fill's session) on the base-currency ledger and on the
quote-currency ledger.  Amounts are ``Decimal`` rounded half-even to the
currency's ISO 4217 minor units with an explicit context; both sides of a
ledger carry the same rounded amount, so every ledger sums to exactly zero.

Side (54) is the client's direction in the base currency whichever currency
is dealt: a client buy receives base and pays quote.

Bookings are never updated: a cancel books a reversal (every posting
negated), a correction books a reversal plus a new trade booking.  Ids are
deterministic, so a retry of the same booking is recognisable:
``T:<session>:<exec_id>`` for a trade, ``R:<reversed id>`` for a reversal,
the caller's id for cash.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from stp.breaks import Break, BreakType
from stp.breaks import settles as _settles
from stp.currency import decimal_context, quantize
from stp.fills import ExecKind, Fill, Side
from stp.frozen import fast_init
from stp.valuedates import CurrencyPair

__all__ = [
    "CLIENT_MONEY",
    "HOUSE_NBP",
    "BookResult",
    "Booking",
    "BookingKind",
    "Ledger",
    "Posting",
    "TradeAmounts",
    "book_cash",
    "book_fill",
    "book_negative_balance_credit",
    "book_trade",
    "check_booking",
    "client_party",
    "lp_party",
    "reversal_id",
    "reverse",
    "trade_booking_id",
]

#: The party opposite a client's cash deposits and withdrawals.
CLIENT_MONEY = "bank:client-money"
# what the house writes off when negative balance protection resets a client's balance to zero
HOUSE_NBP = "house:negative-balance-protection"

_ZERO = Decimal(0)


def client_party(account: str) -> str:
    """The ledger party of a client account."""
    return f"client:{account}"


def lp_party(session: str) -> str:
    """The ledger party of an LP or platform session."""
    return f"lp:{session}"


def trade_booking_id(session: str, exec_id: str) -> str:
    """The id of the trade booking of fill (session, exec_id)."""
    return f"T:{session}:{exec_id}"


def reversal_id(booking_id: str) -> str:
    """The id of the reversal of ``booking_id``."""
    return f"R:{booking_id}"


class BookingKind(StrEnum):
    TRADE = "trade"
    REVERSAL = "reversal"
    CASH = "cash"
    ADJUSTMENT = "adjustment"      # the engine's own cash booking (negative balance protection)


@fast_init
@dataclass(frozen=True, slots=True)
class Posting:
    """One signed amount on one party in one currency's ledger."""

    ledger: str                  # currency code
    party: str                   # "client:<account>", "lp:<session>", CLIENT_MONEY
    amount: Decimal              # signed, quantized to the ledger currency's minor units
    value_date: date | None


@fast_init
@dataclass(frozen=True, slots=True)
class TradeAmounts:
    """A booked trade's amounts, signed from the client's view.

    A client buy has ``base_amount > 0`` and ``quote_amount < 0``.  Both are
    the booked (rounded) amounts; ``price`` is the fill's LastPx.
    """

    account: str
    counterparty: str            # the LP or platform session
    pair: CurrencyPair
    side: Side
    base_amount: Decimal
    quote_amount: Decimal
    price: Decimal
    value_date: date | None


@fast_init
@dataclass(frozen=True, slots=True)
class Booking:
    """An immutable, balanced set of postings.

    For a REVERSAL, ``trade`` is the reversed booking's ``TradeAmounts`` as
    booked (not negated; ``sign`` is -1) and ``fill_key`` is the cancel or
    correction that caused it (None if reversed without one; the fill itself
    for an allocation's reversal).  ``allocated_from``: a trade booking an
    allocation made (``stp.allocation``) names the house booking it replaces.
    """

    booking_id: str
    kind: BookingKind
    fill_key: tuple[str, str] | None        # (session, exec_id)
    reverses: str | None
    account: str | None
    counterparty: str | None
    pair: str | None                        # symbol "EUR/USD"
    postings: tuple[Posting, ...]
    trade: TradeAmounts | None
    allocated_from: str | None = None

    @property
    def sign(self) -> int:
        """+1 for a trade or cash booking, -1 for a reversal."""
        return -1 if self.kind is BookingKind.REVERSAL else 1


@fast_init
@dataclass(frozen=True, slots=True)
class BookResult:
    bookings: tuple[Booking, ...]
    breaks: tuple[Break, ...]


def _trade_amounts(fill: Fill, account: str) -> TradeAmounts:
    pair = fill.pair
    qty, px = fill.last_qty, fill.last_px
    if not (qty.is_finite() and px.is_finite() and qty > _ZERO and px > _ZERO):
        raise ValueError(f"LastQty and LastPx must be positive: {qty}, {px}")
    ctx = decimal_context()
    if fill.currency == pair.base:
        base = quantize(qty, pair.base)
        quote = quantize(ctx.multiply(qty, px), pair.quote)
    elif fill.currency == pair.quote:
        quote = quantize(qty, pair.quote)
        base = quantize(ctx.divide(qty, px), pair.base)
    else:
        raise ValueError(f"dealt currency {fill.currency} is not a currency of {pair.symbol}")
    if not (base and quote):
        zero = pair.quote if base else pair.base
        raise ValueError(f"{qty} {fill.currency} at {px} rounds to zero {zero}")
    if fill.side is Side.BUY:
        quote = _neg(quote)
    else:
        base = _neg(base)
    # account, counterparty, pair, side, base_amount, quote_amount, price, value_date
    return TradeAmounts(account, fill.session, pair, fill.side, base, quote, px, fill.settl_date)


def _neg(amount: Decimal) -> Decimal:
    """Exact negation; zero stays unsigned (copy_negate would give -0)."""
    return amount.copy_negate() if amount else amount.copy_abs()


def book_trade(fill: Fill) -> Booking:
    """The trade booking of a TRADE or CORRECT fill.

    Raises ValueError for a fill without account, a CANCEL, a dealt currency
    outside the pair, or an amount that cannot be quantized or rounds to zero.
    """
    if fill.kind is ExecKind.CANCEL:
        raise ValueError("a cancel does not book a trade")
    if fill.account is None:
        raise ValueError(f"fill {fill.session}/{fill.exec_id} has no account")
    account, session, exec_id = fill.account, fill.session, fill.exec_id
    t = _trade_amounts(fill, account)
    pair = t.pair
    base, quote, base_amount, quote_amount = pair.base, pair.quote, t.base_amount, t.quote_amount
    client, lp, vd = client_party(account), lp_party(session), fill.settl_date
    postings = (
        Posting(base, client, base_amount, vd),
        Posting(base, lp, _neg(base_amount), vd),
        Posting(quote, client, quote_amount, vd),
        Posting(quote, lp, _neg(quote_amount), vd),
    )
    # booking_id, kind, fill_key, reverses, account, counterparty, pair, postings, trade
    return Booking(trade_booking_id(session, exec_id), BookingKind.TRADE, (session, exec_id), None,
                   account, session, pair.symbol, postings, t)


def reverse(booking: Booking, cause: tuple[str, str] | None = None) -> Booking:
    """The reversal of a TRADE or CASH booking: every posting negated.

    ``cause`` is the (session, exec_id) of the cancel or correction.  Raises
    ValueError for a REVERSAL (reversals are not reversed).
    """
    if booking.kind is BookingKind.REVERSAL:
        raise ValueError(f"{booking.booking_id} is a reversal; reversals are not reversed")
    postings = tuple(Posting(p.ledger, p.party, _neg(p.amount), p.value_date) for p in booking.postings)
    return Booking(booking_id=reversal_id(booking.booking_id), kind=BookingKind.REVERSAL,
                   fill_key=cause, reverses=booking.booking_id, account=booking.account,
                   counterparty=booking.counterparty, pair=booking.pair, postings=postings,
                   trade=booking.trade)


def _fill_values(fill: Fill) -> dict[str, str]:
    return {"kind": fill.kind.name, "symbol": fill.pair.symbol, "side": fill.side.name,
            "currency": fill.currency, "last_qty": str(fill.last_qty), "last_px": str(fill.last_px),
            "account": fill.account or ""}


def _account_break(fill: Fill, known_accounts: Container[str] | None) -> Break | None:
    if fill.account is None:
        summary = f"{fill.kind.name.lower()} {fill.session}/{fill.exec_id} has no account"
    elif known_accounts is not None and fill.account not in known_accounts:
        summary = f"{fill.kind.name.lower()} {fill.session}/{fill.exec_id}: unknown account {fill.account}"
    else:
        return None
    keys = {"session": fill.session, "exec_id": fill.exec_id, "account": fill.account or ""}
    return Break(BreakType.UNKNOWN_ACCOUNT, keys, summary, theirs=_fill_values(fill), **_settles(fill))


def _invalid_break(fill: Fill, error: ValueError) -> Break:
    keys = {"session": fill.session, "exec_id": fill.exec_id}
    return Break(BreakType.INVALID_FILL, keys, f"{fill.session}/{fill.exec_id} cannot be booked: {error}",
                 theirs=_fill_values(fill), **_settles(fill))


def book_fill(fill: Fill, original: Booking | None,
              known_accounts: Container[str] | None = None) -> BookResult:
    """The bookings (or breaks) of one fill.

    TRADE: one trade booking.  CANCEL: the reversal of ``original``, the
    active booking of (fill.session, fill.exec_ref_id) the caller looked up.
    CORRECT: that reversal plus the corrected fill's trade booking (keyed by
    the correction's own exec_id).  A cancel or correct without ``original``
    gives an UNKNOWN_REFERENCE break; a TRADE or CORRECT without account (or
    with one outside ``known_accounts``) an UNKNOWN_ACCOUNT break; amounts
    that cannot be booked an INVALID_FILL break.  A break books nothing.
    Raises ValueError if ``original`` is not a trade booking of that key.
    """
    if fill.kind is not ExecKind.TRADE:
        if original is None:
            ref = fill.exec_ref_id or ""
            keys = {"session": fill.session, "exec_id": fill.exec_id, "exec_ref_id": ref}
            summary = (f"{fill.kind.name.lower()} {fill.session}/{fill.exec_id} refers to "
                       f"{ref or 'no fill'}, which has no active booking")
            return BookResult((), (Break(BreakType.UNKNOWN_REFERENCE, keys, summary,
                                         theirs=_fill_values(fill), **_settles(fill)),))
        if original.kind is not BookingKind.TRADE or original.fill_key != (fill.session, fill.exec_ref_id):
            raise ValueError(f"{original.booking_id} is not the trade booking of "
                             f"{fill.session}/{fill.exec_ref_id}")
    if fill.kind is not ExecKind.CANCEL:
        account_break = _account_break(fill, known_accounts)
        if account_break is not None:
            return BookResult((), (account_break,))
        try:
            trade = book_trade(fill)
        except ValueError as exc:
            return BookResult((), (_invalid_break(fill, exc),))
        if original is None:
            return BookResult((trade,), ())
        return BookResult((reverse(original, (fill.session, fill.exec_id)), trade), ())
    assert original is not None
    return BookResult((reverse(original, (fill.session, fill.exec_id)),), ())


def book_cash(booking_id: str, account: str, currency: str, amount: Decimal,
              value_date: date | None) -> Booking:
    """A cash booking: deposit (amount > 0) or withdrawal (< 0) against CLIENT_MONEY.

    Raises ValueError for a zero amount or one finer than the currency's minor units.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    q = quantize(amount, currency)
    if q != amount:
        raise ValueError(f"{amount} is finer than the minor units of {currency}")
    if not q:
        raise ValueError("a cash booking needs a non-zero amount")
    client = client_party(account)
    postings = (Posting(currency, client, q, value_date),
                Posting(currency, CLIENT_MONEY, _neg(q), value_date))
    return Booking(booking_id=booking_id, kind=BookingKind.CASH, fill_key=None, reverses=None,
                   account=account, counterparty=None, pair=None, postings=postings, trade=None)


def book_negative_balance_credit(booking_id: str, account: str, currency: str, amount: Decimal) -> Booking:
    """Negative balance protection: credit ``amount`` (> 0, the account's
    negative balance) to the client against the house (``HOUSE_NBP``), a
    balanced booking of its own.  Raises ValueError for an amount that is not
    positive or finer than the currency's minor units."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    q = quantize(amount, currency)
    if q != amount or q <= 0:
        raise ValueError(f"a negative balance credit must be > 0 in {currency} minor units, not {amount}")
    postings = (Posting(currency, client_party(account), q, None),
                Posting(currency, HOUSE_NBP, _neg(q), None))
    return Booking(booking_id=booking_id, kind=BookingKind.ADJUSTMENT, fill_key=None, reverses=None,
                   account=account, counterparty=None, pair=None, postings=postings, trade=None)


def check_booking(booking: Booking) -> None:
    """Raise ValueError unless every posting is quantized and every ledger sums to zero."""
    ctx = decimal_context()
    sums: dict[str, Decimal] = {}
    for p in booking.postings:
        amount = p.amount
        if not isinstance(amount, Decimal) or not amount.is_finite():
            raise ValueError(f"{booking.booking_id}: {p.ledger} amount {amount!r} is not a finite Decimal")
        if quantize(amount, p.ledger) != amount:
            raise ValueError(f"{booking.booking_id}: {amount} is not in {p.ledger} minor units")
        sums[p.ledger] = ctx.add(sums.get(p.ledger, _ZERO), amount)
    for ledger, total in sums.items():
        if total:
            raise ValueError(f"{booking.booking_id}: {ledger} postings sum to {total}, not zero")


class Ledger:
    """Balances per (currency, party) and per (currency, party, value date).

    Applies bookings incrementally and keeps every applied booking by id
    (memory grows with the bookings): re-applying an identical booking is a
    no-op, a different booking under a used id is rejected.  A reversal must
    reverse an applied booking, once.
    """

    __slots__ = ("_balances", "_bookings", "_dated", "_reversed", "_totals")

    def __init__(self) -> None:
        self._balances: dict[tuple[str, str], Decimal] = {}
        self._dated: dict[tuple[str, str, date | None], Decimal] = {}
        self._totals: dict[str, Decimal] = {}
        self._bookings: dict[str, Booking] = {}
        self._reversed: set[str] = set()

    def apply(self, booking: Booking) -> bool:
        """Apply a booking; False if the identical booking was already applied.

        Raises ValueError (and changes nothing) for an unbalanced or
        unquantized booking, a conflicting id, or a reversal of a booking
        not applied here or already reversed.
        """
        seen = self._bookings.get(booking.booking_id)
        if seen is not None:
            if seen == booking:
                return False
            raise ValueError(f"booking {booking.booking_id} already applied with different content")
        check_booking(booking)
        if booking.kind is BookingKind.REVERSAL:
            target = booking.reverses
            if target is None or target not in self._bookings:
                raise ValueError(f"{booking.booking_id} reverses {target}, which is not applied")
            if target in self._reversed:
                raise ValueError(f"{target} is already reversed")
            self._reversed.add(target)
        ctx = decimal_context()
        for p in booking.postings:
            key = (p.ledger, p.party)
            self._balances[key] = ctx.add(self._balances.get(key, _ZERO), p.amount)
            dkey = (p.ledger, p.party, p.value_date)
            self._dated[dkey] = ctx.add(self._dated.get(dkey, _ZERO), p.amount)
            self._totals[p.ledger] = ctx.add(self._totals.get(p.ledger, _ZERO), p.amount)
        self._bookings[booking.booking_id] = booking
        return True

    def apply_all(self, bookings: Iterable[Booking]) -> None:
        """Apply bookings in order."""
        for b in bookings:
            self.apply(b)

    def balance(self, currency: str, party: str) -> Decimal:
        """The party's balance in the currency over all value dates."""
        return self._balances.get((currency, party), _ZERO)

    def balance_on(self, currency: str, party: str, value_date: date | None) -> Decimal:
        """The sum of the party's postings in the currency for exactly that value date."""
        return self._dated.get((currency, party, value_date), _ZERO)

    def total(self, currency: str) -> Decimal:
        """The sum of every posting in the currency: zero."""
        return self._totals.get(currency, _ZERO)

    def currencies(self) -> tuple[str, ...]:
        """The currencies with postings, in first-posting order."""
        return tuple(self._totals)

    def balances(self, currency: str) -> dict[str, Decimal]:
        """Every party's balance in the currency."""
        return {party: amount for (ccy, party), amount in self._balances.items() if ccy == currency}

    def booking(self, booking_id: str) -> Booking | None:
        """The applied booking with that id."""
        return self._bookings.get(booking_id)

    def is_reversed(self, booking_id: str) -> bool:
        """True once a reversal of the booking has been applied."""
        return booking_id in self._reversed
