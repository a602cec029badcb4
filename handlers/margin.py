"""Margin stage: real-time margin per client account.

A fill updates one account (its position and balance) and the pair's price;
a price updates only the accounts that hold or convert through that pair
(``stp.margin.MarginBook``).  Balance = opening balance + cash movements +
realised P&L, each in its currency, converted to the account currency at the
latest rates (the book revalues it when one of them moves).  Threshold
crossings (margin call, stop-out, recovered) are stored as events, logged
and published (``<prefix>/margin/<account>/events``); the current margin per
account is stored and published on the retained topic
``<prefix>/margin/<account>``.  The state has hysteresis (the group's
``recovery_band``), so it depends on the account's previous state: a restart
restores the stored one (``restore``).
Exposure-limit breaches are breaks, and so is an account that holds cash,
realised P&L or a position in a currency with no rate to its own
(``margin_unpriced``): its margin is then "unpriced" (no level, no margin
call decided) until a rate arrives, never valued as if that amount were zero.
"""

from __future__ import annotations

from decimal import Decimal

import structlog

from stp.breaks import Break
from stp.changes import BatchChanges
from stp.events import margin_event, margin_state
from stp.margin import MarginBook, MarginEvent, MarginState, PositionView, unpriced_break
from stp.positions import Position
from stp.reference import ReferenceData
from stp.timestamps import us_to_datetime

log = structlog.get_logger("engine.margin")


