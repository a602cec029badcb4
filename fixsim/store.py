"""Message stores: sequence numbers and sent messages, kept for resends.

``FileStore`` keeps, per session, three files in a directory:

- ``<id>.seqnums``: next sender and next target sequence numbers, rewritten
  in place (one ``pwrite``) at every ``flush``;
- ``<id>.body``: sent messages appended as ``<seq> <len>\\n<raw>`` records;
- ``<id>.session``: the creation time of the session's sequence.

A record cut short by a crash is dropped when the store is reopened, and the
next sender sequence number is never below the last stored message + 1, so a
restarted simulator never reuses a sequence number it has sent.  ``fsync``
is off by default (the OS page cache survives a process kill); set it for
durability across a machine crash.
"""

from __future__ import annotations

import os
import time
from array import array
from pathlib import Path
from typing import Protocol


class MessageStore(Protocol):
    next_sender_seq: int
    next_target_seq: int
    creation_time: float

    def save(self, seq: int, raw: bytes) -> None: ...
    def save_many(self, first_seq: int, raws: list[bytes]) -> None: ...
    def get_range(self, begin: int, end: int) -> list[tuple[int, bytes]]: ...
    def reset(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        self._messages: dict[int, bytes] = {}

    def save(self, seq: int, raw: bytes) -> None:
        self._messages[seq] = raw

    def save_many(self, first_seq: int, raws: list[bytes]) -> None:
        for i, raw in enumerate(raws):
            self._messages[first_seq + i] = raw

    def get_range(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return [(s, self._messages[s]) for s in range(begin, end + 1) if s in self._messages]

    def reset(self) -> None:
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        self._messages.clear()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_SEQ_FMT = b"%020d %020d\n"


class FileStore:
    def __init__(self, directory: str | os.PathLike[str], session_key: str, fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in session_key)
        self._seq_path = self.dir / f"{safe}.seqnums"
        self._body_path = self.dir / f"{safe}.body"
        self._session_path = self.dir / f"{safe}.session"
        self.fsync = fsync
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        # offsets[seq - base] = file offset of the record for seq (-1: none)
        self._base = 1
        self._offsets = array("q")
        self._seq_fd = os.open(self._seq_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._body = open(self._body_path, "a+b")  # noqa: SIM115 - kept open for appends
        self._load()

    def _load(self) -> None:
        data = os.pread(self._seq_fd, 64, 0)
        if data.strip():
            sender, target = data.split()
            self.next_sender_seq, self.next_target_seq = int(sender), int(target)
        if self._session_path.exists():
            self.creation_time = float(self._session_path.read_text().strip() or time.time())
        else:
            self._session_path.write_text(f"{self.creation_time}\n")
        self._body.seek(0)
        offset = 0
        good_end = 0
        last_seq = 0
        body = self._body
        while True:
            line = body.readline()
            if not line:
                break
            try:
                seq_text, len_text = line.split()
                seq, length = int(seq_text), int(len_text)
            except ValueError:
                break
            record_start = offset
            offset += len(line)
            raw = body.read(length + 1)
            if len(raw) != length + 1 or raw[-1:] != b"\n":
                break
            offset += length + 1
            self._index(seq, record_start)
            last_seq = max(last_seq, seq)
            good_end = offset
        if good_end != os.fstat(body.fileno()).st_size:
            body.truncate(good_end)
        body.seek(0, os.SEEK_END)
        if last_seq >= self.next_sender_seq:
            self.next_sender_seq = last_seq + 1

    def _index(self, seq: int, offset: int) -> None:
        offsets = self._offsets
        if not offsets:
            self._base = seq
        idx = seq - self._base
        if idx < 0:
            # a reset sequence restarting below the base: rebuild from here
            self._base, self._offsets = seq, array("q")
            idx = 0
            offsets = self._offsets
        if idx >= len(offsets):
            offsets.extend([-1] * (idx - len(offsets) + 1))
        offsets[idx] = offset

    def save(self, seq: int, raw: bytes) -> None:
        offset = self._body.tell()
        self._body.write(b"%d %d\n%s\n" % (seq, len(raw), raw))
        self._index(seq, offset)

    def save_many(self, first_seq: int, raws: list[bytes]) -> None:
        """Append consecutive messages with one write."""
        offset = self._body.tell()
        records = []
        seq = first_seq
        for raw in raws:
            record = b"%d %d\n%s\n" % (seq, len(raw), raw)
            self._index(seq, offset)
            offset += len(record)
            records.append(record)
            seq += 1
        self._body.write(b"".join(records))

    def get_range(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        self._body.flush()
        out: list[tuple[int, bytes]] = []
        fd = self._body.fileno()
        for seq in range(max(begin, self._base), end + 1):
            idx = seq - self._base
            if idx >= len(self._offsets):
                break
            offset = self._offsets[idx]
            if offset < 0:
                continue
            head = os.pread(fd, 48, offset)
            line_end = head.index(b"\n")
            _, length = head[:line_end].split()
            raw = os.pread(fd, int(length), offset + line_end + 1)
            out.append((seq, raw))
        return out

    def reset(self) -> None:
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        self._session_path.write_text(f"{self.creation_time}\n")
        self._body.truncate(0)
        self._body.seek(0)
        self._offsets = array("q")
        self._base = 1
        self.flush()

    def flush(self) -> None:
        if self._body.closed:
            return
        self._body.flush()
        os.pwrite(self._seq_fd, _SEQ_FMT % (self.next_sender_seq, self.next_target_seq), 0)
        if self.fsync:
            os.fsync(self._body.fileno())
            os.fsync(self._seq_fd)

    def close(self) -> None:
        if self._body.closed:
            return
        try:
            self.flush()
        finally:
            self._body.close()
            os.close(self._seq_fd)
