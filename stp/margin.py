"""Real-time retail FX margin: equity, used and free margin, margin level,
margin-call / stop-out events and net exposure per currency.

Definitions (reference section 6), per open position of an account:

* mark: the latest price of the position's pair (the position's average price
  until the pair has been priced);
* unrealised P&L = (mark - average price) x quantity, in the quote currency;
* used margin = |quantity| x mark (the notional in the quote currency) /
  leverage(pair), leverage from the account's group (ESMA 30:1 majors, 20:1
  others);
* both converted from the quote currency to the account currency at the
  latest rate (``PriceBook.rate``).

Per account: equity = balance + unrealised, free = equity - used, margin level
= equity / used x 100 (None without used margin).  Every reported amount is
rounded half-even to the account currency's minor units, the margin level to
0.01 percent; equity and free margin are computed from the rounded figures, so
a statement adds up.

Margin state, with hysteresis (``margin_state_after``).  The state compares
the *reported* margin level with the group thresholds and the account's state
before: the level at or below stop_out_level is ``stop_out``, at or below
margin_call_level ``margin_call``, at once (a fall is never delayed); a
rise leaves a state only once it is above the threshold plus the group's
``recovery_band`` (5 percentage points by default): out of stop-out above
stop_out_level + band, out of margin call (``recovered``) above
margin_call_level + band.  No used margin (no level) is ``ok``.  A level
that hovers around 100% therefore makes one margin call, and one recovery
once it has really recovered, instead of an event per revaluation.  The state
is the one piece of history the book keeps per account; an auditor checks a
snapshot from its level and the account's previous state, and a restart
restores the persisted state (``restore_states``).

Incremental recomputation.  ``MarginBook`` keeps each position's contribution
(unrealised and used margin, full precision, account currency) and an index
``symbol -> accounts`` of every price a contribution depends on:

* the position's own pair (its mark);
* when the account currency is neither the base nor the quote currency, every
  symbol ``PriceBook.rate(quote, account currency)`` may consult, whether it is
  priced yet or not: quote/ccy, ccy/quote and, through USD, quote/USD,
  USD/quote, USD/ccy, ccy/USD.  A EUR account holding USD/JPY therefore
  depends on USD/JPY, JPY/EUR, EUR/JPY, JPY/USD, EUR/USD and USD/EUR.  Indexing
  the candidates that are not priced yet matters: the first EUR/JPY tick
  changes the conversion path from "through USD" to "inverse EUR/JPY".
* When the account currency is the quote currency the rate is 1; when it is
  the base currency the rate is 1 / mark (the pair's own price).

A position update revalues that one position; a price tick revalues, in the
accounts indexed under its symbol, the positions that depend on it.  The
account totals are then re-summed from the stored contributions (a handful
per account) in a fixed order, with the same arithmetic ``recompute`` uses:
incremental snapshots equal a recompute from scratch exactly, and no running
sum drifts.

A position whose conversion rate is unknown (no path through the price book)
cannot be valued: it is left out of the totals and its symbol listed in
``AccountMargin.unpriced``.  The balance is kept per currency (opening, cash,
realised P&L: ``set_balance_amounts``) and converted at the latest rates, its
rates indexed like a position's; an amount with no rate is listed in
``AccountMargin.unpriced_balance``.  Either makes the account ``unpriced``:
no margin level and no threshold decided on a partial figure (never an
amount counted as zero); the state decided before (``priced_state``) is what
the hysteresis continues from once the rate arrives.

Money rules: ``withdrawal_refusal`` (a withdrawal may not exceed the free
margin, for an account without positions its balance) and
``negative_balance_adjustment`` (the group's negative balance protection: a
flat account's negative balance is credited back to zero).

Pure: no I/O, no clock, explicit decimal contexts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from functools import cache
from typing import Final, Literal

from stp.breaks import Break, BreakType
from stp.currency import decimal_context, minor_units, quantize
from stp.frozen import fast_init
from stp.reference import Account, LeverageGroup, ReferenceData
from stp.valuedates import CurrencyPair

__all__ = [
    "AccountMargin",
    "MarginBook",
    "MarginEvent",
    "MarginEventKind",
    "MarginState",
    "PositionView",
    "PriceBook",
    "margin_state_after",
    "rate_dependencies",
    "unpriced_break",
]

# "unpriced": something the account holds (cash, realised P&L or a position)
# cannot be converted to the account currency, so no level is reported and
# no threshold is decided until a rate arrives
MarginState = Literal["ok", "margin_call", "stop_out", "unpriced"]
MarginEventKind = Literal["margin_call", "stop_out", "recovered", "balance_reset"]

_USD: Final = "USD"
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_HUNDRED: Final = Decimal(100)
_LEVEL_EXPONENT: Final = Decimal("0.01")
_RANK: Final[dict[MarginState, int]] = {"ok": 0, "margin_call": 1, "stop_out": 2}

# Divisions (rates, notional / leverage, margin level): 28 significant digits.
_RATE_CONTEXT: Final = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def _rate_context() -> Context:
    return _RATE_CONTEXT.copy()


@cache
def _pair(symbol: str) -> CurrencyPair:
    return CurrencyPair.parse(symbol)


def _symbol(symbol: str) -> str:
    return _pair(symbol).symbol


def margin_state_after(previous: MarginState, level: Decimal | None, group: LeverageGroup) -> MarginState:
    """The state of an account whose reported margin level is now ``level``
    and whose state was ``previous``: thresholds crossed downwards at once,
    left upwards only above threshold + ``group.recovery_band``."""
    if level is None:
        return "ok"                   # no used margin: nothing at risk
    if level <= group.stop_out_level:
        return "stop_out"
    band = group.recovery_band
    if previous == "stop_out" and level <= group.stop_out_level + band:
        return "stop_out"
    if level <= group.margin_call_level:
        return "margin_call"
    if previous != "ok" and level <= group.margin_call_level + band:
        return "margin_call"
    return "ok"


def rate_dependencies(from_ccy: str, to_ccy: str) -> frozenset[str]:
    """Every symbol ``PriceBook.rate(from_ccy, to_ccy)`` may consult."""
    if from_ccy == to_ccy:
        return frozenset()
    symbols = {f"{from_ccy}/{to_ccy}", f"{to_ccy}/{from_ccy}"}
    if _USD not in (from_ccy, to_ccy):
        symbols |= {
            f"{from_ccy}/{_USD}",
            f"{_USD}/{from_ccy}",
            f"{_USD}/{to_ccy}",
            f"{to_ccy}/{_USD}",
        }
    return frozenset(symbols)


class PriceBook:
    """The latest price per pair symbol ("EUR/USD"), and conversion rates."""

    __slots__ = ("_context", "_prices")

    def __init__(self) -> None:
        self._prices: dict[str, Decimal] = {}
        self._context = _rate_context()

    def update(self, symbol: str, price: Decimal) -> str:
        """Store the latest price; return the normalised symbol.

        Raises ValueError for a bad symbol or a price that is not a finite
        Decimal > 0.
        """
        if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
            raise ValueError(f"price must be a finite Decimal > 0, not {price!r}")
        normalised = _symbol(symbol)
        self._prices[normalised] = price
        return normalised

    def price(self, symbol: str) -> Decimal | None:
        """The latest price of ``symbol`` (normalised spelling), or None."""
        return self._prices.get(symbol)

    def __len__(self) -> int:
        return len(self._prices)

    def _direct(self, from_ccy: str, to_ccy: str) -> Decimal | None:
        price = self._prices.get(f"{from_ccy}/{to_ccy}")
        if price is not None:
            return price
        inverse = self._prices.get(f"{to_ccy}/{from_ccy}")
        if inverse is not None:
            return self._context.divide(_ONE, inverse)
        return None

    def rate(self, from_ccy: str, to_ccy: str) -> Decimal | None:
        """How many ``to_ccy`` one ``from_ccy`` buys at the latest prices.

        1 for the same currency; the direct pair's price; 1 / the inverse
        pair's price; else through USD (from/USD or USD/from, then USD/to or
        to/USD); None when no path is priced.
        """
        if from_ccy == to_ccy:
            return _ONE
        direct = self._direct(from_ccy, to_ccy)
        if direct is not None or _USD in (from_ccy, to_ccy):
            return direct
        to_usd = self._direct(from_ccy, _USD)
        if to_usd is None:
            return None
        from_usd = self._direct(_USD, to_ccy)
        if from_usd is None:
            return None
        return self._context.multiply(to_usd, from_usd)


@fast_init
@dataclass(frozen=True, slots=True)
class PositionView:
    """What the margin needs of a position: signed base quantity (long > 0)
    and average price; quantity 0 means flat; ``quote_flow``, the net of the
    active trades' quote amounts (``Position.quote_flow``)."""

    account: str
    pair: str
    quantity: Decimal
    average_price: Decimal
    quote_flow: Decimal


