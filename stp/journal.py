"""What the journal keeps of an inbound message, and the break a message
the intake refuses raises.  Pure.

The journal keeps every message exactly as its bytes came (``journal_raw``),
readable even when cut short or not UTF-8 (``tolerant_fields``,
``escaped_text``); a refused, conflicting, oversized or poison message is a
break for the desk (``intake_break``), with a stable id.
"""

from __future__ import annotations

from stp.breaks import Break, BreakType
from stp.fills import Fill, NotAFill, Rejection
from stp.inbound import Inbound
from stp.intake import Outcome
from stp.limits import LimitRejection
from stp.marketdata import Quote, QuoteRejection

# what a message parsed into (None: nothing, e.g. a session-level message)
Parsed = Fill | Rejection | NotAFill | Quote | QuoteRejection | None


def intake_break(outcome: Outcome, item: Inbound, fields: dict[int, str], seq: int, reason: str | None,
                  original_hash: str | None, result: Parsed) -> Break:
    """A conflict or a rejected report as a break (stable id: type and keys)."""
    exec_id = fields.get(17)
    if outcome is Outcome.CONFLICT:
        conflicting = result.content_hash if isinstance(result, Fill) else ""
        return Break(BreakType.EXECID_CONFLICT, {"session": item.session, "exec_id": exec_id or ""},
                     f"{item.session} reused ExecID {exec_id} with other content (MsgSeqNum {seq})",
                     ours={"content_hash": original_hash or ""},
                     theirs={"content_hash": conflicting, "seq": seq, "poss_dup": fields.get(43) == "Y"})
    if outcome is Outcome.POISON:
        return Break(BreakType.POISON_MESSAGE, {"session": item.session, "seq": str(seq)},
                     f"{item.session} MsgSeqNum {seq} quarantined: the FIX gateway died on it twice",
                     theirs={"msg_type": fields.get(35, ""), "exec_id": exec_id or "", "size": item.size,
                             "reason": reason or ""})
    if outcome is Outcome.OVERSIZED:
        kept = len(item.raw.encode("utf-8", "surrogateescape"))
        return Break(BreakType.OVERSIZED_REPORT, {"session": item.session, "seq": str(seq)},
                     f"{item.session} MsgSeqNum {seq} ({fields.get(35, '?')}) of {item.size} bytes is over "
                     "max_message_bytes: rejected at session level, not booked",
                     theirs={"msg_type": fields.get(35, ""), "exec_id": exec_id or "", "size": item.size,
                             "journaled_bytes": kept, "reason": reason or ""})
    keys = {"session": item.session, "exec_id": exec_id} if exec_id else \
        {"session": item.session, "seq": str(seq)}
    if isinstance(result, LimitRejection):
        return Break(BreakType.AMOUNT_LIMIT, keys, f"{item.session} MsgSeqNum {seq}: {reason}",
                     ours={"rule": result.rule, "limit": result.limit, "reference_px": result.reference_px},
                     theirs={"msg_type": fields.get(35, ""), "outcome": outcome.value, "reason": reason or "",
                             "symbol": fields.get(55, ""), "currency": fields.get(15, ""),
                             "last_qty": fields.get(32, "")[:60], "last_px": fields.get(31, "")[:60]})
    return Break(BreakType.REJECTED_REPORT, keys, f"{item.session} MsgSeqNum {seq}: {reason}",
                 theirs={"msg_type": fields.get(35, ""), "outcome": outcome.value, "reason": reason or ""})


def escaped_text(raw: str) -> str:
    """A message whose bytes are not all UTF-8 (``raw`` holds them with
    surrogate escapes), as text every field of which can be stored and
    compared: valid UTF-8 as it is, each other byte as ``\\xNN``.  The same
    bytes always give the same text (a resent report dedupes as itself), and
    SOH and '=' are untouched (the fields split the same)."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def journal_raw(item: Inbound) -> tuple[str, str, int, bool]:
    """raw, raw_encoding, raw_size, raw_truncated of a journal row: the
    message's bytes exactly, as UTF-8 text when they are UTF-8, else as
    ISO-8859-1 (one character per byte: ``raw.encode("latin-1")`` gives them
    back)."""
    if item.binary:
        data = item.wire_bytes()
        return data.decode("latin-1"), "latin-1", item.size if item.size >= 0 else len(data), item.truncated
    size = item.size if item.size >= 0 else len(item.raw.encode())
    return item.raw, "utf-8", size, item.truncated


def tolerant_fields(text: str, truncated: bool) -> dict[int, str]:
    """The fields that can be read of a message cut short or otherwise
    suspect: every complete tag=value with a numeric tag, first occurrence."""
    if truncated:
        text = text[:text.rfind("\x01") + 1]
    out: dict[int, str] = {}
    for part in text.split("\x01"):
        tag, eq, value = part.partition("=")
        if eq and tag.isdigit() and int(tag) not in out:
            out[int(tag)] = value
    return out


def message_seq(fields: dict[int, str] | None, kind: str) -> int:
    if fields is None:
        return 0
    text = fields.get(45 if kind == "session_reject" else 34, "0")
    return int(text) if text.isdigit() else 0
