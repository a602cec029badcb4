"""Margin stage: real-time margin per client account.

A fill updates one account (its position and balance) and the pair's price;
a price updates only the accounts that hold or convert through that pair
(``stp.margin.MarginBook``).  Balance = opening balance + cash movements +
realised P&L, converted to the account currency at the latest rates when the
account is updated.  Threshold crossings (margin call, stop-out, recovered)
are stored as events, logged and published (``<prefix>/margin/<account>/events``);
the current margin per account is stored and published on the retained topic
``<prefix>/margin/<account>``.  The state has hysteresis (the group's
``recovery_band``), so it depends on the account's previous state: a restart
restores the stored one (``restore``).
Exposure-limit breaches are breaks.
"""

from __future__ import annotations

from decimal import Decimal

import structlog

from adapters.db.posttrade import PostTradeWrite, text
from adapters.db.repository import us_to_datetime
from stp.breaks import Break
from stp.events import margin_event, margin_state
from stp.margin import MarginBook, MarginEvent, MarginState, PositionView
from stp.positions import Position
from stp.reference import ReferenceData

log = structlog.get_logger("engine.margin")


class MarginStage:
    def __init__(self, reference: ReferenceData, next_event_id: int, topic_prefix: str = "fxstp") -> None:
        self.prefix = topic_prefix
        self.reference = reference
        self.book = MarginBook.from_reference(reference)
        self.cash: dict[str, dict[str, Decimal]] = {}           # account -> currency -> amount
        self.realised: dict[str, dict[str, Decimal]] = {}       # account -> pair -> realised (quote ccy)
        self.next_event_id = next_event_id
        self._touched: set[str] = set()
        self._pending: list[MarginEvent] = []       # from ``restore``, for the next flush

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
        acc = self.reference.accounts[account]
        balance = acc.opening_balance
        prices = self.book.prices
        for currency, amount in self.cash.get(account, {}).items():
            rate = prices.rate(currency, acc.currency)
            balance += amount * rate if rate is not None else Decimal(0)
        for pair, pnl in self.realised.get(account, {}).items():
            rate = prices.rate(pair[-3:], acc.currency)
            balance += pnl * rate if rate is not None else Decimal(0)
        return self.book.set_balance(account, balance)

    def exposure_breaks(self, account: str | None) -> list[Break]:
        if account is None or not self.known(account):
            return []
        return self.book.check_exposure(account)

    def flush(self, events: list[MarginEvent], w: PostTradeWrite, now_us: int) -> None:
        at = us_to_datetime(now_us)
        for account in self._touched:
            m = self.book.snapshot(account)
            w.put("margin_accounts", account, (account, m.currency, str(m.balance), str(m.unrealised_pnl),
                                               str(m.equity), str(m.used_margin), str(m.free_margin),
                                               text(m.margin_level), m.state, now_us))
            w.publish(margin_state(account, {
                "currency": m.currency, "balance": str(m.balance), "unrealised_pnl": str(m.unrealised_pnl),
                "equity": str(m.equity), "used_margin": str(m.used_margin), "free_margin": str(m.free_margin),
                "margin_level": text(m.margin_level), "state": m.state}, self.prefix, at, now_us), now_us)
        self._touched.clear()
        if self._pending:
            events, self._pending = self._pending + events, []
        for e in events:
            w.put("margin_events", self.next_event_id, (self.next_event_id, e.account, str(e.kind),
                                                        text(e.margin_level), str(e.equity),
                                                        str(e.used_margin), now_us))
            w.publish(margin_event(self.next_event_id, e.account, str(e.kind), {
                "margin_level": text(e.margin_level), "equity": str(e.equity),
                "used_margin": str(e.used_margin), "threshold": str(e.at_threshold)}, self.prefix, at),
                now_us)
            self.next_event_id += 1
            log.warning("margin_event", account=e.account, kind=str(e.kind),
                        margin_level=str(e.margin_level), equity=str(e.equity),
                        used_margin=str(e.used_margin), threshold=str(e.at_threshold))