class MarginStage:
    def __init__(self, reference: ReferenceData, next_event_id: int, topic_prefix: str = "fxstp",
                 quiet: frozenset[str] = frozenset()) -> None:
        self.prefix = topic_prefix
        # accounts whose threshold crossings are no margin events (the house
        # accounts: the broker's own book); their state is still computed,
        # stored and published
        self.quiet = quiet
        self.reference = reference
        self.book = MarginBook.from_reference(reference)
        self.cash: dict[str, dict[str, Decimal]] = {}           # account -> currency -> amount
        self.realised: dict[str, dict[str, Decimal]] = {}       # account -> pair -> realised (quote ccy)
        self.next_event_id = next_event_id
        self._touched: set[str] = set()
        self._pending: list[MarginEvent] = []       # from ``restore``, for the next flush
        # per account, the currencies it holds without a rate to its own
        # (``margin_unpriced`` breaks are raised as one is added)
        self._unpriced: dict[str, tuple[str, ...]] = {}
        # the unpriced breaks of currencies that have a rate again, to resolve
        self._priced_again: list[Break] = []

    def restore(self, states: dict[str, MarginState]) -> list[MarginEvent]:
        """The states stored at the last commit (``margin_accounts.state``),
        once positions, cash and prices are loaded.  Crossings from them
        (only if the figures or the reference data changed in between) are
        stored and published with the next commit."""
        events = self.book.restore_states(states)
        self._pending += events
        self._touched.update(e.account for e in events)
        return events

    def known(self, account: str | None) -> bool:
        return account is not None and account in self.reference.accounts

    def on_prices(self, prices: dict[str, Decimal]) -> list[MarginEvent]:
        """A batch's latest prices: every account holding one of the pairs is
        revalued once."""
        events = self.book.on_prices(prices)
        for symbol in prices:
            self._touched.update(self.book.accounts_depending_on(symbol))
        return events

    def on_position(self, position: Position) -> list[MarginEvent]:
        return self.on_positions([position])

    def on_positions(self, positions: list[Position]) -> list[MarginEvent]:
        """Positions changed (the last state of each in a batch); balances are
        refreshed once per account."""
        events: list[MarginEvent] = []
        accounts: set[str] = set()
        for position in positions:
            if not self.known(position.account):
                continue
            account = position.account
            self.realised.setdefault(account, {})[position.pair] = position.realised_pnl
            events += self.book.on_position(PositionView(account, position.pair, position.quantity,
                                                         position.average_price or Decimal(0),
                                                         position.quote_flow))
            accounts.add(account)
        for account in accounts:
            events += self._refresh_balance(account)
        self._touched.update(accounts)
        return events

    def on_cash(self, account: str, currency: str, amount: Decimal) -> list[MarginEvent]:
        acc_cash = self.cash.setdefault(account, {})
        acc_cash[currency] = acc_cash.get(currency, Decimal(0)) + amount
        self._touched.add(account)
        return self._refresh_balance(account)

    def _refresh_balance(self, account: str) -> list[MarginEvent]:
        """The balance per currency (opening in the account currency, cash,
        realised P&L in each pair's quote currency); the book converts it at
        the latest rates, and an amount without a rate makes the account
        unpriced rather than counting as zero."""
        acc = self.reference.accounts[account]
        amounts: dict[str, Decimal] = {acc.currency: acc.opening_balance}
        for currency, amount in self.cash.get(account, {}).items():
            amounts[currency] = amounts.get(currency, Decimal(0)) + amount
        for pair, pnl in self.realised.get(account, {}).items():
            quote = pair[-3:]
            amounts[quote] = amounts.get(quote, Decimal(0)) + pnl
        return self.book.set_balance_amounts(account, amounts)

    def take_breaks(self) -> list[Break]:
        """A ``margin_unpriced`` break per account and currency that has
        become unpriced since the last call (accounts updated since)."""
        breaks: list[Break] = []
        for account in sorted(self._touched):
            m = self.book.snapshot(account)
            now = m.unpriced_currencies
            before = self._unpriced.get(account, ())
            if now == before:
                continue
            if now:
                self._unpriced[account] = now
            else:
                self._unpriced.pop(account, None)
            breaks += [unpriced_break(account, m.currency, ccy, m) for ccy in now if ccy not in before]
            self._priced_again += [unpriced_break(account, m.currency, ccy, m) for ccy in before
                                   if ccy not in now]
        return breaks

    def take_priced_again(self) -> list[Break]:
        """The ``margin_unpriced`` breaks whose currency has a rate again
        (the engine resolves them), since the last call."""
        out, self._priced_again = self._priced_again, []
        return out

    def resolve_if_priced(self, account: str, currency: str) -> None:
        """A stored ``margin_unpriced`` break still open: resolve it (next
        ``take_priced_again``) if the account is priced in ``currency`` now
        (a rate came while the engine was down)."""
        if not self.known(account):
            return
        m = self.book.snapshot(account)
        if currency not in m.unpriced_currencies:
            self._priced_again.append(unpriced_break(account, m.currency, currency, m))

    def negative_balance_adjustment(self, account: str) -> Decimal | None:
        return self.book.negative_balance_adjustment(account) if self.known(account) else None

    def exposure_breaks(self, account: str | None) -> list[Break]:
        if account is None or not self.known(account):
            return []
        return self.book.check_exposure(account)

    def flush(self, events: list[MarginEvent], w: BatchChanges, now_us: int) -> None:
        at = us_to_datetime(now_us)
        for account in self._touched:
            m = self.book.snapshot(account)
            w.margins[account] = (m, now_us)
            data: dict[str, object] = {
                "currency": m.currency, "balance": str(m.balance), "unrealised_pnl": str(m.unrealised_pnl),
                "equity": str(m.equity), "used_margin": str(m.used_margin), "free_margin": str(m.free_margin),
                "margin_level": text(m.margin_level), "state": m.state}
            if m.state == "unpriced":
                data["unpriced"] = list(m.unpriced_currencies)   # the figures leave these out
            w.publish(margin_state(account, data, self.prefix, at, now_us), now_us)
        self._touched.clear()
        if self._pending:
            events, self._pending = self._pending + events, []
        quiet = self.quiet
        for e in events:
            if e.account in quiet:
                continue
            w.margin_events[self.next_event_id] = (e, now_us)
            w.publish(margin_event(self.next_event_id, e.account, str(e.kind), {
                "margin_level": text(e.margin_level), "equity": str(e.equity),
                "used_margin": str(e.used_margin), "threshold": str(e.at_threshold)}, self.prefix, at),
                now_us)
            self.next_event_id += 1
            log.warning("margin_event", account=e.account, kind=str(e.kind),
                        margin_level=str(e.margin_level), equity=str(e.equity),
                        used_margin=str(e.used_margin), threshold=str(e.at_threshold))


def text(d: Decimal | None) -> str | None:
    """An amount in a bus payload: its exact text."""
    return None if d is None else str(d)
