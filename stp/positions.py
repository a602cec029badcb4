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

from stp.booking import Booking, BookingKind, TradeAmounts
from stp.currency import decimal_context, quantize
from stp.frozen import fast_init

__all__ = ["Position", "PositionBook", "apply_trade", "replay", "replay_bookings"]

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


def replay_bookings(bookings: Iterable[Booking]) -> dict[tuple[str, str], Position]:
    """Positions from trade and reversal bookings in booking order, from flat."""
    out: dict[tuple[str, str], Position] = {}
    for booking in bookings:
        t = booking.trade
        if t is None:
            continue
        key = (t.account, t.pair.symbol)
        out[key] = apply_trade(out.get(key), t, booking.sign)
    return out


_Key = tuple[str, str]                   # (account, pair symbol)


class PositionBook:
    """Positions kept up to date booking by booking.

    The book checks reversals against the active (booked, not reversed)
    trades it holds per (account, pair), keyed by booking id; a reversal
    applies the opposite trade at its original price (O(1)).  A position
    stays once opened, flat or not (its realised P&L is history).
    Position by value date is the sum of active base amounts per date
    (zero entries omitted).  (The engine's PositionKeeper applies the same
    rule without holding the trades: memory does not grow with fills.)
    """

    __slots__ = ("_accounts", "_active", "_dated", "_positions")

    def __init__(self) -> None:
        self._active: dict[_Key, dict[str, TradeAmounts]] = {}
        self._positions: dict[_Key, Position] = {}
        self._dated: dict[_Key, dict[date | None, Decimal]] = {}
        self._accounts: dict[str, dict[str, None]] = {}

    def apply(self, booking: Booking) -> Position | None:
        """Apply a TRADE or a REVERSAL of one; the (account, pair) position after it.

        Returns None for a booking without a trade (cash).  Re-applying an active trade booking unchanged is a
        no-op.  Raises ValueError (and changes nothing) for a different trade
        under an active id or a reversal of a trade that is not active.
        """
        trade = booking.trade
        if trade is None:
            return None
        key = (trade.account, trade.pair.symbol)
        if booking.kind is BookingKind.TRADE:
            return self._add(key, booking.booking_id, trade)
        if booking.kind is BookingKind.REVERSAL:
            target = booking.reverses
            active = self._active.get(key)
            if target is None or active is None or target not in active:
                raise ValueError(f"{booking.booking_id}: {target} is not an active trade of {key}")
            return self._remove(key, target)
        return None

    def _add(self, key: _Key, booking_id: str, trade: TradeAmounts) -> Position:
        active = self._active.get(key)
        if active is not None and booking_id in active:
            if active[booking_id] != trade:
                raise ValueError(f"trade booking {booking_id} is already active with different amounts")
            return self._positions[key]
        position = apply_trade(self._positions.get(key), trade)
        if active is None:
            active = self._active[key] = {}
            self._accounts.setdefault(key[0], {})[key[1]] = None
        active[booking_id] = trade
        self._positions[key] = position
        self._shift(key, trade.value_date, trade.base_amount)
        return position

    def _remove(self, key: _Key, booking_id: str) -> Position:
        trade = self._active[key].pop(booking_id)
        self._shift(key, trade.value_date, decimal_context().minus(trade.base_amount))
        position = self._positions[key] = apply_trade(self._positions[key], trade, sign=-1)
        return position

    def _shift(self, key: _Key, value_date: date | None, amount: Decimal) -> None:
        dated = self._dated.setdefault(key, {})
        total = decimal_context().add(dated.get(value_date, _ZERO), amount)
        if total:
            dated[value_date] = total
        else:
            dated.pop(value_date, None)

    def position(self, account: str, pair: str) -> Position | None:
        """The position of the account in the pair ("EUR/USD"), None if never traded."""
        return self._positions.get((account, pair))

    def by_value_date(self, account: str, pair: str) -> dict[date | None, Decimal]:
        """Base quantity per value date (None: trades booked without one)."""
        return dict(self._dated.get((account, pair), {}))

    def positions(self, account: str) -> dict[str, Position]:
        """The account's positions by pair symbol."""
        return {pair: self._positions[(account, pair)] for pair in self._accounts.get(account, {})}

    def active_trades(self, account: str, pair: str) -> tuple[TradeAmounts, ...]:
        """The active trades of the account in the pair, in booking order."""
        return tuple(self._active.get((account, pair), {}).values())
