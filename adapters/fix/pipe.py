"""The wire between the engine and its FIX gateway process (frames over the
child's stdin and stdout), and the gateway's side of it: the outbox its
quickfix callbacks write to.  See ``adapters.fix.gateway`` for the protocol."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import deque
from typing import Any

import structlog

from stp.inbound import KINDS, Inbound, MessageKind

log = structlog.get_logger("engine.gateway")

# -- the wire between the two processes -------------------------------------
# A frame: type (1 byte), payload length (4 bytes, little-endian), payload.
# "M": one inbound message: kind (1 byte), session index (2), receive time in
#      microseconds since the epoch (8), the message's true size in bytes (8),
#      then the message's bytes exactly as quickfix holds them (UTF-8 when the
#      counterparty sent UTF-8, any other bytes as they came), or their first
#      ``TRUNCATED_KEEP`` bytes when the message is over the size cap (then the
#      true size is larger than what follows).
# "E": an event or a command, as JSON: {"event": ..., ...}.
HEADER = struct.Struct("<cI")
MESSAGE_META = struct.Struct("<BHqQ")
MESSAGE = b"M"
EVENT = b"E"
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
MAX_FRAME = 16 * 1024 * 1024          # the frame limit: a message at the largest cap (8 MiB) fits below it
MAX_MESSAGE_BYTES = 1024 * 1024       # [engine] max_message_bytes by default
TRUNCATED_KEEP = 64 * 1024            # what an oversized message keeps of itself (journal and pipe)


class WireError(ValueError):
    pass


def _cut(data: bytes, keep: int) -> bytes:
    """The first ``keep`` bytes at most, not ending inside a UTF-8 sequence."""
    if len(data) <= keep:
        return data
    end = keep
    while end > keep - 3 and end > 0 and 0x80 <= data[end] <= 0xBF:
        end -= 1                       # data[end] continues a character: cut before it starts
    return data[:end]


def message_bytes_frame(kind: MessageKind, session_index: int, received_us: int, data: bytes,
                        limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """A message frame from the message's bytes; over ``limit`` only its first
    ``TRUNCATED_KEEP`` bytes go, with its true size."""
    size = len(data)
    if size > limit:
        data = _cut(data, min(TRUNCATED_KEEP, limit))
    return HEADER.pack(MESSAGE, MESSAGE_META.size + len(data)) + \
        MESSAGE_META.pack(KIND_CODE[kind], session_index, received_us, size) + data


def message_frame(kind: MessageKind, session_index: int, received_us: int, raw: str,
                  limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """A message frame from quickfix's string.  quickfix's Python binding
    decodes the message's bytes as UTF-8 with surrogate escapes: encoding them
    back the same way gives the bytes exactly (valid UTF-8 or not)."""
    return message_bytes_frame(kind, session_index, received_us, raw.encode("utf-8", "surrogateescape"),
                               limit)


def event_frame(event: str, **data: Any) -> bytes:
    payload = json.dumps({"event": event, **data}, separators=(",", ":")).encode()
    return HEADER.pack(EVENT, len(payload)) + payload


def decode_text(data: bytes) -> tuple[str, bool]:
    """(text, binary): UTF-8 when the bytes are valid UTF-8, else the bytes
    with surrogate escapes for the invalid ones (lossless either way)."""
    try:
        return data.decode(), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


class FrameReader:
    """Splits a byte stream into frames (pure: feed bytes, get frames)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._rest = b""
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._rest + data if self._rest else data
        frames: list[tuple[bytes, bytes]] = []
        pos, n = 0, len(buf)
        unpack = HEADER.unpack_from
        size = HEADER.size
        max_frame = self.max_frame
        while n - pos >= size:
            kind, length = unpack(buf, pos)
            if length > max_frame or kind not in (MESSAGE, EVENT):
                raise WireError(f"corrupt frame header {bytes(buf[pos:pos + size])!r}")
            end = pos + size + length
            if end > n:
                break
            frames.append((kind, buf[pos + size:end]))
            pos = end
        self._rest = buf[pos:]
        return frames


def decode_message(payload: bytes, sessions: tuple[str, ...]) -> Inbound:
    kind, index, received_us, size = MESSAGE_META.unpack_from(payload)
    if kind >= len(KINDS) or index >= len(sessions):
        raise WireError(f"message frame with kind {kind} for session {index}")
    data = payload[MESSAGE_META.size:]
    try:
        return Inbound(sessions[index], data.decode(), received_us / 1e6, KINDS[kind], False, size,
                       size != len(data))
    except UnicodeDecodeError:
        return Inbound(sessions[index], data.decode("utf-8", "surrogateescape"), received_us / 1e6,
                       KINDS[kind], True, size, size != len(data))


def decode_event(payload: bytes) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict) or "event" not in value:
        raise WireError(f"event frame without an event: {payload[:80]!r}")
    return value


# -- the gateway process's side ---------------------------------------------------
class GatewayOutbox:
    """From quickfix's callback threads to the engine's pipe.

    ``put`` appends a frame and returns; a writer thread sends whatever has
    gathered in one write (the pipe write releases the GIL).  The writer
    lets frames gather for ``gather_s`` after the first: one wake-up, one
    write and one read on the engine's side per batch instead of per
    message (each wake-up also takes the GIL from quickfix's thread).  Past
    ``maximum`` frames waiting (the engine has stopped reading), ``put``
    waits, so quickfix stops reading its sockets."""

    def __init__(self, fd: int, maximum: int = 50_000, gather_s: float = 0.0005) -> None:
        self.fd = fd
        self.maximum = maximum
        self.gather_s = gather_s
        self._frames: list[bytes] = []
        self._cond = threading.Condition(threading.Lock())

    def put(self, frame: bytes) -> None:
        cond = self._cond
        with cond:
            frames = self._frames
            while len(frames) >= self.maximum:
                cond.wait(1.0)
                frames = self._frames
            frames.append(frame)
            if len(frames) == 1:
                cond.notify_all()

    def run(self) -> None:
        """The writer thread."""
        cond = self._cond
        while True:
            with cond:
                while not self._frames:
                    cond.wait()
            time.sleep(self.gather_s)
            with cond:
                frames, self._frames = self._frames, []
                cond.notify_all()
            data = memoryview(b"".join(frames))
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                os._exit(0)          # the engine is gone: nothing more can be delivered

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._frames:
                    break
            time.sleep(0.005)


Frame = tuple[bytes, bytes]


def read_frame(fd: int, reader: FrameReader, pending: deque[Frame]) -> Frame | None:
    """The next frame from a blocking descriptor (None at end of file)."""
    while not pending:
        data = os.read(fd, 65536)
        if not data:
            return None
        pending.extend(reader.feed(data))
    return pending.popleft()
