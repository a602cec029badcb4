"""Settlement instructions per net: pending -> instructed -> settled | failed.

One instruction per net key (counterparty, currency, value date), amount
positive = we receive, negative = we pay.  ``SettlementBook`` is a pure state
machine: time is passed in, reference data (cut-offs, SSIs) too.

Rules
-----
* Before its instruction goes out, a key's PENDING instruction follows the
  net.  What decides is the state, not the clock: a net change after the
  cut-off time but before ``run_cut_offs`` has instructed the key is still
  taken into the (not yet sent) instruction.
* ``run_cut_offs(now, reference)`` instructs every PENDING instruction whose
  cut-off has passed and whose amount is not zero, with the counterparty's
  SSI for the currency valid on the value date.  A zero net is never
  instructed (it stays PENDING with 0).  No SSI: it stays PENDING and a
  ``SSI_MISSING`` break is returned (again at each run, same break id).
* Once an instruction of the key went out (INSTRUCTED, SETTLED or FAILED),
  a net change is an ``AFTER_CUT_OFF`` break (ours = amount already
  instructed, theirs = new net) and the difference is carried by a new
  PENDING instruction of the same key, ``version`` n+1, ``adjustment=True``.
  The sent instruction is never changed: a payment already released cannot
  be amended in place, so the difference is a separate payment.  As its
  cut-off has passed, the next ``run_cut_offs`` instructs it (late).  Further
  changes before then move that adjustment, not a new one.
* Invariant: for every key, the amounts of all its instructions add up to
  the last net seen, at most one instruction is PENDING and it is the latest
  version.  A FAILED instruction counts as instructed: re-instructing a
  failed payment is an operations decision, taken on the break.

``version`` numbers the instructions (payments) of a key: 1 is the net,
2.. are adjustments.  State changes keep the version and return new objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal
from zoneinfo import ZoneInfo

from stp.breaks import Break, BreakType
from stp.calendars import UnknownCalendar, calendar_for
from stp.netting import NetChange, NetKey, exact_context, nonnegative_zero
from stp.reference import CutOff, ReferenceData, Ssi

__all__ = [
    "Direction",
    "IllegalTransition",
    "Instruction",
    "InstructionState",
    "SettlementBook",
    "break_cut_off",
    "cut_off_time",
]

_ZERO: Final = Decimal(0)


class IllegalTransition(ValueError):
    """A state change the instruction lifecycle does not allow."""


class InstructionState(StrEnum):
    PENDING = "pending"
    INSTRUCTED = "instructed"
    SETTLED = "settled"
    FAILED = "failed"


class Direction(StrEnum):
    RECEIVE = "receive"
    PAY = "pay"


def _aware(at: datetime, name: str = "now") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {at.isoformat()}")
    return at


@dataclass(frozen=True, slots=True)
class Instruction:
    """One settlement payment of a net key (as instructed once INSTRUCTED)."""

    key: NetKey
    amount: Decimal                       # positive: we receive; negative: we pay
    state: InstructionState = InstructionState.PENDING
    version: int = 1                      # 1: the net; 2..: adjustments after cut-off
    adjustment: bool = False
    ssi: Ssi | None = None
    instructed_at: datetime | None = None
    settled_at: datetime | None = None
    failed_at: datetime | None = None
    failure_reason: str | None = None
    updated_at: datetime | None = None

    @property
    def direction(self) -> Direction | None:
        """RECEIVE or PAY; None for a zero amount (never instructed)."""
        if self.amount > 0:
            return Direction.RECEIVE
        if self.amount < 0:
            return Direction.PAY
        return None

    @property
    def instruction_id(self) -> str:
        """Stable reference: ``LP1/EUR/2026-04-07/v1``."""
        return f"{self.key}/v{self.version}"

    def _illegal(self, action: str) -> IllegalTransition:
        return IllegalTransition(
            f"cannot {action} instruction {self.instruction_id}: it is {self.state.value}"
        )

    def with_amount(self, amount: Decimal, at: datetime) -> Instruction:
        """PENDING only: the instruction follows the net."""
        if self.state is not InstructionState.PENDING:
            raise self._illegal("change the amount of")
        return replace(self, amount=nonnegative_zero(amount), updated_at=at)

    def instruct(self, ssi: Ssi, at: datetime) -> Instruction:
        """PENDING -> INSTRUCTED (a zero amount is never instructed)."""
        if self.state is not InstructionState.PENDING:
            raise self._illegal("instruct")
        if self.amount.is_zero():
            raise IllegalTransition(f"cannot instruct {self.instruction_id}: the amount is zero")
        return replace(
            self, state=InstructionState.INSTRUCTED, ssi=ssi, instructed_at=at, updated_at=at
        )

    def settle(self, at: datetime) -> Instruction:
        """INSTRUCTED -> SETTLED."""
        if self.state is not InstructionState.INSTRUCTED:
            raise self._illegal("settle")
        return replace(self, state=InstructionState.SETTLED, settled_at=at, updated_at=at)

    def fail(self, at: datetime, reason: str | None = None) -> Instruction:
        """INSTRUCTED -> FAILED."""
        if self.state is not InstructionState.INSTRUCTED:
            raise self._illegal("fail")
        return replace(
            self, state=InstructionState.FAILED, failed_at=at, failure_reason=reason, updated_at=at
        )


def cut_off_time(value_date: date, currency: str, cut_off: CutOff) -> datetime:
    """When the net of ``currency`` for ``value_date`` is instructed, in UTC.

    ``cut_off.days_before`` business days before the value date, counted on
    the currency's own settlement calendar (TARGET for EUR, the Fed for USD),
    at ``cut_off.at`` local time in ``cut_off.timezone``.  Local wall-clock
    time: 16:00 London is 15:00 UTC in summer, 16:00 UTC in winter.
    Raises UnknownCalendar for a currency without a calendar.
    """
    if cut_off.days_before < 0:
        raise ValueError(f"days_before must be >= 0, got {cut_off.days_before}")
    day = calendar_for(currency).add_business_days(value_date, -cut_off.days_before)
    local = datetime.combine(day, cut_off.at, tzinfo=ZoneInfo(cut_off.timezone))
    return local.astimezone(UTC)


def break_cut_off(brk: Break, reference: ReferenceData) -> datetime | None:
    """The earliest settlement cut-off among the currencies a break concerns
    on its value date (None without a value date or a known calendar): an
    unresolved break is escalated when that moment comes near."""
    if brk.value_date is None:
        return None
    times = []
    for currency in brk.currencies:
        try:
            times.append(cut_off_time(brk.value_date, currency, reference.cut_off(currency)))
        except UnknownCalendar:
            continue
    return min(times) if times else None


def _keys(key: NetKey) -> dict[str, str]:
    return {
        "counterparty": key.counterparty,
        "currency": key.currency,
        "value_date": key.value_date.isoformat(),
    }


class SettlementBook:
    """Settlement instructions of all net keys; a pure state machine.

    Rebuild from stored instructions with ``SettlementBook(instructions)``.
    """

    __slots__ = ("_by_key",)

    def __init__(self, instructions: Iterable[Instruction] = ()) -> None:
        self._by_key: dict[NetKey, list[Instruction]] = {}
        for ins in sorted(instructions, key=lambda i: (i.key, i.version)):
            self._by_key.setdefault(ins.key, []).append(ins)
        for key, history in self._by_key.items():
            if [i.version for i in history] != list(range(1, len(history) + 1)):
                raise ValueError(f"{key}: instruction versions are not 1..{len(history)}")
            if any(i.state is InstructionState.PENDING for i in history[:-1]):
                raise ValueError(f"{key}: only the latest instruction may be pending")

    # -- queries -------------------------------------------------------------

    def instructions(self, value_date: date | None = None) -> list[Instruction]:
        """All instructions (every version), sorted by key and version."""
        return [
            ins
            for key in sorted(self._by_key)
            if value_date is None or key.value_date == value_date
            for ins in self._by_key[key]
        ]

    def history(self, key: NetKey) -> tuple[Instruction, ...]:
        """The instructions of ``key``, version 1 first."""
        return tuple(self._by_key.get(key, ()))

    def net(self, key: NetKey) -> Decimal:
        """The last net seen for ``key``: the sum of its instructions' amounts."""
        ctx = exact_context()
        total = _ZERO
        for ins in self._by_key.get(key, ()):
            total = ctx.add(total, ins.amount)
        return nonnegative_zero(total)

    # -- net changes ---------------------------------------------------------

    def on_net_changes(self, changes: Iterable[NetChange], now: datetime) -> list[Break]:
        """``on_net_change`` for each of a batch's changes (``NetBook.take_changes``)."""
        breaks: list[Break] = []
        for change in changes:
            breaks.extend(self.on_net_change(change.key, change.after, now))
        return breaks

    def on_net_change(self, key: NetKey, new_net: Decimal, now: datetime) -> list[Break]:
        """The net of ``key`` is now ``new_net``; returns an AFTER_CUT_OFF break
        if an instruction of the key already went out."""
        _aware(now)
        ctx = exact_context()
        new_net = nonnegative_zero(new_net)
        if new_net == self.net(key):
            return []
        history = self._by_key.setdefault(key, [])
        sent = [i for i in history if i.state is not InstructionState.PENDING]
        instructed = _ZERO
        for ins in sent:
            instructed = ctx.add(instructed, ins.amount)
        remainder = nonnegative_zero(ctx.subtract(new_net, instructed))
        if history and history[-1].state is InstructionState.PENDING:
            history[-1] = history[-1].with_amount(remainder, now)
        else:  # nothing yet, or everything sent: a new (adjustment) instruction
            history.append(
                Instruction(
                    key,
                    remainder,
                    version=len(history) + 1,
                    adjustment=bool(history),
                    updated_at=now,
                )
            )
        if not sent:
            return []
        pending = history[-1]
        return [
            Break(
                BreakType.AFTER_CUT_OFF,
                _keys(key),
                f"net {key} changed to {new_net} after {instructed} was instructed; "
                f"adjustment {pending.instruction_id} of {pending.amount} pending",
                ours={
                    "instructed": str(instructed),
                    "versions": [i.version for i in sent],
                },
                theirs={"net": str(new_net), "adjustment": str(pending.amount)},
                value_date=key.value_date, currencies=(key.currency,),
            )
        ]

    # -- cut-offs --------------------------------------------------------------

    def run_cut_offs(
        self, now: datetime, reference: ReferenceData
    ) -> tuple[list[Instruction], list[Break]]:
        """Instruct every non-zero PENDING instruction whose cut-off has passed.

        Returns the instructions that went out (now INSTRUCTED) and the
        SSI_MISSING breaks of those that could not (they stay PENDING).
        """
        _aware(now)
        instructed: list[Instruction] = []
        breaks: list[Break] = []
        for key in sorted(self._by_key):
            history = self._by_key[key]
            pending = history[-1]
            if pending.state is not InstructionState.PENDING or pending.amount.is_zero():
                continue
            if now < cut_off_time(key.value_date, key.currency, reference.cut_off(key.currency)):
                continue
            counterparty = reference.counterparties.get(key.counterparty)
            ssi = counterparty.ssi(key.currency, on=key.value_date) if counterparty else None
            if ssi is None:
                why = (
                    "unknown counterparty"
                    if counterparty is None
                    else f"no {key.currency} SSI valid on {key.value_date.isoformat()}"
                )
                breaks.append(
                    Break(
                        BreakType.SSI_MISSING,
                        _keys(key),
                        f"cannot instruct {pending.instruction_id} ({pending.amount}): {why}",
                        ours={"amount": str(pending.amount), "version": pending.version},
                        theirs={"ssi": None},
                        value_date=key.value_date, currencies=(key.currency,),
                    )
                )
                continue
            history[-1] = pending.instruct(ssi, now)
            instructed.append(history[-1])
        return instructed, breaks

    # -- settlement status -----------------------------------------------------

    def apply_status(
        self,
        key: NetKey,
        status: Literal["settled", "failed"],
        at: datetime,
        reason: str | None = None,
        *,
        version: int | None = None,
    ) -> list[Break]:
        """INSTRUCTED -> SETTLED, or -> FAILED with a critical SETTLEMENT_FAILED break.

        ``version`` selects the instruction; without it, the key's only
        INSTRUCTED one (or, if none is, the latest, which then fails the
        transition).  Repeating the status an instruction already has is a
        no-op (a duplicate status report).  Raises IllegalTransition for an
        unknown key or version, several INSTRUCTED candidates, or a transition
        the lifecycle does not allow; ValueError for an unknown status.
        """
        _aware(at, "at")
        if status not in ("settled", "failed"):
            raise ValueError(f"unknown settlement status {status!r} (settled or failed)")
        history = self._by_key.get(key)
        if not history:
            raise IllegalTransition(f"cannot mark {key} {status}: no instruction for this key")
        if version is not None:
            if not 1 <= version <= len(history):
                raise IllegalTransition(f"cannot mark {key} {status}: no version {version}")
            index = version - 1
        else:
            out = [n for n, i in enumerate(history) if i.state is InstructionState.INSTRUCTED]
            if len(out) > 1:
                versions = ", ".join(str(history[n].version) for n in out)
                raise IllegalTransition(
                    f"cannot mark {key} {status}: versions {versions} are instructed, pass version"
                )
            index = out[0] if out else len(history) - 1
        current = history[index]
        if current.state.value == status:
            return []
        if status == "settled":
            history[index] = current.settle(at)
            return []
        history[index] = failed = current.fail(at, reason)
        return [
            Break(
                BreakType.SETTLEMENT_FAILED,
                {**_keys(key), "version": str(failed.version)},
                f"settlement of {failed.instruction_id} ({failed.amount}) failed: "
                f"{reason or 'no reason given'}",
                ours={
                    "amount": str(failed.amount),
                    "ssi_version": failed.ssi.version if failed.ssi else None,
                },
                theirs={"status": "failed", "reason": reason},
                value_date=key.value_date, currencies=(key.currency,),
            )
        ]
