"""Commands the settlement desk sends on the bus, parsed and checked.  Pure.

A break lifecycle command is one JSON object on ``<prefix>/commands/breaks``::

    {"request_id": "desk-42", "action": "acknowledge", "break_id": "9f…",
     "by": "alice", "reason": "calling the LP", "reply_to": "fxstp/replies/alice"}

``action`` is ``acknowledge`` (or ``ack``) or ``resolve``; ``by`` is required,
``reason`` is required to resolve; ``request_id`` (echoed in the reply) and
``reply_to`` (a topic without wildcards; default ``<prefix>/replies/breaks``)
are optional.  What cannot be parsed raises ``CommandError`` with a code the
reply carries, and nothing else: ``malformed_json`` (larger than
``MAX_PAYLOAD`` bytes, not UTF-8 JSON, nested deeper than the parser goes,
or not an object) or ``invalid_command`` (a field missing, of the wrong type,
unknown, or text a database column cannot hold).  Whether
the break exists and the transition is legal is decided where the break's
state is (``unknown_break``, ``illegal_transition``); whether a request_id
was already used for another command where the inbox is
(``request_id_reused``; the same command again gets the first reply).

An allocation is a command on the same topic (``action`` ``allocate``)::

    {"request_id": "desk-43", "action": "allocate", "session": "LP1", "exec_id": "LP1-E-17",
     "account": "ACC007", "by": "alice", "reason": "client per phone", "reply_to": "fxstp/replies/alice"}

``session``, ``exec_id``, ``account`` and ``by`` are required, ``reason``
optional; ``parse_command`` parses either kind.  Whether the fill waits on
its house account and the account exists is decided where the bookings are
(``unknown_fill``, ``unknown_account``, ``house_account``,
``already_allocated``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ACTIONS = {"ack": "acknowledge", "acknowledge": "acknowledge", "resolve": "resolve"}
_FIELDS = {"request_id", "action", "break_id", "by", "reason", "reply_to"}
# what the database columns hold: who 80, ids 64 (a reply's event id is
# "reply-" + the request id), a reason as long as a desk note needs
MAX_LENGTH = {"by": 80, "break_id": 64, "request_id": 64, "action": 16, "reason": 1000, "reply_to": 200,
              "session": 64, "exec_id": 64, "account": 64}
# a command is a few hundred bytes; what is far larger is not parsed at all
MAX_PAYLOAD = 65536
_ALLOCATE_FIELDS = {"request_id", "action", "session", "exec_id", "account", "by", "reason", "reply_to"}


class CommandError(ValueError):
    def __init__(self, code: str, message: str, request_id: str | None = None,
                 reply_to: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.reply_to = reply_to


@dataclass(frozen=True, slots=True)
class BreakCommand:
    action: str                 # acknowledge | resolve
    break_id: str
    by: str
    reason: str | None = None
    request_id: str | None = None
    reply_to: str | None = None

    @property
    def inbox_kind(self) -> str:
        return "break_acknowledge" if self.action == "acknowledge" else "break_resolve"

    def log_fields(self) -> dict[str, Any]:
        return {"action": self.action, "break_id": self.break_id, "by": self.by}

    def inbox_payload(self) -> dict[str, Any]:
        return {"break_id": self.break_id, "by": self.by, "reason": self.reason,
                "request_id": self.request_id, "reply_to": self.reply_to, "via": "mqtt"}


@dataclass(frozen=True, slots=True)
class AllocateCommand:
    session: str
    exec_id: str
    account: str
    by: str
    reason: str | None = None
    request_id: str | None = None
    reply_to: str | None = None
    action: str = "allocate"

    @property
    def inbox_kind(self) -> str:
        return "allocate"

    def log_fields(self) -> dict[str, Any]:
        return {"action": self.action, "session": self.session, "exec_id": self.exec_id,
                "account": self.account, "by": self.by}

    def inbox_payload(self) -> dict[str, Any]:
        return {"session": self.session, "exec_id": self.exec_id, "account": self.account, "by": self.by,
                "reason": self.reason, "request_id": self.request_id, "reply_to": self.reply_to,
                "via": "mqtt"}


def _text(obj: dict[str, Any], name: str, required: bool, request_id: str | None,
          reply_to: str | None) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise CommandError("invalid_command", f"{name} is required", request_id, reply_to)
        return None
    if not isinstance(value, str):
        raise CommandError("invalid_command", f"{name} must be a string", request_id, reply_to)
    value = value.strip()
    if required and not value:
        raise CommandError("invalid_command", f"{name} is empty", request_id, reply_to)
    if len(value) > MAX_LENGTH[name]:
        raise CommandError("invalid_command", f"{name} is longer than {MAX_LENGTH[name]} characters",
                           request_id, reply_to)
    if not _encodable(value):
        raise CommandError("invalid_command", f"{name} is not valid Unicode text (or holds a NUL)",
                           request_id, reply_to)
    return value or None


def _encodable(text: str) -> bool:
    # UTF-8 text a database column holds: no lone surrogate ("\ud800" in the
    # JSON) and no NUL ("\u0000": PostgreSQL's text type refuses it)
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _load(payload: bytes | str) -> dict[str, Any]:
    """The payload's JSON object, or CommandError("malformed_json") whatever
    goes wrong: too large, not UTF-8, not JSON, nested too deep for the
    parser (RecursionError), a number too long to convert, not an object."""
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise CommandError("malformed_json", f"a command is at most {MAX_PAYLOAD} bytes, this one is {size}")
    try:
        obj = json.loads(payload)
    except RecursionError:
        raise CommandError("malformed_json", "not JSON: nested too deep") from None
    except Exception as exc:        # ValueError, UnicodeDecodeError, and whatever else the parser raises
        raise CommandError("malformed_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("malformed_json", "a command is a JSON object")
    return obj


def valid_reply_topic(topic: str) -> bool:
    return bool(topic) and len(topic) <= MAX_LENGTH["reply_to"] and not any(c in topic for c in "+#\x00")


def _header(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """A command's request_id and reply_to (checked)."""
    raw_id = obj.get("request_id")
    request_id = str(raw_id) if isinstance(raw_id, str | int) and raw_id != "" else None
    longest = MAX_LENGTH["request_id"]
    if request_id is not None and (len(request_id) > longest or not _encodable(request_id)):
        raise CommandError("invalid_command", f"request_id must be text of at most {longest} characters")
    reply_to = obj.get("reply_to")
    reply_to = reply_to if isinstance(reply_to, str) and valid_reply_topic(reply_to) \
        and _encodable(reply_to) else None
    if obj.get("reply_to") is not None and reply_to is None:
        raise CommandError("invalid_command", "reply_to must be a topic without wildcards", request_id)
    return request_id, reply_to


