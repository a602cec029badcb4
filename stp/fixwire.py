"""FIX tag=value framing, parsing and encoding.

The stream framer finds messages in a byte stream the way QuickFIX does
(``8=`` then ``9=`` then the body length, then the ``10=`` trailer) and then
checks what simplefix does not: BodyLength and CheckSum must be exact, the
first three tags must be 8, 9, 35, tags must be integers.  A frame that fails
is reported as garbled and skipped.  Input is bounded: a declared length over
``max_message_size`` or a buffer that grows past it without a trailer is
dropped and the framer resynchronises on the next ``8=``; it never stalls or
grows without limit, and every call is linear in the bytes fed.

Values are kept as ``str`` (latin-1 decoded) so the session layer and the
application can compare them without re-decoding.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SOH = "\x01"
SOH_B = b"\x01"
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
_TRAILER_ROOM = 64      # header bytes a frame may have beyond max_message_size
_CHECKSUM_ROOM = 16     # bytes to look at for the SOH that ends "10=nnn"

# Tags the header of an outgoing message is built from, in QuickFIX's order:
# 8, 9, 35 first, then the other header tags by number.
BEGIN_STRING, BODY_LENGTH, MSG_TYPE, CHECK_SUM = 8, 9, 35, 10


class GarbledMessage(ValueError):
    """A frame that is not a well-formed FIX message; it is ignored."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def parse_tag(text: str) -> int:
    """Strict tag parser: optional '-' then ASCII digits (QuickFIX semantics)."""
    digits = text[1:] if text[:1] == "-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise GarbledMessage(f"tag is not a number: {text[:20]!r}")
    return int(text)


class Message:
    """A parsed message: its fields in wire order, and the raw frame.

    ``fields`` includes 8, 9, 35 and 10. ``get`` returns the first occurrence
    of a tag; duplicates are visible in ``fields`` for the validator.
    """

    __slots__ = ("_index", "fields", "raw")

    def __init__(self, fields: list[tuple[int, str]], raw: bytes = b"") -> None:
        self.fields = fields
        self.raw = raw
        self._index: dict[int, str] | None = None

    def _build_index(self) -> dict[int, str]:
        # reversed: the first occurrence of a repeated tag wins
        index = self._index = dict(reversed(self.fields))
        return index

    def index(self) -> dict[int, str]:
        """Tag -> value (the first occurrence of a repeated tag)."""
        return self._index if self._index is not None else self._build_index()

    def get(self, tag: int, default: str | None = None) -> str | None:
        index = self._index if self._index is not None else self._build_index()
        return index.get(tag, default)

    def __getitem__(self, tag: int) -> str:
        index = self._index if self._index is not None else self._build_index()
        return index[tag]

    def __contains__(self, tag: object) -> bool:
        index = self._index if self._index is not None else self._build_index()
        return tag in index

    @property
    def msg_type(self) -> str:
        return self.get(MSG_TYPE, "") or ""

    @property
    def seq_num(self) -> int | None:
        value = self.get(34)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    def body_fields(self, header_tags: frozenset[int]) -> list[tuple[int, str]]:
        return [(t, v) for t, v in self.fields if t not in header_tags and t != CHECK_SUM]

    def __repr__(self) -> str:
        return "Message(" + "|".join(f"{t}={v}" for t, v in self.fields) + ")"


_FIELDS_RE = re.compile(r"(?:-?[0-9]+=[^\x01]*\x01)+")
_FIELD_RE = re.compile(r"(-?[0-9]+)=([^\x01]*)\x01")
# Length fields whose next field is binary data that may contain SOH.
DATA_LENGTH_TAGS = frozenset({90, 93, 95, 212, 348, 350, 352, 354, 356, 358, 360, 362, 364, 445,
                              618, 621})
_DATA_LENGTH_RE = re.compile(
    "\x01(?:" + "|".join(str(t) for t in sorted(DATA_LENGTH_TAGS)) + ")=")


def parse_frame(frame: bytes) -> Message:
    """Parse one complete, already length- and checksum-verified frame."""
    return parse_text(frame.decode("latin-1"), frame)


def parse_text(text: str, raw: bytes = b"") -> Message:
    """Parse a message already in text form (as quickfix hands it over)."""
    if _DATA_LENGTH_RE.search(text) is None and _FIELDS_RE.fullmatch(text) is not None:
        fields = [(int(t), v) for t, v in _FIELD_RE.findall(text)]
    else:
        fields = _parse_slow(text)
    if len(fields) < 4 or fields[0][0] != 8 or fields[1][0] != 9 or fields[2][0] != 35:
        raise GarbledMessage("first three fields are not 8, 9, 35")
    if fields[-1][0] != CHECK_SUM:
        raise GarbledMessage("last field is not CheckSum")
    return Message(fields, raw)


