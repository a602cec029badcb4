"""Settle stage: settlement instructions per net, their lifecycle and cut-offs.

A net's pending instruction follows it until the cut-off; at the cut-off it
is instructed with the counterparty's SSI (none: an ssi_missing break, it
stays pending); a change after that is an after_cut_off break and an
adjustment instruction.  The desk reports settled/failed through the inbox
(``run_engine.py settlement status ...``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from adapters.db.posttrade import PostTradeStore, PostTradeWrite, to_json
from adapters.db.repository import datetime_to_us, us_to_datetime
from stp.breaks import Break
from stp.netting import NetChange, NetKey
from stp.reference import ReferenceData, Ssi
from stp.settlement import Instruction, InstructionState, SettlementBook


def _us(dt: datetime | None) -> int | None:
    return None if dt is None else datetime_to_us(dt)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else us_to_datetime(us)


class SettleStage:
    def __init__(self, reference: ReferenceData, instructions: list[Instruction]) -> None:
        self.reference = reference
        self.book = SettlementBook(instructions)

    def on_changes(self, changes: list[NetChange], now: datetime, w: PostTradeWrite) -> list[Break]:
        breaks: list[Break] = []
        for change in changes:
            breaks += self.book.on_net_change(change.key, change.after, now)
            self._write_key(change.key, w)
        return breaks

    def run_cut_offs(self, now: datetime, w: PostTradeWrite) -> list[Break]:
        instructed, breaks = self.book.run_cut_offs(now, self.reference)
        for key in {i.key for i in instructed} | {_key_of(b) for b in breaks if _key_of(b)}:
            self._write_key(key, w)          # type: ignore[arg-type]  # the if drops _key_of's None
        return breaks

    def apply_status(self, payload: dict[str, Any], w: PostTradeWrite) -> tuple[list[Break], str]:
        key = NetKey(payload["counterparty"], payload["currency"], date.fromisoformat(payload["value_date"]))
        at = datetime.fromisoformat(payload["at"]) if payload.get("at") else datetime.now(UTC)
        breaks = self.book.apply_status(key, payload["status"], at, payload.get("reason"),
                                        version=payload.get("version"))
        self._write_key(key, w)
        return breaks, f"{payload['status']}: {key}"

    def _write_key(self, key: NetKey, w: PostTradeWrite) -> None:
        for ins in self.book.history(key):
            w.put("instructions", ins.instruction_id, instruction_row(ins))


def _key_of(brk: Break) -> NetKey | None:
    k = brk.keys
    if {"counterparty", "currency", "value_date"} <= set(k):
        return NetKey(k["counterparty"], k["currency"], date.fromisoformat(k["value_date"]))
    return None


def instruction_row(ins: Instruction) -> tuple[Any, ...]:
    ssi = None if ins.ssi is None else to_json({"bank_bic": ins.ssi.bank_bic, "account": ins.ssi.account,
                                                "version": ins.ssi.version})
    updated = ins.updated_at or ins.instructed_at or datetime.now(UTC)
    return (ins.instruction_id, ins.key.counterparty, ins.key.currency, ins.key.value_date, ins.version,
            ins.adjustment, str(ins.amount), ins.state.value, ssi, _us(ins.instructed_at),
            _us(ins.settled_at or ins.failed_at), ins.failure_reason, _us(updated))


async def load_instructions(store: PostTradeStore, since: date) -> list[Instruction]:
    rows = await store.fetch(
        "SELECT counterparty, currency, value_date, version, adjustment, amount, state, ssi, "
        "instructed_us, settled_us, failure_reason, updated_us FROM instructions WHERE value_date >= ? "
        "ORDER BY counterparty, currency, value_date, version", (since,))
    out = []
    for r in rows:
        vd = r[2] if isinstance(r[2], date) else date.fromisoformat(str(r[2]))
        state = InstructionState(r[6])
        ssi = None
        if r[7]:
            s = json.loads(r[7])
            ssi = Ssi(counterparty=r[0], currency=r[1], bank_bic=s["bank_bic"], account=s["account"],
                      version=int(s["version"]))
        finished = _dt(r[9])
        out.append(Instruction(
            key=NetKey(r[0], r[1], vd), amount=Decimal(r[5]), state=state, version=int(r[3]),
            adjustment=bool(r[4]), ssi=ssi, instructed_at=_dt(r[8]),
            settled_at=finished if state is InstructionState.SETTLED else None,
            failed_at=finished if state is InstructionState.FAILED else None,
            failure_reason=r[10], updated_at=_dt(r[11])))
    return out
