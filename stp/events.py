"""Events for the settlement desk's bus: CloudEvents 1.0, structured JSON.

Every event has a stable id, so a consumer that sees one twice (QoS 1 is
at-least-once; the relay may republish after a crash) drops the repeat:
a break's event id is the break id (the same discrepancy detected again is
the same event); a margin event's id is its stored id.  Pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stp.breaks import Break, occurrence_id

SOURCE = "urn:fxstp:engine"


@dataclass(frozen=True, slots=True)
class BusEvent:
    event_id: str
    topic: str
    payload: str          # the CloudEvent, JSON
    retain: bool = False


def _topic_part(text: str) -> str:
    """MQTT topic levels may not contain '/', '+' or '#'."""
    return "".join("_" if c in "/+#" else c for c in text) or "_"


def cloud_event(event_id: str, kind: str, subject: str, data: dict[str, Any], at: datetime) -> str:
    return json.dumps({
        "specversion": "1.0", "id": event_id, "source": SOURCE, "type": kind, "subject": subject,
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json", "data": data}, sort_keys=True, default=str)


def _break_topic(prefix: str, keys: dict[str, str], break_type: str) -> str:
    """<prefix>/breaks/<session or counterparty or account>/<type>."""
    scope = keys.get("session") or keys.get("counterparty") or keys.get("account") or "engine"
    return f"{prefix}/breaks/{_topic_part(scope)}/{break_type}"


def break_detected(brk: Break, prefix: str, at: datetime, occurrence: int = 1) -> BusEvent:
    """A new (or seen again) break on its topic; id = the occurrence's id
    (the break id, or break id + ``-<n>`` once a resolved break has come back
    as its n-th occurrence: ``stp.breaks.occurrence_id``)."""
    event_id = occurrence_id(brk.break_id, occurrence)
    data = {"break_id": brk.break_id, "type": brk.type.value, "severity": brk.level.value,
            "keys": brk.keys, "summary": brk.summary, "ours": brk.ours, "theirs": brk.theirs,
            "state": "open", "occurrence": occurrence}
    return BusEvent(event_id, _break_topic(prefix, brk.keys, brk.type.value),
                    cloud_event(event_id, "com.fxstp.break.detected", brk.break_id, data, at))


def break_changed(break_id: str, break_type: str, keys: dict[str, str], state: str, by: str,
                  reason: str | None, prefix: str, at: datetime, occurrence: int = 1) -> BusEvent:
    """A lifecycle change, on the break's topic; id = the occurrence's id + new state."""
    event_id = f"{occurrence_id(break_id, occurrence)}-{state}"
    data = {"break_id": break_id, "type": break_type, "keys": keys, "state": state, "by": by,
            "reason": reason, "occurrence": occurrence}
    return BusEvent(event_id, _break_topic(prefix, keys, break_type),
                    cloud_event(event_id, f"com.fxstp.break.{state}", break_id, data, at))


def break_escalated(break_id: str, break_type: str, severity: str, state: str, keys: dict[str, str],
                    summary: str, cut_off: datetime, prefix: str, at: datetime,
                    occurrence: int = 1) -> BusEvent:
    """An unresolved break near (or past) its settlement cut-off, re-published
    on the break's topic; id = the occurrence's id + "-escalated" (once per
    occurrence)."""
    event_id = f"{occurrence_id(break_id, occurrence)}-escalated"
    data = {"break_id": break_id, "type": break_type, "severity": severity, "keys": keys,
            "state": state, "summary": summary, "occurrence": occurrence,
            "cut_off": cut_off.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "minutes_to_cut_off": int((cut_off - at).total_seconds() // 60)}
    return BusEvent(event_id, _break_topic(prefix, keys, break_type),
                    cloud_event(event_id, "com.fxstp.break.escalated", break_id, data, at))


def command_reply(request_id: str | None, topic: str, ok: bool, at: datetime, *, reply_id: str,
                  result: dict[str, Any] | None = None, error: str | None = None,
                  message: str | None = None) -> BusEvent:
    """The answer to a command received on the command topic: ``ok`` with the
    result, or the error code (malformed_json, invalid_command, unknown_break,
    illegal_transition, request_id_reused) and a message; the request's id
    is echoed.  The event id is ``reply-<reply_id>``, unique per command
    applied (the inbox row: a repeat of a command with the same request id
    gets that same event again) or a random id for a command refused on
    arrival."""
    event_id = f"reply-{reply_id}"
    data: dict[str, Any] = {"request_id": request_id, "ok": ok}
    if ok:
        data["result"] = result or {}
    else:
        data["error"] = {"code": error, "message": message}
    return BusEvent(event_id, topic, cloud_event(event_id, "com.fxstp.command.reply",
                                                 request_id or "command", data, at))


def margin_event(event_no: int, account: str, kind: str, data: dict[str, Any], prefix: str,
                 at: datetime) -> BusEvent:
    """Topic: <prefix>/margin/<account>/events (margin call, stop-out, recovered)."""
    event_id = f"margin-{event_no}"
    return BusEvent(event_id, f"{prefix}/margin/{_topic_part(account)}/events",
                    cloud_event(event_id, f"com.fxstp.margin.{kind}", account,
                                {"account": account, "kind": kind, **data}, at))


def margin_state(account: str, data: dict[str, Any], prefix: str, at: datetime,
                 stamp_us: int) -> BusEvent:
    """Retained topic <prefix>/margin/<account>: the account's current margin."""
    event_id = f"margin-state-{account}-{stamp_us}"
    payload = cloud_event(event_id, "com.fxstp.margin.state", account, {"account": account, **data}, at)
    return BusEvent(event_id, f"{prefix}/margin/{_topic_part(account)}", payload, retain=True)


def engine_status(state: str, prefix: str, at: datetime, **detail: str) -> BusEvent:
    """Retained topic <prefix>/status: online / offline (offline is also the
    last will), or degraded: connected, but a part is down (``component``:
    ``commands`` or ``relay``, and the ``reason``)."""
    event_id = f"status-{state}-{int(at.timestamp() * 1e6)}"
    data = {"state": state, **detail}
    return BusEvent(event_id, f"{prefix}/status",
                    cloud_event(event_id, "com.fxstp.engine.status", "engine", data, at), retain=True)


def reply_topic(prefix: str, reply_to: str | None) -> str:
    """Where a command's reply goes: the topic it asked for, else the desk's."""
    return reply_to or f"{prefix}/replies/breaks"
