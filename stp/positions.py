"""Client positions per (account, pair) and per (account, pair, value date).

Average-cost method on the booked ``TradeAmounts``: a trade in the
position's direction moves the average price to the quantity-weighted mean;
a reducing trade keeps the average and realises
``(price - average) * reduced quantity * sign(position)`` in the quote
currency, quantized half-even to its minor units; a trade through zero
realises on the closed part and opens the rest at its own price.  The price
is the fill's LastPx (for a quote-dealt fill the booked base amount is
rounded, so the effective price differs in the last minor unit).  Average
prices are exact to the 38 digits of ``decimal_context()``.

``quote_flow`` is the net of the active trades' booked quote amounts (a buy
pays the quote currency: negative): with the quantity (the net of their base
amounts) it is the account's open position in each of the pair's two
currencies, exact and unchanged by how P&L is split, which the exposure
limits check.

A cancel or correction books a reversal *now*: the position applies the
opposite of the original trade at the original price (``apply_trade(...,
sign=-1)``), in booking order, without restating history.  The quantity is
always the sum of the active (unreversed) trades; realised plus unrealised
P&L at any mark equals that of a replay of the active trades alone (the
cash-flow identity), give or take the minor-unit rounding of each
realisation; the split between realised and unrealised can differ (a reversal
that reduces the position realises against the current average).  Each
booking costs O(1), whatever the history: this is what keeps the pipeline's
cost per fill flat.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from stp.booking import Booking, TradeAmounts
from stp.currency import decimal_context, quantize
from stp.frozen import fast_init

__all__ = ["Position", "PositionBook", "PositionMoves", "apply_trade", "replay"]

_ZERO = Decimal(0)


@fast_init
@dataclass(frozen=True, slots=True)
class Position:
    """A client's net position in one pair.

    ``quantity`` is in the base currency (long > 0); ``average_price`` is
    None when flat; ``realised_pnl`` and ``cost`` (quantity x average price,
    signed like quantity, quantized) are in the quote currency;
    ``quote_flow`` is the net of the active trades' quote amounts (a long
    position bought has paid: negative), realised P&L included.
    """

    account: str
    pair: str                            # symbol "EUR/USD"
    quantity: Decimal
    average_price: Decimal | None
    realised_pnl: Decimal
    cost: Decimal
    quote_flow: Decimal = _ZERO

    @property
    def quote_currency(self) -> str:
        """The currency of realised_pnl and cost."""
        return self.pair.rpartition("/")[2]

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        """(mark - average price) x quantity in the quote currency, quantized."""
        if self.average_price is None:
            return _ZERO
        ctx = decimal_context()
        pnl = ctx.multiply(ctx.subtract(mark, self.average_price), self.quantity)
        return quantize(pnl, self.quote_currency)


def _signum(x: Decimal) -> int:
    return (x > _ZERO) - (x < _ZERO)


_CTX = decimal_context()      # shared, never changed


def apply_trade(position: Position | None, trade: TradeAmounts, sign: int = +1) -> Position:
    """The position after ``trade`` (``sign=-1``: the opposite trade at the same
    price, how a reversal is booked).  Raises ValueError for a trade of
    another account or pair, or a sign other than +1/-1.
    """
    if sign != 1 and sign != -1:
        raise ValueError(f"sign must be +1 or -1, not {sign!r}")
    currency_pair = trade.pair
    pair, quote = currency_pair.symbol, currency_pair.quote
    if position is None:
        zero = quantize(_ZERO, quote)
        position = Position(trade.account, pair, _ZERO, None, zero, zero, zero)
    elif position.account != trade.account or position.pair != pair:
        raise ValueError(f"trade of {trade.account} {pair} applied to position "
                         f"{position.account} {position.pair}")
    ctx = _CTX
    dq = trade.base_amount if sign > 0 else ctx.minus(trade.base_amount)
    if not dq:
        return position
    flow = ctx.add(position.quote_flow, trade.quote_amount if sign > 0 else ctx.minus(trade.quote_amount))
    q, avg, px, realised = position.quantity, position.average_price, trade.price, position.realised_pnl
    new_q = ctx.add(q, dq)
    if avg is None or _signum(q) == _signum(dq):
        if avg is None:
            new_avg: Decimal | None = px
        else:
            new_avg = ctx.divide(ctx.add(ctx.multiply(avg, q), ctx.multiply(px, dq)), new_q)
    else:
        reduced = min(q.copy_abs(), dq.copy_abs())
        pnl = ctx.multiply(ctx.subtract(px, avg), reduced)
        if q < _ZERO:
            pnl = ctx.minus(pnl)
        realised = ctx.add(realised, quantize(pnl, quote))
        if not new_q:
            new_avg = None
        elif _signum(new_q) == _signum(q):
            new_avg = avg
        else:
            new_avg = px
    cost = quantize(ctx.multiply(new_q, new_avg), quote) if new_avg is not None else quantize(_ZERO, quote)
    return Position(position.account, pair, new_q, new_avg, realised, cost, flow)


def replay(trades: Iterable[TradeAmounts]) -> Position:
    """The position after ``trades`` in order, from flat.

    Raises ValueError for no trades or trades of more than one (account, pair).
    """
    position: Position | None = None
    for trade in trades:
        position = apply_trade(position, trade)
    if position is None:
        raise ValueError("replay needs at least one trade")
    return position


_Key = tuple[str, str]                   # (account, pair symbol)
_DatedKey = tuple[str, str, date]        # (account, pair symbol, value date)


@dataclass(frozen=True, slots=True)
class PositionMoves:
    """What a batch of bookings moved, each key once, in the order it first moved."""

    positions: tuple[_Key, ...]
    dated: tuple[_DatedKey, ...]


class PositionBook:
    """Positions per (account, pair) and quantities per (account, pair, value
    date), moved booking by booking; and the record of what the current batch
    moved (``take_moved``), so that a caller persists each once per batch.

    The book holds the positions, not the trades behind them: memory does not
    grow with the fills, and a reversal (the opposite trade at its original
    price, ``apply_trade(..., sign=-1)``) costs what a trade does.  So it does
    not check that a reversal reverses an active trade, nor that a booking is
    new: the booking stage finds the active booking a cancel reverses, and
    each booking is applied once (the pipeline's cursor).

    Keyed by the booking's account and pair (a booking without a trade, an
    account or a pair, i.e. cash, moves nothing).  Nothing is dropped at
    zero: a position stays once opened, flat or not (its realised P&L is
    history), and a value date's quantity that comes back to zero stays, 0,
    like the stored row it mirrors, which must be overwritten with 0.
    Quantities per value date are summed in ``decimal_context()``, the
    context of the position's quantity, so they add up to it exactly.
    Pure: no I/O, no clock.
    """

    __slots__ = ("_moved", "_moved_dated", "dated", "positions")

    def __init__(self, positions: dict[_Key, Position] | None = None,
                 dated: dict[_Key, dict[date | None, Decimal]] | None = None) -> None:
        """A book of ``positions`` and ``dated`` quantities (kept, not copied:
        the book moves them), empty if None."""
        self.positions: dict[_Key, Position] = {} if positions is None else positions
        # (account, pair) -> value date (None: a trade booked without one) -> base quantity
        self.dated: dict[_Key, dict[date | None, Decimal]] = {} if dated is None else dated
        # this batch's moved positions and (account, pair, value date)s, in order
        self._moved: dict[_Key, None] = {}
        self._moved_dated: dict[_DatedKey, None] = {}

    def apply(self, booking: Booking) -> Position | None:
        """Apply a TRADE (or a REVERSAL of one: the opposite trade at the same
        price); the (account, pair) position after it, None for a booking
        without a trade.  Raises ValueError (and changes nothing) for a trade
        whose account or pair is not that of the position it would move.
        """
        t = booking.trade
        account, pair = booking.account, booking.pair
        if t is None or account is None or pair is None:
            return None
        key = (account, pair)
        sign = booking.sign
        position = apply_trade(self.positions.get(key), t, sign)
        self.positions[key] = position
        dated = self.dated.get(key)
        if dated is None:
            dated = self.dated[key] = {}
        vd = t.value_date
        quantity = dated.get(vd, _ZERO)
        dated[vd] = _CTX.add(quantity, t.base_amount) if sign > 0 else _CTX.subtract(quantity, t.base_amount)
        self._moved[key] = None
        if vd is not None:          # a quantity without a value date is not recorded (it has no row)
            self._moved_dated[(account, pair, vd)] = None
        return position

    def take_moved(self) -> PositionMoves:
        """What moved since the last ``take_moved`` or ``abort_batch``; a new batch starts."""
        moved = PositionMoves(tuple(self._moved), tuple(self._moved_dated))
        self._moved = {}
        self._moved_dated = {}
        return moved

    def abort_batch(self) -> None:
        """Forget what the batch moved, not the moves: a caller that gives up
        a batch rebuilds the book (the pipeline reloads it from the database)."""
        self._moved = {}
        self._moved_dated = {}