def fields_of(text: str) -> dict[int, str]:
    """Tag -> value (first occurrence) of a message an engine has already
    validated (quickfix's toString()): a plain split, about twice as fast as
    ``parse_text``.  Raw data fields (which may hold SOH) take the careful path."""
    if _DATA_LENGTH_RE.search(text) is not None:
        return parse_text(text).index()
    parts = text.split(SOH)
    if not parts[-1]:
        parts.pop()                    # the SOH that ends the last field
    pairs = [part.split("=", 1) for part in parts]
    pairs.reverse()                    # a repeated tag keeps its first value
    try:
        return {int(tag): value for tag, value in pairs}
    except ValueError:                 # a tag that is not a number, a field without '='
        raise GarbledMessage(f"not tag=value fields: {text[:60]!r}") from None


def _parse_slow(text: str) -> list[tuple[int, str]]:
    """Field by field, with raw data fields (a LENGTH then DATA of that length)."""
    fields: list[tuple[int, str]] = []
    pos, n = 0, len(text)
    data_length: int | None = None
    while pos < n:
        eq = text.find("=", pos)
        if eq < 0:
            raise GarbledMessage(f"field without '=': {text[pos:pos + 20]!r}")
        tag = parse_tag(text[pos:eq])
        if data_length is not None:
            end = eq + 1 + data_length
            if end >= n or text[end] != SOH:
                raise GarbledMessage(f"data field {tag} does not have the declared length")
            data_length = None
        else:
            end = text.find(SOH, eq + 1)
            if end < 0:
                raise GarbledMessage("frame does not end with SOH")
        value = text[eq + 1:end]
        fields.append((tag, value))
        if tag in DATA_LENGTH_TAGS and value.isascii() and value.isdigit():
            data_length = int(value)
        pos = end + 1
    return fields


@dataclass(slots=True)
class FramerStats:
    frames: int = 0
    garbled: int = 0
    discarded_bytes: int = 0


class Framer:
    """Incremental, bounded FIX stream framer.

    ``feed`` bytes, then iterate ``frames()``: it yields ``(frame, None)`` for a
    verified frame and ``(frame, reason)`` for a garbled one.  Bytes before a
    ``8=`` are skipped (counted in ``stats.discarded_bytes``).
    """

    __slots__ = ("_buf", "_pos", "max_message_size", "stats")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_message_size = max_message_size
        self.stats = FramerStats()

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _skip_to(self, pos: int) -> None:
        self.stats.discarded_bytes += pos - self._pos
        self._pos = pos

    def frames(self) -> Iterable[tuple[bytes, str | None]]:
        buf = self._buf
        max_size = self.max_message_size
        while True:
            end = len(buf)
            start = buf.find(b"8=", self._pos)
            if start < 0:
                # keep a trailing '8' that may start the next message
                keep = 1 if end > self._pos and buf[end - 1] == 0x38 else 0
                self._skip_to(end - keep)
                return
            if start > self._pos:
                self._skip_to(start)
            soh = buf.find(SOH_B, start, min(end, start + 40))
            if soh < 0:
                if end - start >= 40:
                    self._resync(start, "BeginString too long")
                    continue
                return
            if buf[soh + 1 : soh + 3] != b"9=":
                if end - soh < 3:
                    return
                yield self._garbled(start, soh + 1, "BodyLength (9) is not the second field")
                continue
            len_end = buf.find(SOH_B, soh + 3, min(end, soh + 14))
            if len_end < 0:
                if end - soh >= 14:
                    yield self._garbled(start, soh + 1, "BodyLength too long or unterminated")
                    continue
                return
            length_text = bytes(buf[soh + 3 : len_end])
            if not length_text.isdigit():
                yield self._garbled(start, len_end + 1, "BodyLength is not a number")
                continue
            length = int(length_text)
            if length > max_size:
                yield self._garbled(start, len_end + 1, f"BodyLength {length} exceeds {max_size}")
                continue
            body_start = len_end + 1
            body_end = body_start + length
            if end < body_end:
                return
            # QuickFIX searches for the trailer from the declared end; a wrong
            # length therefore swallows up to the next trailer, as it does.
            # Both searches are bounded, so the outcome never depends on how
            # the bytes were split into chunks.
            limit = start + max_size + _TRAILER_ROOM
            trailer = buf.find(b"\x0110=", body_end - 1, limit)
            if trailer < 0:
                if end >= limit:
                    self._resync(start, "no CheckSum within the size limit")
                    continue
                return
            frame_end = buf.find(SOH_B, trailer + 4, trailer + 4 + _CHECKSUM_ROOM)
            if frame_end < 0:
                if end >= trailer + 4 + _CHECKSUM_ROOM:
                    yield self._garbled(start, trailer + 1, "CheckSum unterminated")
                    continue
                return
            frame_end += 1
            frame = bytes(buf[start:frame_end])
            self._pos = frame_end
            if trailer != body_end - 1:
                self.stats.garbled += 1
                yield frame, f"BodyLength {length} does not match the body"
                continue
            sum_text = frame[trailer - start + 4 : -1]
            if len(sum_text) != 3 or not sum_text.isdigit():
                self.stats.garbled += 1
                yield frame, "CheckSum is not three digits"
                continue
            if int(sum_text) != checksum(frame[: trailer - start + 1]):
                self.stats.garbled += 1
                yield frame, "CheckSum mismatch"
                continue
            self.stats.frames += 1
            yield frame, None

    def _garbled(self, start: int, resume: int, reason: str) -> tuple[bytes, str]:
        frame = bytes(self._buf[start:resume])
        self._pos = resume
        self.stats.garbled += 1
        return frame, reason

    def _resync(self, start: int, reason: str) -> None:
        del reason
        self.stats.garbled += 1
        self._skip_to(start + 2)


