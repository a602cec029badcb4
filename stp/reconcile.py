"""End-of-day reconciliation against what the LP says it did.  Pure.

Two inputs, both CSV with a header row (column order free, names as below,
extra columns ignored):

* **Trade statement**: one line per execution the LP reported, cancels and
  corrections included.  Required: ``exec_id, symbol, side, last_qty,
  last_px``; optional: ``exec_type`` (F trade (default), G correction, H
  cancel), ``exec_ref_id``, ``order_id``, ``account``, ``trade_date`` and
  ``settl_date`` (YYYY-MM-DD).  ``side`` is 1/2 or BUY/SELL, the client's
  side as on the ExecutionReport.  Every statement line is compared, by
  ExecID, with the execution the engine accepted from that LP session:
  one only the LP lists is ``recon_missing_engine``, one only the engine has
  (on the statement's trade dates) is ``recon_missing_lp``, one whose fields
  differ is ``recon_difference`` (each differing field, both values).
* **Position report**: the settlement position per currency and value date.
  Required: ``currency, value_date, lp_pays``; ``lp_pays`` is what the LP
  will pay the broker (positive) or receive from it (negative), the engine's
  net obligation with that LP.  A currency and value date where the two
  differ, or that only one side has (the other counts as zero), is a
  ``position_drift`` break.  Value dates absent from the report are not
  compared (a report may cover some dates only).

A line that cannot be read is reported with its line number and skipped (the
file itself is kept by the caller); the fill it meant to describe then shows
up as missing, so nothing is silently reconciled.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from stp.breaks import Break, BreakType
from stp.currency import minor_units

_SIDES = {"1": "1", "2": "2", "BUY": "1", "SELL": "2", "B": "1", "S": "2"}
_KINDS = {"F": "F", "G": "G", "H": "H", "TRADE": "F", "CORRECT": "G", "CANCEL": "H"}
STATEMENT_REQUIRED = ("exec_id", "symbol", "side", "last_qty", "last_px")
POSITION_REQUIRED = ("currency", "value_date", "lp_pays")


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution as the LP states it or as the engine accepted it."""

    exec_id: str
    exec_type: str              # F, G, H
    symbol: str                 # EUR/USD
    side: str                   # 1 buy, 2 sell
    last_qty: Decimal
    last_px: Decimal
    settl_date: date | None = None
    trade_date: date | None = None
    order_id: str | None = None
    account: str | None = None
    exec_ref_id: str | None = None

    def values(self) -> dict[str, str | None]:
        return {"exec_type": self.exec_type, "symbol": self.symbol, "side": self.side,
                "last_qty": str(self.last_qty), "last_px": str(self.last_px),
                "settl_date": _iso(self.settl_date), "trade_date": _iso(self.trade_date),
                "order_id": self.order_id, "account": self.account, "exec_ref_id": self.exec_ref_id}


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    error: str


@dataclass(frozen=True, slots=True)
class StatementResult:
    breaks: tuple[Break, ...]
    matched: int                # executions on both sides with equal fields


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _symbol(text: str) -> str:
    t = text.strip().upper()
    if len(t) == 6 and t.isalpha():
        return f"{t[:3]}/{t[3:]}"
    if len(t) == 7 and t[3] in "/-." and t.replace(t[3], "").isalpha():
        return f"{t[:3]}/{t[4:]}"
    raise ValueError(f"symbol {text!r} is not a currency pair")


def _decimal(text: str, name: str, positive: bool = True) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not value.is_finite() or (positive and value <= 0):
        raise ValueError(f"{name} {text!r} must be a positive number")
    return value


def _date(text: str | None, name: str) -> date | None:
    if text is None or not text.strip():
        return None
    t = text.strip()
    try:
        return date.fromisoformat(t if "-" in t else f"{t[:4]}-{t[4:6]}-{t[6:]}")
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None


