"""Net stage: net amount per (counterparty, currency, value date), updated by
every booking (a reversal nets its trade out).  Only the nets are kept in
memory, not the trades behind them.

The nets move booking by booking (``stp.netting.NetBook``); what a batch
writes (one net per key it moved, with its final amount) and hands to
settlement (one change per net: its amount before the batch and after it) is
taken once, at the end of the batch (``end_batch``).
"""

from __future__ import annotations

from stp.changes import BatchChanges
from stp.netting import NetBook, NetChange


class NetStage(NetBook):
    __slots__ = ()

    def end_batch(self, w: BatchChanges, now_us: int) -> list[NetChange]:
        """The batch's net changes (first before -> last after, in the order the
        nets first moved), their final amounts written to ``w``."""
        changes = self.take_changes()
        for change in changes:
            w.nets[change.key] = (change.after, now_us)
        return changes
