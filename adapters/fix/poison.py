"""Poison messages: an inbound message that kills the FIX gateway each time
it is delivered would stop its session for good (the engine restarts the
gateway from the committed sequence number, the counterparty resends the
same message, the gateway dies again).

The engine knows what it committed per session.  ``PoisonWatch`` remembers,
for every gateway that dies, each session's committed MsgSeqNum and the last
message quickfix received from that session's counterparty before the death
(quickfix writes every inbound message to its message log, and flushes it,
before it parses or delivers it: so the message a gateway died on is the
last one it logged from that counterparty).  When a gateway dies twice in a
row with the same session's committed MsgSeqNum unchanged and the same
uncommitted application message last received both times, that message is
the suspect: its raw text (byte-exact, from the log) is journaled as
``poison``, its MsgSeqNum committed, a ``poison_message`` break raised, and
the next gateway resumes after it, so the session goes on.

One death alone never quarantines anything (a gateway killed from outside
once is restarted as before); a session that received nothing, or whose
last received message was committed, or an administrative message, has no
suspect.  Without quickfix's message log (``FileLogPath``) nothing can be
recovered and nothing is quarantined.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.config import EngineConfig, SessionSpec
from stp.inbound import MessageKind

ADMIN_MSG_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})
# ExecutionReport, TradeCaptureReport, MarketDataSnapshotFullRefresh (what fromApp hands over as "app")
SUPPORTED_APP_TYPES = frozenset({"8", "AE", "W"})
TAIL_MIN = 16 * 1024 * 1024           # how much of a log's end is searched for the last message (> the cap)
SEGMENT_MAX = 256 * 1024 * 1024       # how much of a short-lived gateway's log is read for the rest
# quickfix's FileLog: "<UTC timestamp> : <message>\n" (a message may hold a newline itself)
_ENTRY = re.compile(rb"(?m)^(\d{8}-\d{2}:\d{2}:\d{2}(?:\.\d+)?) : ")


def session_file_prefix(spec: SessionSpec) -> str:
    """How quickfix names a session's files (FileLog, FileStore):
    BeginString-SenderCompID-TargetCompID."""
    return f"{spec.begin_string}-{spec.sender_comp_id}-{spec.target_comp_id}"


def messages_log(cfg: EngineConfig, spec: SessionSpec) -> Path:
    """quickfix's message log of a session."""
    return cfg.quickfix_dir / "log" / f"{session_file_prefix(spec)}.messages.current.log"


@dataclass(frozen=True, slots=True)
class Logged:
    """One message from quickfix's message log."""

    seq: int
    msg_type: str
    raw: bytes                    # the message's bytes as received
    logged_at: float | None       # the log's timestamp (seconds since the epoch)
    sender: str = ""              # its SenderCompID

    def field(self, tag: int) -> str | None:
        value = _field(self.raw, str(tag).encode())
        return None if value is None else value.decode("latin-1")


def _field(raw: bytes, tag: bytes) -> bytes | None:
    start = raw.find(b"\x01" + tag + b"=")
    if start < 0:
        return None
    start += len(tag) + 2
    end = raw.find(b"\x01", start)
    return raw[start:end if end >= 0 else len(raw)]


