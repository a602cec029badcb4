"""The desk's reports as text (``run_engine.py report``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def format_settlements(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'counterparty':<14}{'ccy':<5}{'net':>22}  {'direction':<9} instructions"]
    for r in rows:
        inst = ", ".join(f"v{i['version']} {i['state']} {i['amount']}" for i in r["instructions"]) or "-"
        lines.append(f"{r['counterparty']:<14}{r['currency']:<5}{r['net']:>22}  {r['direction']:<9} {inst}")
    return "\n".join(lines)


def format_positions(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'account':<9}{'pair':<9}{'quantity':>18}{'avg price':>14}{'realised':>16}  margin"]
    for r in rows:
        m = r["margin"] or {}
        margin = f"{m.get('state', '-')} level {m.get('margin_level') or '-'}%" if m else "-"
        avg = r["average_price"]
        shown = f"{Decimal(avg).quantize(Decimal('0.0000001'))}" if avg else "-"   # display only
        lines.append(f"{r['account']:<9}{r['pair']:<9}{r['quantity']:>18}{shown:>14}"
                     f"{r['realised_pnl']:>16}  {margin}")
    return "\n".join(lines)
