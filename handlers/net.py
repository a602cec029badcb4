"""Net stage: net amount per (counterparty, currency, value date), updated by
every booking (a reversal nets its trade out).  Only the nets are kept in
memory, not the trades behind them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from adapters.db.posttrade import PostTradeWrite
from stp.booking import Booking
from stp.netting import NetChange, NetKey, contributions, exact_context


class NetStage:
    def __init__(self, nets: dict[NetKey, Decimal]) -> None:
        self.nets = nets

    def apply(self, booking: Booking, w: PostTradeWrite, now_us: int) -> list[NetChange]:
        changes: list[NetChange] = []
        for key, delta in contributions(booking).items():
            before = self.nets.get(key, Decimal(0))
            after = exact_context().add(before, delta)
            self.nets[key] = after
            changes.append(NetChange(key=key, before=before, after=after, booking_id=booking.booking_id))
            w.put("nets", key, (key.counterparty, key.currency, key.value_date, str(after), now_us))
        return changes

    def for_date(self, value_date: date) -> dict[NetKey, Decimal]:
        return {k: v for k, v in self.nets.items() if k.value_date == value_date}