def _timestamp(text: bytes) -> float | None:
    try:
        whole = datetime.strptime(text[:17].decode(), "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    fraction = text[18:] if len(text) > 18 else b"0"
    return whole.timestamp() + float(b"0." + fraction)


def read_log(path: Path, since: int, tail: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError:
        return b""
    if size < since:
        since = 0                      # the log was replaced meanwhile: all of it is new
    start = max(since, size - tail)
    with path.open("rb") as f:
        f.seek(start)
        return f.read(size - start)


def log_entries(data: bytes) -> list[Logged]:
    starts = list(_ENTRY.finditer(data))
    out: list[Logged] = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() - 1 if i + 1 < len(starts) else len(data)
        raw = data[match.end():end].rstrip(b"\n")
        seq = _field(raw, b"34")
        if not raw.startswith(b"8=") or seq is None or not seq.isdigit():
            continue
        out.append(Logged(int(seq), (_field(raw, b"35") or b"").decode("latin-1"), raw,
                          _timestamp(match.group(1)), (_field(raw, b"49") or b"").decode("latin-1")))
    return out


def last_received(path: Path, since: int, sender_comp_id: str, tail: int = TAIL_MIN) -> Logged | None:
    """The last message in a quickfix message log, at or after byte ``since``,
    whose SenderCompID is ``sender_comp_id`` (what the counterparty sent us),
    searched in the log's last ``tail`` bytes."""
    for entry in reversed(log_entries(read_log(path, since, tail))):
        if entry.sender == sender_comp_id:
            return entry
    return None


def received_before(path: Path, since: int, spec: SessionSpec, committed: int, seq: int,
                    tail: int) -> list[tuple[MessageKind, Logged]] | None:
    """What the dead gateway received from the counterparty after the
    committed MsgSeqNum and before the suspect ``seq`` (quickfix processed
    them, but their frames died with the gateway), as (kind, message) for
    the intake: "app", "unsupported" (quickfix answered with a
    BusinessMessageReject) or "session_reject" (quickfix rejected it: the
    Reject it sent, as when the gateway journals it).  None when a MsgSeqNum
    in between is not in the log: then nothing may be committed past it."""
    entries = log_entries(read_log(path, since, tail))
    theirs: dict[int, Logged] = {}
    covered: set[int] = set()
    rejects: dict[int, Logged] = {}
    for entry in entries:
        if entry.sender == spec.target_comp_id:
            theirs[entry.seq] = entry
            covered.add(entry.seq)
            new_seq = entry.field(36) if entry.msg_type == "4" else None
            if new_seq is not None and new_seq.isdigit():
                covered.update(range(entry.seq, int(new_seq)))
        elif entry.sender == spec.sender_comp_id and entry.msg_type == "3":
            ref = entry.field(45)
            if ref is not None and ref.isdigit():
                rejects[int(ref)] = entry
    if any(n not in covered for n in range(committed + 1, seq)):
        return None
    out: list[tuple[MessageKind, Logged]] = []
    for n in range(committed + 1, seq):
        got = theirs.get(n)
        if got is None or got.msg_type in ADMIN_MSG_TYPES:
            continue
        if n in rejects:
            out.append(("session_reject", rejects[n]))
        else:
            out.append(("app" if got.msg_type in SUPPORTED_APP_TYPES else "unsupported", got))
    return out


@dataclass(frozen=True, slots=True)
class Suspect:
    session: str
    seq: int
    message: Logged
    # what quickfix processed before it and the engine never received
    before: tuple[tuple[MessageKind, Logged], ...] = ()


@dataclass(frozen=True, slots=True)
class _Death:
    committed: int
    last: Logged | None


class PoisonWatch:
    """Per session: where its message log ended when the current gateway
    started, and what the previous gateway's death left."""

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self._offsets: dict[str, int] = {}
        self._previous: dict[str, _Death] = {}
        # suspects not quarantined: a MsgSeqNum before them is missing from the log
        self.unrecoverable: list[tuple[str, int]] = []

    def started(self) -> None:
        """Call just before a gateway starts: its log entries come after this."""
        for spec in self.cfg.sessions:
            try:
                self._offsets[spec.name] = os.stat(messages_log(self.cfg, spec)).st_size
            except OSError:
                self._offsets[spec.name] = 0

    def died(self, committed: dict[str, int]) -> list[Suspect]:
        """Call once the intake has committed what the dead gateway delivered:
        the sessions' messages that killed it twice."""
        suspects: list[Suspect] = []
        for spec in self.cfg.sessions:
            last = last_received(messages_log(self.cfg, spec), self._offsets.get(spec.name, 0),
                                 spec.target_comp_id)
            done = committed.get(spec.name, 0)
            now = _Death(done, last)
            before = self._previous.get(spec.name)
            self._previous[spec.name] = now
            if (before is not None and last is not None and before.last is not None
                    and before.committed == done and last.seq == before.last.seq and last.seq > done
                    and last.msg_type not in ADMIN_MSG_TYPES):
                earlier = received_before(messages_log(self.cfg, spec), self._offsets.get(spec.name, 0), spec,
                                          done, last.seq, SEGMENT_MAX)
                if earlier is None:
                    self.unrecoverable.append((spec.name, last.seq))
                    continue
                suspects.append(Suspect(spec.name, last.seq, before.last, tuple(earlier)))
                del self._previous[spec.name]      # two more deaths before the next suspect
        return suspects
