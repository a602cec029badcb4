"""Intake decisions: what becomes of each inbound application message.

Pure.  The dedupe key is (session, ExecID); the first report under a key is
accepted, the same content again is a duplicate (ignored and counted), other
content is a conflict (kept beside the original, never overwriting it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from stp.fills import Fill
from stp.marketdata import Quote

if TYPE_CHECKING:
    from stp.changes import BatchChanges


class Outcome(StrEnum):
    ACCEPTED = "accepted"              # a new execution: stored as a fill
    DUPLICATE = "duplicate"            # same key, same content: ignored
    CONFLICT = "conflict"              # same key, other content: kept, flagged
    DONT_KNOW = "dont_know"            # cannot become a fill: DontKnowTrade sent
    NOT_A_FILL = "not_a_fill"          # a valid report that is not a trade
    MARKET_DATA = "market_data"        # a usable quote (35=W): the pair's latest price
    BUSINESS_REJECT = "business_reject"  # unsupported message type or unusable quote: BMR sent
    SESSION_REJECT = "session_reject"  # failed session-level validation: Reject sent
    UNPARSEABLE = "unparseable"        # could not be read back (should not happen)
    OVERSIZED = "oversized"            # over [engine] max_message_bytes: session Reject sent, kept truncated
    POISON = "poison"                  # the FIX gateway died on it twice: quarantined, sequence moved past it


REJECTED = frozenset({Outcome.DONT_KNOW, Outcome.BUSINESS_REJECT, Outcome.SESSION_REJECT})


def dedupe(content_hash: str, known_hash: str | None) -> Outcome:
    if known_hash is None:
        return Outcome.ACCEPTED
    return Outcome.DUPLICATE if known_hash == content_hash else Outcome.CONFLICT


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One inbound message as the journal keeps it, whatever became of it:
    its bytes exactly (``raw`` in ``raw_encoding``: UTF-8, or ISO-8859-1 for
    bytes that are not UTF-8), their true size, and the outcome."""

    journal_id: int
    session: str
    seq: int
    msg_type: str
    received_us: int
    poss_dup: bool
    exec_id: str | None
    outcome: str          # an Outcome's value, or the gateway's kind for what has none
    reason: str | None
    raw: str
    raw_encoding: str
    raw_size: int
    raw_truncated: bool


@dataclass(frozen=True, slots=True)
class Conflict:
    """A report that reused a stored (session, ExecID) with other content."""

    conflict_id: int
    journal_id: int
    session: str
    exec_id: str
    original_hash: str
    conflicting_hash: str
    received_us: int


@dataclass(slots=True)
class IntakeBatch:
    """What one intake batch commits in one transaction: the journal, the
    accepted fills (fill id, journal id, fill), conflicts, each session's
    sequence state, the latest quote per pair, and the batch's breaks."""

    journal: list[JournalEntry] = field(default_factory=list)
    fills: list[tuple[int, int, Fill]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)   # session -> last committed seq
    resets: set[str] = field(default_factory=set)            # sessions whose sequence restarted
    breaks: BatchChanges | None = None      # break rows and outbox events, same transaction
    session_days: dict[str, str | None] = field(default_factory=dict)  # session -> day of its last_seq
    status: dict[str, dict[str, Any]] = field(default_factory=dict)   # session -> status columns
    resets_applied: list[dict[str, Any]] = field(default_factory=list)  # session_resets rows done
    # symbol -> its latest quote, journal id and receive time
    prices: dict[str, tuple[Quote, int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.journal)


@dataclass(slots=True)
class IntakeState:
    next_journal_id: int
    next_fill_id: int
    next_conflict_id: int
    last_seq: dict[str, int]
    session_days: dict[str, str | None] = field(default_factory=dict)   # the day each last_seq is in
    updated_us: dict[str, int] = field(default_factory=dict)            # when it was committed
    pending_outbound: dict[str, int] = field(default_factory=dict)      # set by ops with no engine
