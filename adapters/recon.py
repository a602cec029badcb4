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
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.db.posttrade import PostTradeStore, PostTradeWrite
from adapters.db.repository import Database, now_us, us_to_datetime
from handlers.breaks import BreakSink
from stp.reconcile import (
    Execution,
    LineError,
    StatementResult,
    parse_positions,
    parse_statement,
    position_drift,
    reconcile_statement,
)
from stp.reference import ReferenceData
from stp.valuedates import CurrencyPair, fx_trade_date, value_date


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


async def engine_executions(store: PostTradeStore, reference: ReferenceData, session: str,
                            trade_dates: set[date] | None) -> dict[str, Execution]:
    """The session's executions; a fill without SettlDate (64) gets the value
    date its SettlType gives (what it was booked at), one without TradeDate
    (75) the FX trade date of its TransactTime or receipt."""
    rows = await store.fetch(
        "SELECT exec_id, kind, symbol, side, last_qty, last_px, settl_date, trade_date, order_id, account, "
        "exec_ref_id, settl_type, transact_us, received_us FROM fills WHERE session = ?", (session,))
    out: dict[str, Execution] = {}
    for r in rows:
        trade_date = _day(r[7])
        pair = reference.pair_for(CurrencyPair.parse(str(r[2])))   # as confirmation dated it
        if trade_date is None:
            at = us_to_datetime(r[12] or r[13])
            trade_date = fx_trade_date(at, pair)
        if trade_dates is not None and trade_date not in trade_dates:
            continue
        settl_date = _day(r[6])
        if settl_date is None:
            with contextlib.suppress(ValueError, KeyError):
                settl_date = value_date(trade_date, pair, str(r[11] or "0"))
        out[str(r[0])] = Execution(str(r[0]), str(r[1]), str(r[2]), str(r[3]), Decimal(r[4]), Decimal(r[5]),
                                   settl_date, trade_date, r[8], r[9], r[10])
    return out


async def engine_nets(store: PostTradeStore, counterparty: str) -> dict[tuple[str, date], Decimal]:
    rows = await store.fetch("SELECT currency, value_date, amount FROM nets WHERE counterparty = ?",
                             (counterparty,))
    return {(str(c), d): Decimal(a) for c, vd, a in rows if (d := _day(vd)) is not None}


async def _store(db: Database, reference: ReferenceData, prefix: str, kind: str, session: str,
                 as_of: date | None, source: Path, content: str, lines: int,
                 result: StatementResult) -> None:
    store = PostTradeStore(db)
    w = PostTradeWrite()
    stamp = now_us()
    sink = BreakSink(prefix, reference)
    for brk in result.breaks:
        sink.add(brk, w, stamp)
    async with db.engine.begin() as conn:
        await store.write_rows(conn, w)
        await conn.exec_driver_sql(store.query(
            "INSERT INTO recon_runs (kind, session, as_of, source, content, lines, matched, breaks, run_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (kind, session, None if as_of is None else as_of.isoformat(), str(source)[:255], content, lines,
             result.matched, len(result.breaks), stamp))


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


async def reconcile_statement_file(db: Database, reference: ReferenceData, prefix: str, session: str,
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
    ours = await engine_executions(PostTradeStore(db), reference, session, dates)
    result = reconcile_statement(session, ours, theirs)
    lines = len(theirs) + len(errors)
    await _store(db, reference, prefix, "statement", session, trade_date, path, content, lines, result)
    return _report("statement", session, lines, result, errors)


async def reconcile_positions_file(db: Database, reference: ReferenceData, prefix: str, counterparty: str,
                                   path: Path) -> dict[str, Any]:
    content = path.read_text(encoding="utf-8-sig")
    theirs, errors = parse_positions(content)
    if not theirs:
        raise ReconError(_nothing_read("position report", errors))
    ours = await engine_nets(PostTradeStore(db), counterparty)
    result = position_drift(counterparty, ours, theirs)
    lines = len(theirs) + len(errors)
    await _store(db, reference, prefix, "positions", counterparty, None, path, content, lines, result)
    return _report("positions", counterparty, lines, result, errors)
