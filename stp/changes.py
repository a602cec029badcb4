"""What one post-trade batch changes, as typed values: what it books, what it
moves, what it raises and what it publishes, committed in one transaction.

The stages fill a ``BatchChanges`` with domain values (a ``Booking``, a
``Position``, an ``Instruction``, a ``Break``, a ``BusEvent``); the database
adapter (``adapters.db.posttrade``) is the one place that turns each into
its row.  Upserted things keep the batch's last value per key (a position
moved twice in a batch is written once, as it ended); insert-only things
(bookings, postings, margin events) have keys of their own.

The break bookkeeping here is what ``adapters.db.posttrade`` needs to give a
break detected again after it was resolved its next occurrence, and to let
the engine resolve a break in the same write that detects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from stp.booking import Booking
from stp.breaks import Break
from stp.events import BusEvent
from stp.fills import Fill
from stp.margin import AccountMargin, MarginEvent
from stp.netting import NetKey
from stp.positions import Position
from stp.settlement import Instruction

# the state a confirmation row records for a fill
ConfirmationState = Literal["received", "confirmed", "mismatched", "unmatched"]
# a break's lifecycle state as the desk (or the engine) sets it
LifecycleState = Literal["acknowledged", "resolved"]


@dataclass(frozen=True, slots=True)
class Booked:
    """A booking as the ledger records it: its sequence number, the fill it
    books (None for a cash movement or an allocation), the id of its first
    posting (the others follow), when, and who allocated it."""

    booking: Booking
    seq: int
    fill_id: int | None
    first_posting_id: int
    at_us: int
    by: str | None = None


@dataclass(frozen=True, slots=True)
class FieldDifference:
    field: str
    lp: object              # the values as the two sides gave them
    platform: object


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A fill's confirmation state: its differences with the counterpart
    (mismatched), or the break that ended its wait (``expired_by``)."""

    fill_id: int
    session: str
    exec_id: str
    state: ConfirmationState
    differences: tuple[FieldDifference, ...] = ()
    expired_by: str | None = None
    at_us: int = 0


@dataclass(frozen=True, slots=True)
class Detected:
    """A break raised by this batch; ``cut_off_us``: the settlement cut-off of
    its value date, if it has one (escalation)."""

    brk: Break
    cut_off_us: int | None
    at_us: int


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """The desk's (or the engine's) change of a stored break's state."""

    break_id: str
    state: LifecycleState
    by: str | None
    at_us: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection of a break, and the outbox entry that publishes it (the
    store re-issues its event when the stored break is on a later occurrence)."""

    outbox_key: object
    brk: Break
    prefix: str
    at_us: int


@dataclass(frozen=True, slots=True)
class EngineResolution:
    """A break the engine resolves itself (its cause is gone)."""

    brk: Break
    by: str
    reason: str
    prefix: str
    at_us: int


@dataclass(frozen=True, slots=True)
class MarkingFills:
    """What a pair's committed fills say of its price at a start: the latest
    LP fill that booked and was not off-market (it marked the pair), and the
    latest such trade (confirmation's reference price; None: none yet)."""

    mark: Fill
    trade: Fill | None


@dataclass(slots=True)
class BatchChanges:
    """Everything one batch changes, written in one transaction."""

    bookings: dict[str, Booked] = field(default_factory=dict)
    positions: dict[tuple[str, str], tuple[Position, int]] = field(default_factory=dict)
    # (account, pair, value date) -> the quantity for that value date
    dated: dict[tuple[str, str, date], Decimal] = field(default_factory=dict)
    nets: dict[NetKey, tuple[Decimal, int]] = field(default_factory=dict)
    instructions: dict[str, Instruction] = field(default_factory=dict)
    breaks: dict[str, Detected] = field(default_factory=dict)
    confirmations: dict[int, Confirmation] = field(default_factory=dict)
    margins: dict[str, tuple[AccountMargin, int]] = field(default_factory=dict)
    margin_events: dict[int, tuple[MarginEvent, int]] = field(default_factory=dict)
    # events for the bus, committed with what they describe (transactional outbox)
    outbox: dict[object, tuple[BusEvent, int]] = field(default_factory=dict)
    inbox_done: list[tuple[int, str]] = field(default_factory=list)    # (id, result)
    inbox_replies: dict[int, str] = field(default_factory=dict)        # id -> the reply published
    lifecycle: list[LifecycleChange] = field(default_factory=list)
    # break id -> its state after this batch's changes (a tick of N commands
    # looked them up by scanning the changes: N^2/2)
    changed_state: dict[str, str] = field(default_factory=dict)
    escalated: list[tuple[int, str]] = field(default_factory=list)     # (stamp, break_id)
    # break id -> its detections: a resolved break detected again reopens as
    # its next occurrence, with events of its own
    detected: dict[str, list[Detection]] = field(default_factory=dict)
    # breaks the engine resolves itself, and their ids (a detection of one of
    # them in the same write is dropped)
    resolved: list[EngineResolution] = field(default_factory=list)
    resolving: set[str] = field(default_factory=set)
    cursor: int | None = None

    def change_break(self, change: LifecycleChange) -> None:
        self.lifecycle.append(change)
        self.changed_state[change.break_id] = change.state

    def publish(self, event: BusEvent, stamp_us: int) -> object:
        """Queue a bus event (its key in the outbox is returned); retained
        topics keep only the batch's last state."""
        outbox = self.outbox
        key: object = event.topic if event.retain else (event.event_id, len(outbox))
        outbox[key] = (event, stamp_us)
        return key

    def extent(self) -> tuple[int, ...]:
        """How much this holds: a command that refuses (raises before writing
        anything) leaves it as it was; one whose failure changes it failed
        halfway."""
        return (len(self.bookings), len(self.positions), len(self.dated), len(self.nets),
                len(self.instructions), len(self.breaks), len(self.confirmations), len(self.margins),
                len(self.margin_events), len(self.outbox), len(self.lifecycle), len(self.resolved),
                len(self.detected), len(self.inbox_replies))

    def __bool__(self) -> bool:
        return bool(self.bookings or self.positions or self.dated or self.nets or self.instructions
                    or self.breaks or self.confirmations or self.margins or self.margin_events
                    or self.outbox or self.inbox_done or self.lifecycle or self.escalated
                    or self.resolved) or self.cursor is not None
