"""Amount limits: absurd quantities and prices are refused before they book.

The intake checks every report that ``stp.fills.normalise`` turned into a
``Fill``, and every quote, against the pair's ``PairLimits`` and the pair's
reference price (the latest accepted price).  A fill outside them becomes a
``LimitRejection`` (a ``Rejection``: the intake answers it with a
DontKnowTrade, raises an ``amount_limit`` break and books nothing); a quote
outside them a ``QuoteRejection`` (BusinessMessageReject).  A refused report
or quote never becomes the reference price.

Rules, in this order (the first that fails is the answer):

* LastPx and LastSpotRate within the pair's absolute bounds ``min_px`` ..
  ``max_px`` (DKReason E, price exceeds limit), whether or not there is a
  reference price yet;
* trades: the spot price (LastSpotRate if given, else LastPx) within
  ``price_band`` (a fraction) of the reference price (DKReason E).  The band
  applies while the reference price is younger than ``band_max_age`` (by the
  receive times of the reports); an older one, or none, leaves only the
  absolute bounds.  Cancels and corrections carry the price of a trade done
  earlier, when the market may have been elsewhere: the bounds only;
* LastQty, OrderQty, CumQty and LeavesQty at most ``max_qty`` (in the pair's
  base currency; a quantity dealt in the quote currency counts as
  quantity / LastPx) (DKReason C, quantity exceeds order: ``max_qty`` is the
  largest order the desk can have given the LP for the pair, so the fill
  exceeds whatever order it claims to fill.  E is about prices only);
* representable (DKReason Z, other): every decimal field of the fill fits
  the database's text columns (``MAX_DECIMAL_TEXT`` characters), LastQty is
  not finer than the minor units of its currency, and both amounts the fill
  books (the base and the quote amount, at their currencies' minor units)
  fit the 38 digits of ``stp.currency.decimal_context`` and do not round to
  zero.  (With the bounds above this catches what is too fine rather than
  too large: 0.001 EUR, a price with 40 decimals.)

Prices are checked before quantities: a quantity in the quote currency is
converted at LastPx, which must be sane first.  So LastPx 9e49 is E (price)
even though its amounts would not fit either.

The reference price moves with an accepted trade whose spot price is within
the pair's ``tolerance`` (confirm's ``price_tolerance``) of the reference
(or that is the first price seen or follows a stale one), and with every
accepted quote.  An accepted fill beyond the tolerance is booked (the trade
was done) and flagged ``price_out_of_tolerance`` by confirm; it does not move
the reference, just as it does not move confirm's: one off-market price must
not make the next good ones fail.  Cancels and corrections never move it.

Pure: no I/O, no clock (times are the reports' receive times).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation, Overflow

from stp.currency import decimal_context, minor_units, quantize
from stp.fills import (
    DK_OTHER,
    DK_PRICE_EXCEEDS_LIMIT,
    DK_QUANTITY_EXCEEDS_ORDER,
    ExecKind,
    Fill,
    Rejection,
)
from stp.marketdata import OTHER, Quote, QuoteRejection

__all__ = [
    "MAX_DECIMAL_TEXT",
    "MAX_QUOTE_TEXT",
    "AmountLimits",
    "LimitRejection",
    "PairLimits",
    "check_fill",
    "check_fill_move",
    "check_quote",
    "reference_move",
    "trade_move",
]

#: Longest decimal text the fills table keeps (``DecimalText``: String(40)).
MAX_DECIMAL_TEXT = 40
#: Longest decimal text the market_prices table keeps (String(48)).
MAX_QUOTE_TEXT = 48


@dataclass(frozen=True, slots=True)
class PairLimits:
    """The amounts a pair's reports may carry (see the module docstring)."""

    max_qty: Decimal = Decimal("1000000000")       # base currency units
    price_band: Decimal = Decimal("0.10")          # fraction of the reference price
    min_px: Decimal = Decimal("0.00001")           # absolute sanity bounds
    max_px: Decimal = Decimal("1000000")
    tolerance: Decimal = Decimal("0.02")           # a price this close moves the reference

    def __post_init__(self) -> None:
        for name in ("max_qty", "price_band", "min_px", "max_px", "tolerance"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be a positive decimal, not {value!r}")
        if self.min_px >= self.max_px:
            raise ValueError(f"min_px {self.min_px} must be below max_px {self.max_px}")


@dataclass(frozen=True, slots=True)
class AmountLimits:
    """Limits per pair (by symbol), ``default`` for the pairs not listed."""

    pairs: Mapping[str, PairLimits] = field(default_factory=dict)
    default: PairLimits = PairLimits()
    band_max_age: timedelta = timedelta(hours=24)

    def of(self, symbol: str) -> PairLimits:
        return self.pairs.get(symbol, self.default)


#: A pair's reference price and when the report that set it was received.
Reference = tuple[Decimal, datetime]


@dataclass(frozen=True, slots=True)
class LimitRejection(Rejection):
    """A fill refused by a limit: a DontKnowTrade and an ``amount_limit`` break."""

    rule: str = ""                                   # representable, price_bounds, price_band, max_qty
    limit: str = ""                                  # the limit, as text
    reference_px: str | None = None                  # the reference price, when the band applied


_CTX = decimal_context()


def _shown(value: Decimal) -> str:
    """A value for a message text: at most 60 characters (a DontKnowTrade's
    Text and the journal quote it; the wire allows any length)."""
    text = str(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


_DECIMAL_FIELDS = ("LastQty (32)", "LastPx (31)", "CumQty (14)", "LeavesQty (151)", "AvgPx (6)",
                   "OrderQty (38)", "LastSpotRate (194)", "LastForwardPoints (195)")


_DECIMAL_TAGS = (32, 31, 14, 151, 6, 38, 194, 195)

#: The fields of a report by tag, as ``stp.fills.normalise`` read them: its
#: decimals are those texts (FIX syntax: digits, a point, no exponent).
Texts = Mapping[int, str]


def _text_too_long(fill: Fill, texts: Texts | None = None) -> str | None:
    values = (fill.last_qty, fill.last_px, fill.cum_qty, fill.leaves_qty, fill.avg_px, fill.order_qty,
              fill.spot_rate, fill.forward_points)
    for i, value in enumerate(values):
        if value is None:
            continue
        if texts is not None:
            text = texts.get(_DECIMAL_TAGS[i])
            # the str() of a FIX decimal's Decimal is at most one character longer
            # than its text (".5" -> "0.5"; "0.00000001" -> "1E-8" is shorter)
            if text is not None and len(text) < MAX_DECIMAL_TEXT:
                continue
        if len(str(value)) > MAX_DECIMAL_TEXT:
            return f"{_DECIMAL_FIELDS[i]} has more than {MAX_DECIMAL_TEXT} characters: {str(value)[:60]}"
    return None


def _plainly_representable(fill: Fill, texts: Texts) -> bool:
    """True when the report's own texts show the amounts fit (the common
    case, without a Decimal operation): LastQty no finer than its currency's
    minor units, LastQty and LastPx 30 characters together at most (the
    amounts then have fewer than 38 digits at any minor units: LastPx >= 1e-28),
    and both amounts at least 1 (they cannot round to zero).  False: check
    them exactly."""
    qty_text, px_text = texts.get(32), texts.get(31)
    if qty_text is None or px_text is None or len(qty_text) + len(px_text) > 30:
        return False
    pair = fill.pair
    try:
        units = minor_units(fill.currency)
        minor_units(pair.base)
        minor_units(pair.quote)
    except ValueError:
        return False
    if len(qty_text.partition(".")[2].rstrip("0")) > units:
        return False
    qty, px = float(qty_text), float(px_text)
    return qty * px >= 1.0 if fill.currency == pair.base else qty >= px >= 1e-28


def _unrepresentable(fill: Fill, texts: Texts | None = None) -> str | None:
    """Why the fill's amounts cannot be booked exactly, None if they can
    (``texts``: the report's fields, which spare the work when they show it)."""
    too_long = _text_too_long(fill, texts)
    if too_long is not None:
        return too_long
    if texts is not None and _plainly_representable(fill, texts):
        return None
    pair, qty, px = fill.pair, fill.last_qty, fill.last_px
    try:
        if quantize(qty, fill.currency) != qty:
            return f"LastQty {_shown(qty)} is finer than the minor units of {fill.currency}"
        if fill.currency == pair.base:
            base, quote = qty, quantize(_CTX.multiply(qty, px), pair.quote)
        else:
            base, quote = quantize(_CTX.divide(qty, px), pair.base), qty
    except (ValueError, ArithmeticError) as exc:   # beyond 38 digits, overflow, no minor units
        return f"{_shown(qty)} {fill.currency} at {_shown(px)} cannot be booked: {exc}"[:300]
    if not base or not quote:
        zero = pair.base if not base else pair.quote
        return f"{_shown(qty)} {fill.currency} at {_shown(px)} rounds to zero {zero}"
    return None


def _fresh(reference: Reference | None, at: datetime, max_age: timedelta) -> Decimal | None:
    if reference is None:
        return None
    price, since = reference
    return price if at - since <= max_age else None


def spot_price(fill: Fill) -> Decimal:
    """The price a fill says the market is at: LastSpotRate if given, else LastPx."""
    return fill.spot_rate if fill.spot_rate is not None else fill.last_px


def check_fill(fill: Fill, limits: PairLimits, reference: Reference | None,
               band_max_age: timedelta = timedelta(hours=24)) -> LimitRejection | None:
    """None if the fill is within its pair's limits, else why not (see the module)."""
    return check_fill_move(fill, limits, reference, band_max_age)[0]


def check_fill_move(fill: Fill, limits: PairLimits, reference: Reference | None,
                    band_max_age: timedelta = timedelta(hours=24), texts: Texts | None = None,
                    ) -> tuple[LimitRejection | None, Reference | None]:
    """``check_fill`` and ``reference_move`` in one: (why the fill is refused,
    None) or (None, the reference it sets if accepted, None if it leaves it).
    ``texts``: the report's fields by tag, the texts its decimals were read
    from (they spare converting the decimals back to text)."""
    exec_id = fill.exec_id
    for name, px in (("LastPx (31)", fill.last_px), ("LastSpotRate (194)", fill.spot_rate)):
        if px is not None and not limits.min_px <= px <= limits.max_px:
            bounds = f"{limits.min_px}..{limits.max_px}"
            return LimitRejection(DK_PRICE_EXCEEDS_LIMIT,
                                  f"{name} {_shown(px)} is outside the {fill.symbol} bounds {bounds}",
                                  exec_id, "price_bounds", bounds), None
    # trades only: a cancel or correction carries the price of a trade done earlier
    trade = fill.kind is ExecKind.TRADE
    ref = _fresh(reference, fill.received_at, band_max_age) if trade else None
    off = None                                       # how far the spot price is from a fresh reference
    if ref is not None:
        px = spot_price(fill)
        allowed = _CTX.multiply(ref, limits.price_band)
        off = abs(_CTX.subtract(px, ref))
        if off > allowed:
            name = "LastSpotRate (194)" if fill.spot_rate is not None else "LastPx (31)"
            return LimitRejection(DK_PRICE_EXCEEDS_LIMIT,
                                  f"{name} {_shown(px)} is more than {limits.price_band} away from the "
                                  f"{fill.symbol} reference price {ref}",
                                  exec_id, "price_band", str(limits.price_band), str(ref)), None
    max_qty = limits.max_qty
    if fill.currency != fill.pair.base:
        # in the quote currency: at most max_qty base units at LastPx
        try:
            max_qty = _CTX.multiply(max_qty, fill.last_px)
        except (InvalidOperation, Overflow):
            max_qty = Decimal("Infinity")
    for name, qty in (("LastQty (32)", fill.last_qty), ("OrderQty (38)", fill.order_qty),
                      ("CumQty (14)", fill.cum_qty), ("LeavesQty (151)", fill.leaves_qty)):
        if qty is not None and qty > max_qty:
            return LimitRejection(DK_QUANTITY_EXCEEDS_ORDER,
                                  f"{name} {_shown(qty)} {fill.currency} exceeds the {fill.symbol} maximum "
                                  f"{limits.max_qty} {fill.pair.base}", exec_id, "max_qty",
                                  str(limits.max_qty)), None
    why = _unrepresentable(fill, texts)
    if why is not None:
        return LimitRejection(DK_OTHER, why, exec_id, "representable",
                              f"{MAX_DECIMAL_TEXT} characters, 38 digits at minor units"), None
    # accepted: the reference it sets (as reference_move)
    if not trade:
        return None, None
    if ref is not None and off is not None and off > _CTX.multiply(ref, limits.tolerance):
        return None, None
    if reference is not None and fill.received_at < reference[1]:
        return None, None                            # older than the reference (a late report)
    return None, (spot_price(fill), fill.received_at)


def check_quote(quote: Quote, limits: PairLimits, reference: Reference | None,
                band_max_age: timedelta = timedelta(hours=24)) -> QuoteRejection | None:
    """None if the quote is usable, else a BusinessMessageReject's reason and text."""
    for name, px in (("bid", quote.bid), ("offer", quote.offer)):
        if px is None:
            continue
        if len(str(px)) > MAX_QUOTE_TEXT:
            return QuoteRejection(OTHER, f"{quote.symbol} {name} {str(px)[:60]} has more than "
                                         f"{MAX_QUOTE_TEXT} characters")
        if not limits.min_px <= px <= limits.max_px:
            return QuoteRejection(OTHER, f"{quote.symbol} {name} {_shown(px)} is outside the bounds "
                                         f"{limits.min_px}..{limits.max_px}")
    ref = _fresh(reference, quote.received_at, band_max_age)
    if ref is not None:
        px = quote.price
        if abs(_CTX.subtract(px, ref)) > _CTX.multiply(ref, limits.price_band):
            return QuoteRejection(OTHER, f"{quote.symbol} price {_shown(px)} is more than "
                                         f"{limits.price_band} away from the reference price {ref}")
    return None


def reference_move(fill: Fill, limits: PairLimits, reference: Reference | None,
                   band_max_age: timedelta = timedelta(hours=24)) -> Reference | None:
    """The reference an accepted fill sets, None if it leaves it as it is:
    trades only, within ``tolerance`` of a fresh reference (or no fresh one)."""
    if fill.kind is not ExecKind.TRADE:
        return None
    return trade_move(spot_price(fill), fill.received_at, limits, reference, band_max_age)


def trade_move(px: Decimal, at: datetime, limits: PairLimits, reference: Reference | None,
               band_max_age: timedelta = timedelta(hours=24)) -> Reference | None:
    """The reference an accepted trade at spot price ``px``, received at
    ``at``, sets (None: it leaves it as it is)."""
    ref = _fresh(reference, at, band_max_age)
    if ref is not None and abs(_CTX.subtract(px, ref)) > _CTX.multiply(ref, limits.tolerance):
        return None
    if reference is not None and at < reference[1]:
        return None                                  # older than the reference (a late report)
    return px, at


def usable_reference(price: Decimal, limits: PairLimits) -> bool:
    """Whether a stored price (loaded at start) may serve as the reference."""
    return price.is_finite() and limits.min_px <= price <= limits.max_px