# --------------------------------------------------------------------------
# Encoding


class SendingTimeClock:
    """UTCTimestamp strings with milliseconds, cached per second."""

    __slots__ = ("_prefix", "_second", "millis")

    def __init__(self, millis: bool = True) -> None:
        self._second = -1
        self._prefix = ""
        self.millis = millis

    def format(self, now: float) -> str:
        second, ms = divmod(round(now * 1000), 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(second))
        if not self.millis:
            return self._prefix
        return f"{self._prefix}.{ms:03d}"


def format_utc_timestamp(now: float, millis: bool = True) -> str:
    second, ms = divmod(round(now * 1000), 1000)
    prefix = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{ms:03d}" if millis else prefix


def parse_utc_timestamp(value: str) -> float:
    """Seconds since the epoch for a UTCTimestamp (YYYYMMDD-HH:MM:SS[.fff...])."""
    if len(value) < 17 or value[8] != "-" or value[11] != ":" or value[14] != ":":
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    date_part, time_part = value[:8], value[9:17]
    if not (date_part.isdigit() and time_part[:2].isdigit() and time_part[3:5].isdigit()
            and time_part[6:8].isdigit()):
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    frac = 0.0
    if len(value) > 17:
        rest = value[17:]
        if rest[0] != "." or not rest[1:].isdigit() or len(rest) > 10:
            raise ValueError(f"not a UTCTimestamp: {value!r}")
        frac = float("0" + rest)
    year, month, day = int(date_part[:4]), int(date_part[4:6]), int(date_part[6:8])
    hour, minute, sec = int(time_part[:2]), int(time_part[3:5]), int(time_part[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and sec <= 60):
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    import calendar

    return calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) + frac


def join_fields(fields: Iterable[tuple[int, str]]) -> str:
    return "".join(f"{t}={v}{SOH}" for t, v in fields)


def finish(begin_string: str, rest: str) -> bytes:
    """Prefix 8= and 9= to ``rest`` (which starts with 35=) and append 10=."""
    body = rest.encode("latin-1")
    data = b"8=%s\x019=%d\x01%s" % (begin_string.encode(), len(body), body)
    return b"%s10=%03d\x01" % (data, sum(data) & 0xFF)


def encode(begin_string: str, msg_type: str, header: Sequence[tuple[int, str]],
           body: Sequence[tuple[int, str]] | str) -> bytes:
    """Encode a message; ``header`` excludes 8, 9, 35 and is sorted by tag here."""
    parts = [f"35={msg_type}{SOH}"]
    parts.extend(f"{t}={v}{SOH}" for t, v in sorted(header, key=_tag_key))
    parts.append(body if isinstance(body, str) else join_fields(body))
    return finish(begin_string, "".join(parts))


def _tag_key(field: tuple[int, str]) -> int:
    return field[0]


def printable(data: bytes, limit: int = 400) -> str:
    """A log-friendly rendering of a raw frame ('|' for SOH), bounded."""
    text = data[:limit].decode("latin-1").replace(SOH, "|")
    return text + ("..." if len(data) > limit else "")
