"""Net stage: net amount per (counterparty, currency, value date), updated by
every booking (a reversal nets its trade out).  Only the nets are kept in
memory, not the trades behind them.

The nets move booking by booking; what a batch writes (one row per net it
moved, with its final amount) and hands to settlement (one change per net:
its amount before the batch and after it) is taken once, at the end of the
batch (``end_batch``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from stp.booking import Booking
from stp.changes import BatchChanges
from stp.netting import NetChange, NetKey, contributions, exact_context

_ZERO = Decimal(0)


class NetStage:
    def __init__(self, nets: dict[NetKey, Decimal]) -> None:
        self.nets = nets
        # this batch: net key -> [its amount before the batch, the last booking that moved it]
        self._moved: dict[NetKey, list[Any]] = {}

    def apply(self, booking: Booking) -> None:
        nets, moved, add = self.nets, self._moved, exact_context().add
        for key, delta in contributions(booking).items():
            before = nets.get(key, _ZERO)
            nets[key] = add(before, delta)
            seen = moved.get(key)
            if seen is None:
                moved[key] = [before, booking.booking_id]
            else:
                seen[1] = booking.booking_id

    def end_batch(self, w: BatchChanges, now_us: int) -> list[NetChange]:
        """The batch's net changes (first before -> last after, in the order the
        nets first moved), their rows written to ``w``."""
        changes: list[NetChange] = []
        nets = self.nets
        for key, (before, booking_id) in self._moved.items():
            after = nets[key]
            changes.append(NetChange(key, before, after, booking_id))
            w.nets[key] = (after, now_us)
        self._moved = {}
        return changes

    def abort_batch(self) -> None:
        self._moved = {}

    def for_date(self, value_date: date) -> dict[NetKey, Decimal]:
        return {k: v for k, v in self.nets.items() if k.value_date == value_date}
