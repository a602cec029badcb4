"""Intake decisions: what becomes of each inbound application message.

Pure.  The dedupe key is (session, ExecID); the first report under a key is
accepted, the same content again is a duplicate (ignored and counted), other
content is a conflict (kept beside the original, never overwriting it).
"""

from __future__ import annotations

from enum import StrEnum


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
