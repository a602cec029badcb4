"""End-of-day reconciliation runs: read the LP's file, compare it with the
database (``stp.reconcile``), and store the breaks, their bus events and the
file as received in one transaction.

Runs from the CLI beside a running engine: the breaks go into the same
``breaks`` table and outbox, and the engine's relay publishes them.  Running
the same file again finds the same breaks (stable ids): their occurrence
count goes up, nothing is published twice under another id.
"""

from __future__ import annotations

import contextlib
from datetime import date
from pathlib import Path
from typing import Any

from handlers.breaks import BreakSink
from handlers.ports import ReconStore, now_us
from stp.changes import BatchChanges
from stp.fills import Fill
from stp.reconcile import (
    Execution,
    LineError,
    ReconRun,
    StatementResult,
    parse_positions,
    parse_statement,
    position_drift,
    reconcile_statement,
)
from stp.reference import ReferenceData
from stp.valuedates import fx_trade_date, value_date


def engine_executions(fills: list[Fill], reference: ReferenceData,
                      trade_dates: set[date] | None) -> dict[str, Execution]:
    """The engine's side of a statement: its fills as executions, dated as
    booking dated them.  A fill without SettlDate (64) gets the value date its
    SettlType gives with the pair's configured spot lag (what it was booked
    at: ``ReferenceData.pair_for``, the rule confirmation uses), one without
    TradeDate (75) the FX trade date of its TransactTime or receipt."""
    out: dict[str, Execution] = {}
    for f in fills:
        pair = reference.pair_for(f.pair)
        trade_date = f.trade_date
        if trade_date is None:
            trade_date = fx_trade_date(f.transact_time or f.received_at, pair)
        if trade_dates is not None and trade_date not in trade_dates:
            continue
        settl_date = f.settl_date
        if settl_date is None:
            with contextlib.suppress(ValueError, KeyError):
                settl_date = value_date(trade_date, pair, f.settl_type or "0")
        out[f.exec_id] = Execution(f.exec_id, f.kind.value, f.symbol, f.side.value, f.last_qty, f.last_px,
                                   settl_date, trade_date, f.order_id, f.account, f.exec_ref_id)
    return out


async def _store(store: ReconStore, reference: ReferenceData, prefix: str, run: ReconRun,
                 result: StatementResult) -> None:
    w = BatchChanges()
    stamp = now_us()
    sink = BreakSink(prefix, reference)
    for brk in result.breaks:
        sink.add(brk, w, stamp)
    await store.record_recon(w, run)


class ReconError(ValueError):
    """A file with no usable line: nothing is reconciled or stored (an empty
    statement would otherwise report every fill as missing on the LP side)."""


def _nothing_read(what: str, errors: list[LineError]) -> str:
    detail = "; ".join(f"line {e.line}: {e.error}" for e in errors[:5])
    return f"no usable line in the {what}" + (f" ({detail})" if detail else " (it is empty)")


def _report(kind: str, session: str, lines: int, result: StatementResult,
            errors: list[LineError]) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    for brk in result.breaks:
        by_type[brk.type.value] = by_type.get(brk.type.value, 0) + 1
    return {"kind": kind, "session": session, "lines": lines, "matched": result.matched,
            "breaks": len(result.breaks), "by_type": by_type,
            "break_ids": [b.break_id for b in result.breaks],
            "unreadable_lines": [{"line": e.line, "error": e.error} for e in errors]}


async def reconcile_statement_file(store: ReconStore, reference: ReferenceData, prefix: str, session: str,
                                   path: Path, trade_date: date | None = None) -> dict[str, Any]:
    """The statement's executions (of ``trade_date``, or of the trade dates it
    lists) against the engine's executions of ``session`` on those dates."""
    content = path.read_text(encoding="utf-8-sig")      # a BOM (Excel) is not part of the header
    theirs, errors = parse_statement(content)
    if not theirs:
        raise ReconError(_nothing_read("statement", errors))
    if trade_date is not None:
        theirs = [e for e in theirs if e.trade_date in (None, trade_date)]
        dates: set[date] | None = {trade_date}
    else:
        listed = {e.trade_date for e in theirs if e.trade_date is not None}
        dates = listed or None
    ours = engine_executions(await store.session_fills(session), reference, dates)
    result = reconcile_statement(session, ours, theirs)
    lines = len(theirs) + len(errors)
    run = ReconRun("statement", session, trade_date, str(path), content, lines, result.matched,
                   len(result.breaks))
    await _store(store, reference, prefix, run, result)
    return _report("statement", session, lines, result, errors)


async def reconcile_positions_file(store: ReconStore, reference: ReferenceData, prefix: str,
                                   counterparty: str, path: Path) -> dict[str, Any]:
    content = path.read_text(encoding="utf-8-sig")
    theirs, errors = parse_positions(content)
    if not theirs:
        raise ReconError(_nothing_read("position report", errors))
    ours = await store.counterparty_nets(counterparty)
    result = position_drift(counterparty, ours, theirs)
    lines = len(theirs) + len(errors)
    run = ReconRun("positions", counterparty, None, str(path), content, lines, result.matched,
                   len(result.breaks))
    await _store(store, reference, prefix, run, result)
    return _report("positions", counterparty, lines, result, errors)