def parse_break_command(payload: bytes | str) -> BreakCommand:
    return _break_command(_load(payload))


def _break_command(obj: dict[str, Any]) -> BreakCommand:
    request_id, reply_to = _header(obj)
    unknown = set(obj) - _FIELDS
    if unknown:
        raise CommandError("invalid_command", f"unknown fields: {', '.join(sorted(unknown))}",
                           request_id, reply_to)
    action_text = _text(obj, "action", True, request_id, reply_to)
    action = ACTIONS.get(action_text or "")
    if action is None:
        raise CommandError("invalid_command",
                           f"action must be acknowledge or resolve (or allocate), got {action_text!r}",
                           request_id, reply_to)
    break_id = _text(obj, "break_id", True, request_id, reply_to)
    by = _text(obj, "by", True, request_id, reply_to)
    reason = _text(obj, "reason", False, request_id, reply_to)
    if action == "resolve" and not reason:
        raise CommandError("invalid_command", "a resolution needs a reason", request_id, reply_to)
    assert break_id is not None and by is not None
    return BreakCommand(action, break_id, by, reason, request_id, reply_to)


def parse_command(payload: bytes | str) -> BreakCommand | AllocateCommand:
    """A command of the command topic: an allocation (``action`` ``allocate``)
    or a break lifecycle command (``parse_break_command``)."""
    obj = _load(payload)
    if obj.get("action") != "allocate":
        return _break_command(obj)
    request_id, reply_to = _header(obj)
    unknown = set(obj) - _ALLOCATE_FIELDS
    if unknown:
        raise CommandError("invalid_command", f"unknown fields: {', '.join(sorted(unknown))}",
                           request_id, reply_to)
    session = _text(obj, "session", True, request_id, reply_to)
    exec_id = _text(obj, "exec_id", True, request_id, reply_to)
    account = _text(obj, "account", True, request_id, reply_to)
    by = _text(obj, "by", True, request_id, reply_to)
    reason = _text(obj, "reason", False, request_id, reply_to)
    assert session is not None and exec_id is not None and account is not None and by is not None
    return AllocateCommand(session, exec_id, account, by, reason, request_id, reply_to)
