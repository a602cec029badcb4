"""The commands the engine applies from its inbox, typed.  Pure.

The desk's commands (``run_engine.py settlement|cash|allocate|breaks``)
and the bus's (``adapters.commands``) wait in the ``inbox`` table as a kind
and a JSON payload; ``parse_inbox`` turns one into the command it is, and
the post-trade timer applies it with ``match``.  Parsing checks the
payload's shape (the fields there and of the right kind); what needs the
engine's state (the account exists, the break's transition is legal, the
withdrawal is covered) is decided where the state is.  A payload that is
not a command raises ``ValueError``, ``KeyError`` (a field missing) or
``TypeError``: the inbox row is marked with the error and, for a command
from the bus, the reply says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

BreakActionName = Literal["acknowledge", "resolve"]
SettlementStatusName = Literal["settled", "failed"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a command came from: its inbox row, and for one from the bus
    (``via_bus``) the request id and reply topic its answer goes with."""

    inbox_id: int
    via_bus: bool = False
    request_id: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class BreakAction:
    """open -> acknowledged -> resolved, by whom and why."""

    action: BreakActionName
    break_id: str
    by: str
    reason: Any = None            # checked by the lifecycle (``stp.breaks.transition``)


@dataclass(frozen=True, slots=True)
class SettlementStatus:
    """The desk's report that a net's instruction settled or failed."""

    counterparty: str
    currency: str
    value_date: date
    status: str                   # checked by the settlement book (settled or failed)
    reason: Any = None
    version: Any = None
    at: datetime | None = None    # when it happened; None: when it is applied


@dataclass(frozen=True, slots=True)
class CashMovement:
    """A client's deposit (amount > 0) or withdrawal (< 0); ``amount`` as it
    came (text or an integer: a JSON float is not exact, and is refused where
    it is booked, with the reason)."""

    account: str
    currency: str
    amount: Any
    reference: Any
    value_date: date | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    """The desk's allocation of an LP fill booked on its house account."""

    session: str
    exec_id: str
    account: str
    by: Any
    reason: Any = None


InboxCommand = BreakAction | SettlementStatus | CashMovement | Allocation


def origin_of(inbox_id: int, payload: dict[str, Any]) -> Origin:
    return Origin(inbox_id, payload.get("via") == "mqtt", payload.get("request_id"), payload.get("reply_to"))


def parse_inbox(kind: str, payload: dict[str, Any]) -> InboxCommand:
    """The command an inbox row holds (``kind``, its JSON payload as a dict)."""
    match kind:
        case "break_acknowledge" | "break_resolve":
            action: BreakActionName = "acknowledge" if kind == "break_acknowledge" else "resolve"
            return BreakAction(action, str(payload["break_id"]), str(payload.get("by") or ""),
                               payload.get("reason"))
        case "settlement_status":
            counterparty, currency = payload["counterparty"], payload["currency"]
            value_date = date.fromisoformat(payload["value_date"])
            at = datetime.fromisoformat(payload["at"]) if payload.get("at") else None
            return SettlementStatus(counterparty, currency, value_date, payload["status"],
                                    payload.get("reason"), payload.get("version"), at)
        case "cash":
            account, currency = str(payload["account"]), str(payload["currency"])
            dated = date.fromisoformat(payload["value_date"]) if payload.get("value_date") else None
            return CashMovement(account, currency, payload["amount"], payload["reference"], dated)
        case "allocate":
            return Allocation(str(payload["session"]), str(payload["exec_id"]), str(payload["account"]),
                              payload.get("by"), payload.get("reason"))
        case _:
            raise ValueError(f"unknown inbox kind {kind!r}")