@fast_init
@dataclass(frozen=True, slots=True)
class AccountMargin:
    """An account's margin figures, in the account currency."""

    account: str
    currency: str
    balance: Decimal
    unrealised_pnl: Decimal
    equity: Decimal
    used_margin: Decimal
    free_margin: Decimal
    margin_level: Decimal | None  # percent, None without used margin or when unpriced
    state: MarginState
    unpriced: tuple[str, ...] = ()  # positions left out: no conversion rate
    unpriced_balance: tuple[str, ...] = ()  # currencies of cash / realised P&L left out: no rate
    priced_state: MarginState = "ok"  # the state of the last full valuation (hysteresis)

    @property
    def unpriced_currencies(self) -> tuple[str, ...]:
        """Every currency the account holds that cannot be converted to its
        own: the balance's, and the quote currency of each unpriced position."""
        return tuple(sorted(set(self.unpriced_balance) | {_pair(s).quote for s in self.unpriced}))


@dataclass(frozen=True, slots=True)
class MarginEvent:
    """The margin level crossed a group threshold (``at_threshold``): the
    margin call or stop-out level on the way down, the margin call level +
    recovery band for ``recovered``.  ``balance_reset``: negative balance
    protection brought the balance back to zero (``at_threshold`` 0)."""

    account: str
    kind: MarginEventKind
    margin_level: Decimal | None
    equity: Decimal
    used_margin: Decimal
    at_threshold: Decimal


