"""Desk tools for breaks: list and show them from the database, and watch the
bus (a small subscriber the desk can run or copy).

``watch`` subscribes to ``<prefix>/breaks/#`` at QoS 1 and prints one line per
break as it arrives, dropping repeats by the CloudEvent id (QoS 1 is
at-least-once, and the relay republishes after a lost connection).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any, TextIO

import aiomqtt

from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database


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


def format_break_line(event: dict[str, Any]) -> str:
    d = event.get("data", {})
    return f"{event.get('time', '')}  {d.get('severity', ''):<8} {d.get('type', ''):<24} " \
           f"{d.get('break_id', '')}  {d.get('summary', '')}"


async def watch(host: str, port: int, prefix: str, out: TextIO, as_json: bool = False,
                count: int | None = None, client_id: str | None = None) -> int:
    """Print breaks as they arrive; returns how many were printed."""
    seen: OrderedDict[str, None] = OrderedDict()
    printed = 0
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier=client_id,
                                      clean_session=client_id is None) as client:
                await client.subscribe(f"{prefix}/breaks/#", qos=1)
                async for message in client.messages:
                    try:
                        event = json.loads(bytes(message.payload))
                    except (ValueError, TypeError):
                        continue
                    event_id = str(event.get("id", ""))
                    if event_id in seen:
                        continue
                    seen[event_id] = None
                    if len(seen) > 100_000:
                        seen.popitem(last=False)
                    out.write((json.dumps(event) if as_json else format_break_line(event)) + "\n")
                    out.flush()
                    printed += 1
                    if count is not None and printed >= count:
                        return printed
        except aiomqtt.MqttError as exc:
            out.flush()
            import sys

            print(f"broker {host}:{port} unavailable ({exc}); retrying", file=sys.stderr)
            await asyncio.sleep(2.0)
