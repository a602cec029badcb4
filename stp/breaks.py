"""Breaks: every discrepancy the engine detects, as one typed value.

A break has a stable id (the same discrepancy detected twice gets the same
id, so consumers and the outbox can dedupe), a type, a severity, the keys it
concerns, both sides' values and a human-readable summary.  The core returns
``Break`` values; the handlers store them (and, from issue 5, publish them).
Pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stp.fills import Fill


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class BreakType(StrEnum):
    # intake
    EXECID_CONFLICT = "execid_conflict"          # same ExecID, different content
    REJECTED_REPORT = "rejected_report"          # DontKnowTrade / reject sent
    AMOUNT_LIMIT = "amount_limit"                # DontKnowTrade: quantity or price beyond the pair's limits
    POISON_MESSAGE = "poison_message"            # the FIX gateway died twice on it: quarantined
    OVERSIZED_REPORT = "oversized_report"        # a report over max_message_bytes: session Reject, not booked
    # confirmation (validation and matching)
    UNKNOWN_PAIR = "unknown_pair"
    INVALID_FILL = "invalid_fill"                # side, quantity, CumQty/LeavesQty
    PRICE_OUT_OF_TOLERANCE = "price_out_of_tolerance"
    VALUE_DATE_MISMATCH = "value_date_mismatch"  # SettlDate != computed value date
    MISMATCH = "mismatch"                        # LP vs platform fields differ
    UNMATCHED_LP = "unmatched_lp"                # LP fill, no platform record in time
    UNMATCHED_PLATFORM = "unmatched_platform"    # platform record, no LP fill in time
    # booking
    UNKNOWN_REFERENCE = "unknown_reference"      # cancel/correct of an unknown fill
    UNKNOWN_ACCOUNT = "unknown_account"
    UNALLOCATED = "unallocated"                  # booked on the LP's house account: no client account
    # settlement
    SSI_MISSING = "ssi_missing"
    AFTER_CUT_OFF = "after_cut_off"
    SETTLEMENT_FAILED = "settlement_failed"
    # risk
    EXPOSURE_LIMIT = "exposure_limit"
    MARGIN_UNPRICED = "margin_unpriced"          # cash / P&L / position in a currency with no rate
    # end-of-day reconciliation against the LP's statement and position report
    RECON_MISSING_ENGINE = "recon_missing_engine"  # on the LP's statement, not in the engine
    RECON_MISSING_LP = "recon_missing_lp"          # in the engine, not on the LP's statement
    RECON_DIFFERENCE = "recon_difference"          # on both, fields differ
    POSITION_DRIFT = "position_drift"              # net per currency/value date differs from the LP's
    # FIX sessions
    SESSION_DOWN = "session_down"                  # a session cannot stay logged on


DEFAULT_SEVERITY: dict[BreakType, Severity] = {
    BreakType.EXECID_CONFLICT: Severity.HIGH,
    BreakType.REJECTED_REPORT: Severity.MEDIUM,
    BreakType.AMOUNT_LIMIT: Severity.HIGH,
    BreakType.POISON_MESSAGE: Severity.CRITICAL,
    BreakType.OVERSIZED_REPORT: Severity.HIGH,
    BreakType.UNKNOWN_PAIR: Severity.HIGH,
    BreakType.INVALID_FILL: Severity.HIGH,
    BreakType.PRICE_OUT_OF_TOLERANCE: Severity.HIGH,
    BreakType.VALUE_DATE_MISMATCH: Severity.HIGH,
    BreakType.MISMATCH: Severity.HIGH,
    BreakType.UNMATCHED_LP: Severity.MEDIUM,
    BreakType.UNMATCHED_PLATFORM: Severity.MEDIUM,
    BreakType.UNKNOWN_REFERENCE: Severity.HIGH,
    BreakType.UNKNOWN_ACCOUNT: Severity.HIGH,
    BreakType.UNALLOCATED: Severity.MEDIUM,
    BreakType.SSI_MISSING: Severity.CRITICAL,
    BreakType.AFTER_CUT_OFF: Severity.HIGH,
    BreakType.SETTLEMENT_FAILED: Severity.CRITICAL,
    BreakType.EXPOSURE_LIMIT: Severity.HIGH,
    BreakType.MARGIN_UNPRICED: Severity.HIGH,
    BreakType.RECON_MISSING_ENGINE: Severity.HIGH,
    BreakType.RECON_MISSING_LP: Severity.HIGH,
    BreakType.RECON_DIFFERENCE: Severity.HIGH,
    BreakType.POSITION_DRIFT: Severity.HIGH,
    BreakType.SESSION_DOWN: Severity.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Break:
    type: BreakType
    keys: dict[str, str]                 # e.g. session, exec_id, account, currency, value_date
    summary: str
    ours: dict[str, Any] = field(default_factory=dict)     # our side's values
    theirs: dict[str, Any] = field(default_factory=dict)   # the other side's values
    severity: Severity | None = None
    # what the break settles against, for its cut-off (escalations); not part of its id
    value_date: date | None = None
    currencies: tuple[str, ...] = ()

    @property
    def level(self) -> Severity:
        return self.severity or DEFAULT_SEVERITY[self.type]

    @property
    def break_id(self) -> str:
        """Stable: the same type and keys always give the same id."""
        text = self.type.value + "\x01" + "\x01".join(f"{k}={self.keys[k]}" for k in sorted(self.keys))
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def settles(fill: Fill) -> dict[str, Any]:
    """A fill's break's settlement fields (value date, currencies): its
    cut-off drives escalations."""
    return {"value_date": fill.settl_date, "currencies": fill.pair.currencies}


class BreakState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IllegalBreakTransition(ValueError):
    pass


class UnknownBreak(KeyError):
    def __str__(self) -> str:
        return f"unknown break {self.args[0]}"


_NEXT = {("open", "acknowledge"): BreakState.ACKNOWLEDGED,
         ("open", "resolve"): BreakState.RESOLVED,
         ("acknowledged", "resolve"): BreakState.RESOLVED}


def transition(state: str, action: str, by: str, reason: str | None) -> BreakState:
    """open -> acknowledged -> resolved (open -> resolved too); who is required,
    and why for a resolution."""
    if not by.strip():
        raise IllegalBreakTransition("say who (--by)")
    if len(by) > 80:
        raise IllegalBreakTransition("who (--by) is longer than 80 characters")
    if action == "resolve" and not (reason or "").strip():
        raise IllegalBreakTransition("a resolution needs a reason")
    new = _NEXT.get((state, action))
    if new is None:
        raise IllegalBreakTransition(f"cannot {action} a break that is {state}")
    return new


def occurrence_id(break_id: str, occurrence: int) -> str:
    """The id of one occurrence of a break, for its events: the break id for
    the first, break id + ``-<n>`` for the n-th (a resolved break detected
    again), so a consumer that drops repeats by id sees it come back."""
    if occurrence < 1:
        raise ValueError(f"occurrence must be >= 1, not {occurrence}")
    return break_id if occurrence == 1 else f"{break_id}-{occurrence}"


def occurrence_after_detection(state: str, occurrence: int) -> tuple[int, bool]:
    """(occurrence, reopened) of a stored break in ``state`` detected again:
    a resolved one reopens as the next occurrence (state back to open); an
    open or acknowledged one is the same occurrence seen again."""
    if state == BreakState.RESOLVED:
        return occurrence + 1, True
    if state in (BreakState.OPEN, BreakState.ACKNOWLEDGED):
        return occurrence, False
    raise ValueError(f"unknown break state {state!r}")


@dataclass(frozen=True, slots=True)
class StoredBreak:
    """A break as the database holds it (what the lifecycle and the
    escalations read back)."""

    break_id: str
    type: str
    severity: str
    state: str
    keys: dict[str, Any]
    summary: str
    cut_off_us: int | None
    occurrence: int
