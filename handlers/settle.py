"""Settle stage: settlement instructions per net, their lifecycle and cut-offs.

A net's pending instruction follows it until the cut-off; at the cut-off it
is instructed with the counterparty's SSI (none: an ssi_missing break, it
stays pending); a change after that is an after_cut_off break and an
adjustment instruction.  The desk reports settled/failed through the inbox
(``run_engine.py settlement status ...``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from stp.breaks import Break
from stp.changes import BatchChanges
from stp.inbox import SettlementStatus
from stp.netting import NetChange, NetKey
from stp.reference import ReferenceData
from stp.settlement import Instruction, SettlementBook


class SettleStage:
    def __init__(self, reference: ReferenceData, instructions: list[Instruction]) -> None:
        self.reference = reference
        self.book = SettlementBook(instructions)

    def on_changes(self, changes: list[NetChange], now: datetime, w: BatchChanges) -> list[Break]:
        breaks: list[Break] = []
        for change in changes:
            breaks += self.book.on_net_change(change.key, change.after, now)
            self._write_key(change.key, w)
        return breaks

    def run_cut_offs(self, now: datetime, w: BatchChanges) -> list[Break]:
        instructed, breaks = self.book.run_cut_offs(now, self.reference)
        for key in {i.key for i in instructed} | {_key_of(b) for b in breaks if _key_of(b)}:
            self._write_key(key, w)          # type: ignore[arg-type]  # the if drops _key_of's None
        return breaks

    def apply_status(self, command: SettlementStatus, w: BatchChanges) -> tuple[list[Break], str]:
        key = NetKey(command.counterparty, command.currency, command.value_date)
        breaks = self.book.apply_status(key, command.status,  # type: ignore[arg-type]  # checked there
                                        command.at or datetime.now(UTC), command.reason,
                                        version=command.version)
        self._write_key(key, w)
        return breaks, f"{command.status}: {key}"

    def _write_key(self, key: NetKey, w: BatchChanges) -> None:
        for ins in self.book.history(key):
            w.instructions[ins.instruction_id] = ins


def _key_of(brk: Break) -> NetKey | None:
    k = brk.keys
    if {"counterparty", "currency", "value_date"} <= set(k):
        return NetKey(k["counterparty"], k["currency"], date.fromisoformat(k["value_date"]))
    return None