def _rows(text: str, required: Iterable[str]) -> tuple[list[tuple[int, dict[str, str]]], list[LineError]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        has = ", ".join(header) or "nothing"
        return [], [LineError(1, f"header lacks {', '.join(missing)} (has: {has})")]
    reader.fieldnames = header
    rows = []
    for row in reader:
        clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if not any(clean.values()):
            continue
        rows.append((reader.line_num, clean))
    return rows, []


def parse_statement(text: str) -> tuple[list[Execution], list[LineError]]:
    rows, errors = _rows(text, STATEMENT_REQUIRED)
    out: list[Execution] = []
    for line, row in rows:
        try:
            if not row["exec_id"]:
                raise ValueError("exec_id is empty")
            kind = _KINDS.get((row.get("exec_type") or "F").upper())
            if kind is None:
                raise ValueError(f"exec_type {row.get('exec_type')!r} is not F, G or H")
            side = _SIDES.get(row["side"].upper())
            if side is None:
                raise ValueError(f"side {row['side']!r} is not 1/2 or BUY/SELL")
            out.append(Execution(
                row["exec_id"], kind, _symbol(row["symbol"]), side, _decimal(row["last_qty"], "last_qty"),
                _decimal(row["last_px"], "last_px"), _date(row.get("settl_date"), "settl_date"),
                _date(row.get("trade_date"), "trade_date"), row.get("order_id") or None,
                row.get("account") or None, row.get("exec_ref_id") or None))
        except ValueError as exc:
            errors.append(LineError(line, str(exc)))
    return out, errors


def parse_positions(text: str) -> tuple[dict[tuple[str, date], Decimal], list[LineError]]:
    rows, errors = _rows(text, POSITION_REQUIRED)
    out: dict[tuple[str, date], Decimal] = {}
    for line, row in rows:
        try:
            currency = row["currency"].upper()
            places = minor_units(currency)
            amount = _decimal(row["lp_pays"], "lp_pays", positive=False)
            if amount != amount.quantize(Decimal(1).scaleb(-places)):
                raise ValueError(f"lp_pays {row['lp_pays']} has more decimals than {currency}'s {places}")
            value_date = _date(row["value_date"], "value_date")
            if value_date is None:
                raise ValueError("value_date is empty")
            key = (currency, value_date)
            if key in out:
                raise ValueError(f"{currency} {value_date} is listed twice")
            out[key] = amount
        except (ValueError, KeyError, InvalidOperation) as exc:
            text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            errors.append(LineError(line, text or type(exc).__name__))
    return out, errors


_COMPARED = ("exec_type", "symbol", "side", "last_qty", "last_px", "settl_date", "order_id", "account",
             "exec_ref_id")


def _currencies(e: Execution) -> tuple[str, ...]:
    return tuple(e.symbol.split("/"))


def reconcile_statement(session: str, ours: Mapping[str, Execution],
                        theirs: Iterable[Execution]) -> StatementResult:
    """Compare the LP's statement with the engine's executions of ``session``.

    ``ours`` should hold the engine's executions of the trade dates the
    statement covers.  Fields the statement leaves empty (optional columns)
    are not compared.
    """
    breaks: list[Break] = []
    matched = 0
    seen: set[str] = set()
    for lp in theirs:
        if lp.exec_id in seen:
            continue
        seen.add(lp.exec_id)
        keys = {"session": session, "exec_id": lp.exec_id, "recon": "statement"}
        mine = ours.get(lp.exec_id)
        if mine is None:
            breaks.append(Break(BreakType.RECON_MISSING_ENGINE, keys,
                                f"{session} statement lists {lp.exec_id} ({lp.symbol} {lp.last_qty} @ "
                                f"{lp.last_px}), which the engine never accepted",
                                theirs=lp.values(), value_date=lp.settl_date, currencies=_currencies(lp)))
            continue
        a, b = mine.values(), lp.values()
        diffs = [f for f in _COMPARED if b[f] is not None and a[f] != b[f]
                 and not (f in ("last_qty", "last_px") and Decimal(str(a[f])) == Decimal(str(b[f])))]
        if diffs:
            breaks.append(Break(BreakType.RECON_DIFFERENCE, keys,
                                f"{session} {lp.exec_id}: " + "; ".join(
                                    f"{f} engine {a[f]} statement {b[f]}" for f in diffs),
                                ours={f: a[f] for f in diffs}, theirs={f: b[f] for f in diffs},
                                value_date=mine.settl_date, currencies=_currencies(mine)))
        else:
            matched += 1
    for exec_id in sorted(set(ours) - seen):
        mine = ours[exec_id]
        breaks.append(Break(BreakType.RECON_MISSING_LP, {"session": session, "exec_id": exec_id,
                                                         "recon": "statement"},
                            f"{session} {exec_id} ({mine.symbol} {mine.last_qty} @ {mine.last_px}) "
                            f"is not on the LP's statement", ours=mine.values(),
                            value_date=mine.settl_date, currencies=_currencies(mine)))
    return StatementResult(tuple(breaks), matched)


def position_drift(counterparty: str, ours: Mapping[tuple[str, date], Decimal],
                   theirs: Mapping[tuple[str, date], Decimal]) -> StatementResult:
    """Compare the engine's nets with ``counterparty`` (positive: it pays us)
    with the LP's position report, on the report's value dates."""
    dates = {vd for _, vd in theirs}
    keys_ = sorted({k for k in ours if k[1] in dates} | set(theirs), key=lambda k: (k[1], k[0]))
    breaks: list[Break] = []
    matched = 0
    for currency, value_date in keys_:
        mine = ours.get((currency, value_date), Decimal(0))
        lp = theirs.get((currency, value_date), Decimal(0))
        if mine == lp:
            matched += 1
            continue
        breaks.append(Break(
            BreakType.POSITION_DRIFT,
            {"counterparty": counterparty, "currency": currency, "value_date": value_date.isoformat()},
            f"{counterparty} {currency} {value_date}: engine net {mine}, LP reports {lp} "
            f"(drift {lp - mine})",
            ours={"lp_pays": str(mine)}, theirs={"lp_pays": str(lp)},
            value_date=value_date, currencies=(currency,)))
    return StatementResult(tuple(breaks), matched)


@dataclass(frozen=True, slots=True)
class ReconRun:
    """One reconciliation run as it is recorded, with the file as received."""

    kind: str                   # "statement" or "positions"
    session: str
    as_of: date | None
    source: str
    content: str
    lines: int
    matched: int
    breaks: int
