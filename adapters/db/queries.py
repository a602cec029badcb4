"""What the desk reads from the database: settlements, positions, breaks
(each row as a dict of JSON-ready values)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database


async def settlements(db: Database, value_date: date) -> list[dict[str, Any]]:
    store = PostTradeStore(db)
    nets = await store.fetch("SELECT counterparty, currency, amount FROM nets WHERE value_date = ? "
                             "ORDER BY counterparty, currency", (value_date,))
    instructions = await store.fetch(
        "SELECT counterparty, currency, version, adjustment, amount, state, ssi, failure_reason "
        "FROM instructions WHERE value_date = ? ORDER BY counterparty, currency, version", (value_date,))
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cp, ccy, version, adjustment, amount, state, ssi, reason in instructions:
        by_key.setdefault((cp, ccy), []).append({
            "version": int(version), "adjustment": bool(adjustment), "amount": amount, "state": state,
            "ssi": json.loads(ssi) if ssi else None, "failure_reason": reason})
    out = []
    for cp, ccy, amount in nets:
        net = Decimal(amount)
        out.append({"counterparty": cp, "currency": ccy, "value_date": value_date.isoformat(),
                    "net": str(net), "direction": "receive" if net > 0 else "pay" if net < 0 else "flat",
                    "instructions": by_key.get((cp, ccy), [])})
    return out


async def positions(db: Database, account: str | None = None) -> list[dict[str, Any]]:
    store = PostTradeStore(db)
    where, params = ("WHERE p.account = ?", (account,)) if account else ("", ())
    rows = await store.fetch(
        "SELECT p.account, p.pair, p.quantity, p.average_price, p.realised_pnl, m.currency, m.balance, "
        "m.equity, m.used_margin, m.free_margin, m.margin_level, m.state FROM positions p "
        f"LEFT JOIN margin_accounts m ON m.account = p.account {where} ORDER BY p.account, p.pair",
        params)
    dated = await store.fetch("SELECT account, pair, value_date, quantity FROM position_value_dates "
                              "ORDER BY account, pair, value_date")
    by_date: dict[tuple[str, str], dict[str, str]] = {}
    for acc, pair, vd, qty in dated:
        if Decimal(qty) != 0:
            by_date.setdefault((acc, pair), {})[str(vd)] = qty
    return [{"account": r[0], "pair": r[1], "quantity": r[2], "average_price": r[3], "realised_pnl": r[4],
             "by_value_date": by_date.get((r[0], r[1]), {}),
             "margin": None if r[5] is None else {"currency": r[5], "balance": r[6], "equity": r[7],
                                                   "used_margin": r[8], "free_margin": r[9],
                                                   "margin_level": r[10], "state": r[11]}}
            for r in rows]


async def list_breaks(db: Database, state: str | None = None, type_: str | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
    where, params = [], []
    if state:
        where.append("state = ?")
        params.append(state)
    if type_:
        where.append("type = ?")
        params.append(type_)
    sql = ("SELECT break_id, type, severity, state, summary, keys, occurrences, detected_us, occurrence "
           "FROM breaks"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY detected_us DESC LIMIT ?")
    rows = await PostTradeStore(db).fetch(sql, (*params, limit))
    return [{"break_id": r[0], "type": r[1], "severity": r[2], "state": r[3], "summary": r[4],
             "keys": json.loads(r[5]), "occurrences": int(r[6]), "detected_us": int(r[7]),
             "occurrence": int(r[8])} for r in rows]


async def show_break(db: Database, break_id: str) -> dict[str, Any] | None:
    rows = await PostTradeStore(db).fetch(
        "SELECT break_id, type, severity, state, summary, keys, ours, theirs, occurrences, detected_us, "
        "last_seen_us, acknowledged_by, acknowledged_us, resolved_by, resolved_us, resolution, "
        "cut_off_us, escalated_us, occurrence, reopened_us FROM breaks WHERE break_id = ?", (break_id,))
    if not rows:
        return None
    r = rows[0]
    return {"break_id": r[0], "type": r[1], "severity": r[2], "state": r[3], "summary": r[4],
            "keys": json.loads(r[5]), "ours": json.loads(r[6]), "theirs": json.loads(r[7]),
            "occurrences": int(r[8]), "detected_us": int(r[9]), "last_seen_us": int(r[10]),
            "acknowledged_by": r[11], "acknowledged_us": r[12], "resolved_by": r[13], "resolved_us": r[14],
            "resolution": r[15], "cut_off_us": r[16], "escalated_us": r[17], "occurrence": int(r[18]),
            "reopened_us": r[19]}
