"""Messages quickfix drops before the application sees them: its CheckSum
overflows.

quickfix adds a message's bytes up in a signed ``int`` (``FieldMap::
calculateTotal``): past 2^31 (a 17.9 MB Text of ``x``, 8.4 MB of bytes
0xFF) the sum it computes is negative, never the CheckSum the message
carries, and it discards the message as invalid ("Invalid message: Expected
CheckSum=49, Received CheckSum=-207" in its event log) and asks for it
again: the counterparty resends it, it is discarded again, for as long as
the session lasts, and every copy is written to the message log.  ``fromApp``
never sees it, so the size cap there cannot answer it.

``ChecksumOverflowWatch`` (a thread of the gateway process) reads each
session's quickfix event log for that signature (a negative received
CheckSum: no message that is merely garbled produces one).  When the latest
copy quickfix logged of the MsgSeqNum the session expects is over
``max_message_bytes``, it does what ``fromApp`` does
with an oversized message: hands the engine its first bytes with its true
size (``oversized``), sends the counterparty a session Reject (373=5, the
RefTagID of its largest field), and moves the session's expected MsgSeqNum
past it, so the session goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from adapters.config import EngineConfig, SessionSpec
from adapters.fix.pipe import message_bytes_frame
from adapters.fix.poison import Logged, log_entries, messages_log, read_log, session_file_prefix

log = structlog.get_logger("engine.fix")

SIGNATURE = b"Received CheckSum=-"
SEARCH_MAX = 64 * 1024 * 1024        # the message log's end searched for the message (bigger ones: missed)


def event_log(cfg: EngineConfig, spec: SessionSpec) -> Path:
    return cfg.quickfix_dir / "log" / f"{session_file_prefix(spec)}.event.current.log"


def largest_field_tag(raw: bytes) -> int:
    """The tag of the longest field of a message (what made it oversized):
    the RefTagID of its Reject."""
    best, tag = -1, 0
    for part in raw.split(b"\x01"):
        if len(part) > best:
            number = part.split(b"=", 1)[0]
            if number.isdigit():
                best, tag = len(part), int(number)
    return tag


class ChecksumOverflowWatch:
    def __init__(self, cfg: EngineConfig, session_ids: dict[str, Any], put: Callable[[bytes], None],
                 interval: float = 0.5) -> None:
        self.cfg = cfg
        self.session_ids = session_ids            # name -> quickfix.SessionID (filled by onCreate)
        self.put = put
        self.interval = interval
        self.answered = 0
        self._offsets: dict[str, int] = {}
        for spec in cfg.sessions:
            try:
                self._offsets[spec.name] = event_log(cfg, spec).stat().st_size
            except OSError:
                self._offsets[spec.name] = 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="checksum-overflow-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            for index, spec in enumerate(self.cfg.sessions):
                try:
                    self.check(index, spec)
                except Exception:
                    log.exception("fix_overflow_watch_error", session=spec.name)

    def check(self, index: int, spec: SessionSpec) -> bool:
        path = event_log(self.cfg, spec)
        try:
            size = path.stat().st_size
        except OSError:
            return False
        since = self._offsets.get(spec.name, 0)
        if size < since:
            since = 0
        if size == since:
            return False
        with path.open("rb") as f:
            f.seek(since)
            new = f.read(size - since)
        self._offsets[spec.name] = size
        if SIGNATURE not in new:
            return False
        import quickfix as fix

        session_id = self.session_ids.get(spec.name)
        session = fix.Session.lookupSession(session_id) if session_id is not None else None
        if session is None:
            return False
        expected = session.getExpectedTargetNum()
        cap = self.cfg.max_message_bytes
        entry = discarded(messages_log(self.cfg, spec), spec.target_comp_id, expected, cap)
        if entry is not None:
            tag = largest_field_tag(entry.raw) or 58
            self.put(message_bytes_frame("oversized", index, int(time.time() * 1_000_000), entry.raw, cap))
            session.setNextTargetMsgSeqNum(expected + 1)
            reject = fix.Message()
            reject.getHeader().setField(fix.MsgType("3"))
            for field, value in ((45, str(entry.seq)), (372, entry.msg_type), (373, "5"), (371, str(tag)),
                                 (58, f"message of {len(entry.raw)} bytes is over the limit of {cap}")):
                reject.setField(field, value)
            fix.Session.sendToTarget(reject, session_id)
            self.answered += 1
            log.warning("fix_message_oversized", session=spec.name, seq=entry.seq, size=len(entry.raw),
                        max_message_bytes=cap, ref_tag=tag,
                        note="quickfix's CheckSum overflowed: it had discarded the message")
            return True
        return False


def discarded(path: Path, sender_comp_id: str, expected: int, cap: int) -> Logged | None:
    """The latest copy in a quickfix message log of the MsgSeqNum a session
    expects from ``sender_comp_id``, if it is over the size cap (what quickfix
    discarded when its CheckSum overflowed)."""
    for entry in reversed(log_entries(read_log(path, 0, SEARCH_MAX))):
        if entry.sender == sender_comp_id and entry.seq == expected:
            return entry if len(entry.raw) > cap else None
    return None