@dataclass(slots=True)
class _Held:
    """A position and its current contribution (full precision, account ccy)."""

    view: PositionView
    pair: CurrencyPair
    depends_on: frozenset[str]
    unrealised: Decimal = _ZERO
    used: Decimal = _ZERO
    priced: bool = True


class MarginBook:
    """Incremental margin over all accounts of the reference data.

    Every account starts flat with its opening balance.  ``on_position``,
    ``on_price`` and ``set_balance`` return the threshold crossings they
    caused.  ``recomputed_accounts`` counts account refreshes (a test and
    monitoring aid).
    """

    def __init__(
        self,
        accounts: Mapping[str, Account],
        leverage_groups: Mapping[str, LeverageGroup],
    ) -> None:
        self._accounts: dict[str, Account] = {}
        self._groups: dict[str, LeverageGroup] = {}
        for account_id, account in accounts.items():
            if account_id != account.account_id:
                raise ValueError(f"account keyed {account_id!r} is {account.account_id!r}")
            group = leverage_groups.get(account.leverage_group)
            if group is None:
                raise ValueError(f"account {account_id}: unknown leverage group {account.leverage_group!r}")
            minor_units(account.currency)  # raises for a currency without minor units
            self._accounts[account_id] = account
            self._groups[account_id] = group
        self._prices = PriceBook()
        self._amount = decimal_context()
        self._rate = _rate_context()
        self._balances: dict[str, Decimal] = {
            a: quantize(acc.opening_balance, acc.currency) for a, acc in self._accounts.items()
        }
        # the balance per currency (opening, cash, realised P&L), converted at the latest rates
        self._amounts: dict[str, dict[str, Decimal]] = {
            a: {acc.currency: acc.opening_balance} for a, acc in self._accounts.items()
        }
        self._balance_deps: dict[str, frozenset[str]] = {a: frozenset() for a in self._accounts}
        self._unpriced_balance: dict[str, tuple[str, ...]] = {a: () for a in self._accounts}
        self._positions: dict[str, dict[str, _Held]] = {a: {} for a in self._accounts}
        # symbol -> account -> positions (and balance) depending
        self._index: dict[str, dict[str, int]] = {}
        # the state decided at the last full valuation: an unpriced account keeps it
        self._decided: dict[str, MarginState] = {a: "ok" for a in self._accounts}
        self._snapshots: dict[str, AccountMargin] = {a: self.recompute(a, "ok") for a in self._accounts}
        self.recomputed_accounts = 0

    @classmethod
    def from_reference(cls, reference: ReferenceData) -> MarginBook:
        return cls(reference.accounts, reference.leverage_groups)

    # -- queries -------------------------------------------------------------

    @property
    def prices(self) -> PriceBook:
        """The book's prices (read them; update through ``on_price``)."""
        return self._prices

    def snapshot(self, account: str) -> AccountMargin:
        return self._snapshots[account]

    def positions(self, account: str) -> tuple[PositionView, ...]:
        return tuple(h.view for h in self._positions[account].values())

    def accounts_depending_on(self, symbol: str) -> frozenset[str]:
        return frozenset(self._index.get(_symbol(symbol), ()))

    def recompute(self, account: str, previous: MarginState | None = None) -> AccountMargin:
        """The account's figures from scratch: positions, balance and prices;
        the state from that level and ``previous`` (default: the account's
        current state, the one piece of history the state depends on).

        Changes nothing (no event, no counter): for tests and audits.
        """
        acc = self._accounts[account]
        values = [(s, *self._value(acc, h.pair, h.view)) for s, h in self._positions[account].items()]
        return self._build(acc, values, self._decided[account] if previous is None else previous)

    # -- updates -------------------------------------------------------------

    def restore_states(self, states: Mapping[str, MarginState]) -> list[MarginEvent]:
        """After a restart: the states the accounts were in when last stored.

        Call once the positions, balances and prices are loaded.  Each listed
        account's state becomes ``margin_state_after(stored state, level)``:
        the stored one whenever the level is what it was then (an account in
        margin call at 102% stays in margin call).  Returns the crossings from
        the stored states (none unless the figures or the reference data
        changed while the engine was down).  Unknown accounts are ignored.
        """
        events: list[MarginEvent] = []
        for account, state in states.items():
            if account not in self._accounts:
                continue
            if state == "unpriced":
                state = "ok"          # stored before a full valuation: nothing decided yet
            if state not in _RANK:
                raise ValueError(f"account {account}: unknown margin state {state!r}")
            events.extend(self._refresh(account, state))
        return events

    def set_balance(self, account: str, balance: Decimal) -> list[MarginEvent]:
        """Set the balance (opening + cash + realised P&L, account currency)."""
        return self.set_balance_amounts(account, {self._accounts[account].currency: balance})

    def set_balance_amounts(self, account: str, amounts: Mapping[str, Decimal]) -> list[MarginEvent]:
        """Set the balance as amounts per currency (opening balance, cash,
        realised P&L), converted to the account currency at the latest rates
        and again whenever one of those rates moves.  An amount in a currency
        with no rate is not counted as zero: the account is ``unpriced`` (no
        level, no threshold decided) until a rate arrives."""
        acc = self._accounts[account]
        kept = {ccy: amount for ccy, amount in amounts.items() if not amount.is_zero()}
        deps: set[str] = set()
        for ccy in kept:
            if ccy != acc.currency:
                deps |= rate_dependencies(ccy, acc.currency)
        self._unindex(account, self._balance_deps[account])
        self._balance_deps[account] = frozenset(deps)
        self._index_deps(account, deps)
        self._amounts[account] = kept
        self._convert_balance(account)
        return self._refresh(account)

    def _convert_balance(self, account: str) -> None:
        acc = self._accounts[account]
        a = self._amount
        total = _ZERO
        unpriced: list[str] = []
        for ccy, amount in self._amounts[account].items():
            rate = self._prices.rate(ccy, acc.currency)
            if rate is None:
                unpriced.append(ccy)
            else:
                total = a.add(total, a.multiply(amount, rate))
        self._balances[account] = quantize(total, acc.currency)
        self._unpriced_balance[account] = tuple(sorted(unpriced))

    def withdrawal_refusal(self, account: str, currency: str, amount: Decimal) -> str | None:
        """Why a withdrawal of ``amount`` (> 0) ``currency`` is refused, or
        None: it may not exceed the free margin (for an account without
        positions that is its balance), valued at the latest rate; an account
        that is unpriced, or a currency with no rate, cannot be checked and is
        refused."""
        acc = self._accounts[account]
        snap = self._snapshots[account]
        missing = snap.unpriced_currencies
        if missing:
            return (f"account {account} is unpriced (no rate for {', '.join(missing)} to {acc.currency}): "
                    "its free margin is not known")
        rate = self._prices.rate(currency, acc.currency)
        if rate is None:
            return f"no {currency}/{acc.currency} rate to value a withdrawal in {currency}"
        value = self._amount.multiply(amount, rate)
        shown = f"{amount} {currency}" + ("" if currency == acc.currency
                                          else f" ({quantize(value, acc.currency)} {acc.currency})")
        if self._positions[account]:
            if value > snap.free_margin:
                return (f"withdrawal of {shown} exceeds the free margin of account {account} "
                        f"({snap.free_margin} {acc.currency})")
        elif value > snap.balance:
            return (f"withdrawal of {shown} exceeds the balance of account {account} "
                    f"({snap.balance} {acc.currency})")
        return None

    def negative_balance_adjustment(self, account: str) -> Decimal | None:
        """What negative balance protection credits the account (account
        currency, > 0), or None: only for a group with
        ``negative_balance_protection``, an account without open positions
        (the stop-out closed them) and fully priced, whose balance is below
        zero; the credit brings it back to zero."""
        if not self._groups[account].negative_balance_protection:
            return None
        snap = self._snapshots[account]
        if self._positions[account] or snap.unpriced_currencies or snap.balance >= 0:
            return None
        return -snap.balance

    def on_position(self, view: PositionView) -> list[MarginEvent]:
        """Replace one position of one account (quantity 0 closes it)."""
        acc = self._accounts.get(view.account)
        if acc is None:
            raise KeyError(f"unknown account {view.account!r}")
        pair = _pair(view.pair)
        symbol = pair.symbol
        held = self._positions[view.account]
        old = held.pop(symbol, None)
        if old is not None:
            self._unindex(view.account, old.depends_on)
        if not view.quantity.is_zero():
            if not view.average_price.is_finite() or view.average_price <= 0:
                raise ValueError(f"average price must be finite and > 0, not {view.average_price}")
            deps = {symbol}
            if acc.currency not in pair.currencies:
                deps |= rate_dependencies(pair.quote, acc.currency)
            new = _Held(view, pair, frozenset(deps))
            new.unrealised, new.used, new.priced = self._value(acc, pair, view)
            held[symbol] = new
            self._index_deps(view.account, new.depends_on)
        return self._refresh(view.account)

    def on_price(self, symbol: str, price: Decimal) -> list[MarginEvent]:
        """Store the latest price; revalue only the dependent positions."""
        return self.on_prices({symbol: price})

    def on_prices(self, prices: Mapping[str, Decimal]) -> list[MarginEvent]:
        """Several latest prices at once (a batch's last price per pair): each
        dependent position is revalued once and each account refreshed once,
        with all the prices applied (not once per pair)."""
        touched: dict[str, set[str]] = {}
        for symbol, price in prices.items():
            normalised = self._prices.update(symbol, price)
            for account in self._index.get(normalised, ()):
                touched.setdefault(account, set()).add(normalised)
        events: list[MarginEvent] = []
        for account, symbols in touched.items():
            acc = self._accounts[account]
            if not self._balance_deps[account].isdisjoint(symbols):
                self._convert_balance(account)
            for h in self._positions[account].values():
                if not h.depends_on.isdisjoint(symbols):
                    h.unrealised, h.used, h.priced = self._value(acc, h.pair, h.view)
            events.extend(self._refresh(account))
        return events

    # -- exposure ------------------------------------------------------------

    def exposures(self, account: str) -> dict[str, Decimal]:
        """Net open position per currency: what the account's active trades
        net to in each currency (the base amounts in the base currency, the
        quote amounts, realised P&L included, in the quote currency), summed
        over its positions; exact (booked amounts), zeros left out.  A cancel
        or correction takes its trade's amounts out exactly, so the figure is
        the same as if the cancelled trade had never been booked."""
        a = self._amount
        totals: dict[str, Decimal] = {}
        for h in self._positions[account].values():
            q = h.view.quantity
            base, quote = h.pair.base, h.pair.quote
            totals[base] = a.add(totals.get(base, _ZERO), q)
            totals[quote] = a.add(totals.get(quote, _ZERO), h.view.quote_flow)
        return {ccy: amount for ccy, amount in totals.items() if not amount.is_zero()}

    def check_exposure(self, account: str) -> list[Break]:
        """An EXPOSURE_LIMIT break per currency whose |net exposure| exceeds
        the account's limit (currencies without a limit are not checked)."""
        limits = self._accounts[account].exposure_limits
        breaks: list[Break] = []
        for ccy, exposure in self.exposures(account).items():
            limit = limits.get(ccy)
            if limit is None or abs(exposure) <= limit:
                continue
            breaks.append(
                Break(
                    type=BreakType.EXPOSURE_LIMIT,
                    keys={"account": account, "currency": ccy},
                    summary=f"account {account}: net {ccy} exposure {exposure} exceeds limit {limit}",
                    ours={"exposure": exposure},
                    theirs={"limit": limit},
                )
            )
        return breaks

    # -- internals -----------------------------------------------------------

    def _index_deps(self, account: str, symbols: Iterable[str]) -> None:
        for s in symbols:
            counts = self._index.setdefault(s, {})
            counts[account] = counts.get(account, 0) + 1

    def _unindex(self, account: str, symbols: Iterable[str]) -> None:
        for s in symbols:
            counts = self._index[s]
            if counts[account] == 1:
                del counts[account]
                if not counts:
                    del self._index[s]
            else:
                counts[account] -= 1

    def _value(self, acc: Account, pair: CurrencyPair, view: PositionView) -> tuple[Decimal, Decimal, bool]:
        """(unrealised, used margin, priced) of one position, account currency."""
        mark = self._prices.price(pair.symbol)
        if mark is None:
            mark = view.average_price
        if acc.currency == pair.quote:
            rate: Decimal | None = _ONE
        elif acc.currency == pair.base:
            rate = self._rate.divide(_ONE, mark)
        else:
            rate = self._prices.rate(pair.quote, acc.currency)
        if rate is None:
            return _ZERO, _ZERO, False
        a = self._amount
        q = view.quantity
        pnl_quote = a.multiply(a.subtract(mark, view.average_price), q)
        notional = a.multiply(abs(q), mark)
        used_quote = self._rate.divide(notional, self._groups[acc.account_id].leverage(pair))
        return a.multiply(pnl_quote, rate), a.multiply(used_quote, rate), True

    def _build(self, acc: Account, values: Iterable[tuple[str, Decimal, Decimal, bool]],
               previous: MarginState) -> AccountMargin:
        a = self._amount
        ccy = acc.currency
        unrealised = used = _ZERO
        unpriced: list[str] = []
        for symbol, pnl, margin, priced in values:
            if not priced:
                unpriced.append(symbol)
            unrealised = a.add(unrealised, pnl)
            used = a.add(used, margin)
        balance = self._balances[acc.account_id]
        unrealised = quantize(unrealised, ccy)
        used = quantize(used, ccy)
        equity = a.add(balance, unrealised)
        free = a.subtract(equity, used)
        level: Decimal | None = None
        if not used.is_zero():
            ratio = self._rate.divide(a.multiply(equity, _HUNDRED), used)
            level = ratio.quantize(_LEVEL_EXPONENT, rounding=ROUND_HALF_EVEN, context=a)
            if level.is_zero() and level.is_signed():
                level = level.copy_abs()
        state = margin_state_after(previous, level, self._groups[acc.account_id])
        priced_state = state
        unpriced_balance = self._unpriced_balance[acc.account_id]
        if unpriced or unpriced_balance:
            level = None              # a level of what could be valued would be a wrong number
            state, priced_state = "unpriced", previous
        return AccountMargin(
            account=acc.account_id,
            currency=ccy,
            balance=balance,
            unrealised_pnl=unrealised,
            equity=equity,
            used_margin=used,
            free_margin=free,
            margin_level=level,
            state=state,
            unpriced=tuple(sorted(unpriced)),
            unpriced_balance=unpriced_balance,
            priced_state=priced_state,
        )

    def _refresh(self, account: str, previous: MarginState | None = None) -> list[MarginEvent]:
        acc = self._accounts[account]
        values = [(s, h.unrealised, h.used, h.priced) for s, h in self._positions[account].items()]
        before = self._decided[account] if previous is None else previous
        new = self._build(acc, values, before)
        self._snapshots[account] = new
        self.recomputed_accounts += 1
        if new.state == "unpriced":
            self._decided[account] = before
            return []                 # nothing is decided on a partial valuation
        self._decided[account] = new.state
        return self._crossings(self._groups[account], before, new)

    @staticmethod
    def _crossings(group: LeverageGroup, before: MarginState, now: AccountMargin) -> list[MarginEvent]:
        was, is_ = _RANK[before], _RANK[now.state]
        crossed: list[tuple[MarginEventKind, Decimal]] = []
        if was < 1 <= is_:
            crossed.append(("margin_call", group.margin_call_level))
        if was < 2 <= is_:
            crossed.append(("stop_out", group.stop_out_level))
        if is_ == 0 < was:
            crossed.append(("recovered", group.margin_call_level + group.recovery_band))
        return [
            MarginEvent(now.account, kind, now.margin_level, now.equity, now.used_margin, threshold)
            for kind, threshold in crossed
        ]


def unpriced_break(account: str, account_currency: str, currency: str, margin: AccountMargin) -> Break:
    """MARGIN_UNPRICED: ``account`` holds an amount in ``currency`` that no
    price converts to ``account_currency``; its margin is unpriced."""
    return Break(
        type=BreakType.MARGIN_UNPRICED,
        keys={"account": account, "currency": currency},
        summary=(f"account {account}: no {currency}/{account_currency} rate; its margin is unpriced "
                 "(no level, no margin call decided) until one arrives"),
        ours={"currency": currency, "account_currency": account_currency,
              "unpriced_positions": list(margin.unpriced), "unpriced_balance": list(margin.unpriced_balance)},
        theirs={},
    )
