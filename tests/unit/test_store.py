"""Message stores (fixsim.store): MemoryStore and FileStore."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixsim.store import FileStore, MemoryStore

KEY = "FIX.4.4:STP->LP"


def raw(seq: int, extra: bytes = b"") -> bytes:
    return b"8=FIX.4.4\x019=20\x0135=D\x0134=%d\x0158=m%d%s\x0110=000\x01" % (seq, seq, extra)


def record(seq: int, data: bytes) -> bytes:
    """The on-disk record format, as documented in store.py."""
    return b"%d %d\n%s\n" % (seq, len(data), data)


def body_path(directory: Path) -> Path:
    (path,) = directory.glob("*.body")
    return path


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def open_store(directory: Path, key: str = KEY, fsync: bool = False) -> FileStore:
    return FileStore(directory, key, fsync=fsync)


# --- MemoryStore ---------------------------------------------------------------------


def test_memory_store_initial_state() -> None:
    store = MemoryStore()
    assert store.next_sender_seq == 1
    assert store.next_target_seq == 1
    assert isinstance(store.creation_time, float)
    assert store.get_range(1, 100) == []


def test_memory_store_save_and_get_range_inclusive() -> None:
    store = MemoryStore()
    for seq in range(1, 6):
        store.save(seq, raw(seq))
    assert store.get_range(1, 5) == [(s, raw(s)) for s in range(1, 6)]
    assert store.get_range(2, 3) == [(2, raw(2)), (3, raw(3))]
    assert store.get_range(5, 5) == [(5, raw(5))]
    assert store.get_range(4, 1000) == [(4, raw(4)), (5, raw(5))]
    assert store.get_range(6, 10) == []
    assert store.get_range(3, 2) == []


def test_memory_store_missing_seqs_skipped() -> None:
    store = MemoryStore()
    for seq in (1, 2, 5, 9):
        store.save(seq, raw(seq))
    assert store.get_range(1, 10) == [(1, raw(1)), (2, raw(2)), (5, raw(5)), (9, raw(9))]
    assert store.get_range(3, 4) == []


def test_memory_store_save_many_and_overwrite() -> None:
    store = MemoryStore()
    store.save_many(3, [raw(3), raw(4), raw(5)])
    store.save(4, b"replaced")
    assert store.get_range(1, 10) == [(3, raw(3)), (4, b"replaced"), (5, raw(5))]
    store.save_many(10, [])
    assert store.get_range(1, 20) == [(3, raw(3)), (4, b"replaced"), (5, raw(5))]


def test_memory_store_reset() -> None:
    store = MemoryStore()
    store.save_many(1, [raw(1), raw(2)])
    store.next_sender_seq, store.next_target_seq = 3, 7
    before = store.creation_time
    store.reset()
    assert (store.next_sender_seq, store.next_target_seq) == (1, 1)
    assert store.get_range(1, 10) == []
    assert store.creation_time >= before
    store.save(1, b"new")
    assert store.get_range(1, 10) == [(1, b"new")]
    store.flush()
    store.close()


# --- FileStore -------------------------------------------------------------------------


def test_file_store_fresh(store_dir: Path) -> None:
    store = open_store(store_dir)
    try:
        assert (store.next_sender_seq, store.next_target_seq) == (1, 1)
        assert store.get_range(1, 100) == []
        assert sorted(p.suffix for p in store_dir.iterdir()) == [".body", ".seqnums", ".session"]
    finally:
        store.close()


def test_file_store_seqnums_persist_after_flush(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.next_sender_seq, store.next_target_seq = 42, 17
    store.flush()
    store.close()
    store = open_store(store_dir)
    try:
        assert (store.next_sender_seq, store.next_target_seq) == (42, 17)
    finally:
        store.close()


def crash_copy(directory: Path, tmp_path: Path, name: str = "crash") -> Path:
    """The files as a process kill would leave them now (the page cache survives)."""
    target = tmp_path / name
    shutil.copytree(directory, target)
    return target


def test_file_store_seqnums_persist_after_flush_without_close(store_dir: Path, tmp_path: Path) -> None:
    store = open_store(store_dir)
    try:
        store.next_sender_seq, store.next_target_seq = 1234567, 7654321
        store.flush()
        other = open_store(crash_copy(store_dir, tmp_path))
        try:
            assert (other.next_sender_seq, other.next_target_seq) == (1234567, 7654321)
        finally:
            other.close()
    finally:
        store.close()


def test_file_store_seqnums_overwrite_shorter_values(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.next_sender_seq, store.next_target_seq = 10**12, 10**12
    store.flush()
    store.next_sender_seq, store.next_target_seq = 5, 6
    store.close()
    store = open_store(store_dir)
    try:
        assert (store.next_sender_seq, store.next_target_seq) == (5, 6)
    finally:
        store.close()


def test_file_store_close_flushes(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.next_sender_seq, store.next_target_seq = 8, 9
    store.save(7, raw(7))
    store.close()
    store = open_store(store_dir)
    try:
        assert (store.next_sender_seq, store.next_target_seq) == (8, 9)
        assert store.get_range(7, 7) == [(7, raw(7))]
    finally:
        store.close()


BINARY = [
    raw(1),
    b"",
    b"line\nbreaks\n\n",
    bytes(range(256)),
    b"1 2\n3 4\n",  # looks like a record header
    b"x" * 70_000,
]


def test_file_store_messages_exact_bytes_before_and_after_reopen(store_dir: Path) -> None:
    store = open_store(store_dir)
    for seq, data in enumerate(BINARY, 1):
        store.save(seq, data)
    expected = list(enumerate(BINARY, 1))
    assert store.get_range(1, len(BINARY)) == expected  # unflushed writes are visible
    store.next_sender_seq = len(BINARY) + 1
    store.close()
    store = open_store(store_dir)
    try:
        assert store.get_range(1, len(BINARY)) == expected
        assert store.get_range(2, 3) == expected[1:3]
        assert store.get_range(0, 10**6) == expected
        assert store.get_range(len(BINARY) + 1, len(BINARY) + 10) == []
        assert store.next_sender_seq == len(BINARY) + 1
        # on-disk format as documented
        assert body_path(store_dir).read_bytes() == b"".join(record(s, d) for s, d in expected)
    finally:
        store.close()


def test_file_store_missing_seqs_skipped(store_dir: Path) -> None:
    store = open_store(store_dir)
    try:
        for seq in (3, 4, 7, 10):
            store.save(seq, raw(seq))
        assert store.get_range(1, 20) == [(s, raw(s)) for s in (3, 4, 7, 10)]
        assert store.get_range(5, 6) == []
        assert store.get_range(8, 9) == []
        store.close()
        store = open_store(store_dir)
        assert store.get_range(1, 20) == [(s, raw(s)) for s in (3, 4, 7, 10)]
        assert store.next_sender_seq == 11
    finally:
        store.close()


def test_file_store_starting_at_a_high_seq(store_dir: Path) -> None:
    store = open_store(store_dir)
    try:
        store.save_many(1_000_000, [raw(1), raw(2)])
        assert store.get_range(1, 1_000_001) == [(1_000_000, raw(1)), (1_000_001, raw(2))]
        assert store.get_range(1_000_001, 2_000_000) == [(1_000_001, raw(2))]
    finally:
        store.close()


def test_file_store_overwrite_same_seq_last_wins(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.save(1, b"first")
    store.save(1, b"second")
    assert store.get_range(1, 1) == [(1, b"second")]
    store.close()
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 1) == [(1, b"second")]
    finally:
        store.close()


def test_file_store_save_many_equals_individual_saves(tmp_path: Path) -> None:
    one_by_one = open_store(tmp_path / "a")
    batched = open_store(tmp_path / "b")
    try:
        for seq, data in enumerate(BINARY, 5):
            one_by_one.save(seq, data)
        batched.save_many(5, BINARY[:2])
        batched.save_many(7, [])
        batched.save_many(7, BINARY[2:])
        expected = list(enumerate(BINARY, 5))
        assert batched.get_range(1, 100) == one_by_one.get_range(1, 100) == expected
        one_by_one.close()
        batched.close()
        assert body_path(tmp_path / "a").read_bytes() == body_path(tmp_path / "b").read_bytes()
        one_by_one = open_store(tmp_path / "a")
        batched = open_store(tmp_path / "b")
        assert batched.get_range(1, 100) == one_by_one.get_range(1, 100) == expected
        assert batched.next_sender_seq == one_by_one.next_sender_seq == 5 + len(BINARY)
    finally:
        one_by_one.close()
        batched.close()


def test_file_store_save_many_then_save_offsets(store_dir: Path) -> None:
    store = open_store(store_dir)
    try:
        store.save(1, b"one")
        store.save_many(2, [b"two", b"three"])
        store.save(4, b"four")
        store.save_many(5, [b"five"])
        assert store.get_range(1, 5) == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"four"),
                                         (5, b"five")]
    finally:
        store.close()


def _write_five(directory: Path) -> list[bytes]:
    store = open_store(directory)
    msgs = [raw(s, b"-" * s) for s in range(1, 6)]
    store.save_many(1, msgs[:2])
    for seq in range(3, 6):
        store.save(seq, msgs[seq - 1])
    store.next_sender_seq, store.next_target_seq = 6, 3
    store.close()
    return msgs


@pytest.mark.parametrize(
    "cut",
    [
        1,  # final "\n" of the last record
        3,  # inside the last message
        "header+2",  # inside the last record's header line
        "header",  # just after the previous record: the header line only is gone
    ],
)
def test_file_store_truncated_last_record_dropped(store_dir: Path, cut: int | str) -> None:
    msgs = _write_five(store_dir)
    path = body_path(store_dir)
    good_size = len(b"".join(record(s, msgs[s - 1]) for s in range(1, 5)))
    full = path.read_bytes()
    assert len(full) == good_size + len(record(5, msgs[4]))
    if cut == "header+2":
        keep = good_size + 2
    elif cut == "header":
        keep = good_size
    else:
        assert isinstance(cut, int)
        keep = len(full) - cut
    with path.open("r+b") as f:
        f.truncate(keep)

    store = open_store(store_dir)
    try:
        assert store.get_range(1, 10) == [(s, msgs[s - 1]) for s in range(1, 5)]
        assert path.stat().st_size == good_size  # the partial record is cut off on disk
        assert store.next_sender_seq >= 5  # never below last stored + 1
        assert store.next_sender_seq == 6  # the flushed value, which is higher
        assert store.next_target_seq == 3
        store.save(5, b"again")
        store.save(6, b"six")
        assert store.get_range(4, 6) == [(4, msgs[3]), (5, b"again"), (6, b"six")]
        store.next_sender_seq = 7
    finally:
        store.close()
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 10) == [*((s, msgs[s - 1]) for s in range(1, 5)), (5, b"again"),
                                          (6, b"six")]
        assert store.next_sender_seq == 7
    finally:
        store.close()


def test_file_store_garbage_at_end_of_body_dropped(store_dir: Path) -> None:
    msgs = _write_five(store_dir)
    path = body_path(store_dir)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"not a record\n12 99\nshort")
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 10) == [(s, msgs[s - 1]) for s in range(1, 6)]
        assert path.stat().st_size == size
    finally:
        store.close()


def test_file_store_next_sender_never_below_last_stored_plus_one(store_dir: Path) -> None:
    # the messages reached the body file but the sequence numbers were not
    # advanced before the (simulated) crash
    store = open_store(store_dir)
    store.save_many(1, [raw(s) for s in range(1, 9)])
    store.next_sender_seq, store.next_target_seq = 3, 4
    store.close()
    store = open_store(store_dir)
    try:
        assert store.next_sender_seq == 9
        assert store.next_target_seq == 4
    finally:
        store.close()


def test_file_store_next_sender_after_truncation_and_stale_seqnums(store_dir: Path) -> None:
    store = open_store(store_dir)
    msgs = [raw(s) for s in range(1, 9)]
    store.save_many(1, msgs)
    store.next_sender_seq = 2
    store.close()
    path = body_path(store_dir)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 4)
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 10) == [(s, msgs[s - 1]) for s in range(1, 8)]
        assert store.next_sender_seq == 8
    finally:
        store.close()


def test_file_store_seqnums_file_lost(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.save_many(1, [raw(1), raw(2), raw(3)])
    store.next_target_seq = 50
    store.close()
    next(store_dir.glob("*.seqnums")).unlink()
    store = open_store(store_dir)
    try:
        assert store.next_sender_seq == 4
        assert store.next_target_seq == 1
    finally:
        store.close()


def test_file_store_reset(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.save_many(1, [raw(s) for s in range(1, 6)])
    store.next_sender_seq, store.next_target_seq = 6, 20
    store.flush()
    before = store.creation_time
    store.reset()
    assert (store.next_sender_seq, store.next_target_seq) == (1, 1)
    assert store.get_range(1, 10) == []
    assert store.creation_time >= before
    created = store.creation_time
    store.close()
    assert body_path(store_dir).stat().st_size == 0
    store = open_store(store_dir)
    try:
        assert (store.next_sender_seq, store.next_target_seq) == (1, 1)
        assert store.get_range(1, 10) == []
        assert store.creation_time == created
    finally:
        store.close()


def test_file_store_reset_survives_crash_without_close(store_dir: Path, tmp_path: Path) -> None:
    # reset() flushes by itself: a crash right after it must not resurrect the old numbers
    store = open_store(store_dir)
    try:
        store.save_many(1, [raw(s) for s in range(1, 6)])
        store.next_sender_seq, store.next_target_seq = 6, 20
        store.flush()
        store.reset()
        other = open_store(crash_copy(store_dir, tmp_path))
        try:
            assert (other.next_sender_seq, other.next_target_seq) == (1, 1)
            assert other.get_range(1, 10) == []
            assert other.creation_time == store.creation_time
        finally:
            other.close()
    finally:
        store.close()


def test_file_store_crash_after_saves_before_flush(store_dir: Path, tmp_path: Path) -> None:
    # seqnums flushed at 4; messages 4..6 written (body flushed by get_range)
    # but the crash comes before the next flush of the sequence numbers
    store = open_store(store_dir)
    try:
        store.save_many(1, [raw(s) for s in range(1, 4)])
        store.next_sender_seq = 4
        store.flush()
        store.save_many(4, [raw(s) for s in range(4, 7)])
        store.next_sender_seq = 7
        assert len(store.get_range(1, 10)) == 6
        other = open_store(crash_copy(store_dir, tmp_path))
        try:
            assert other.next_sender_seq == 7  # from the body, not the stale seqnums
            assert other.get_range(1, 10) == [(s, raw(s)) for s in range(1, 7)]
        finally:
            other.close()
    finally:
        store.close()


def test_file_store_creation_time_persisted(store_dir: Path) -> None:
    store = open_store(store_dir)
    created = store.creation_time
    assert isinstance(created, float)
    store.close()
    store = open_store(store_dir)
    try:
        assert store.creation_time == created  # exactly: repr round-trips
    finally:
        store.close()
    (session_file,) = store_dir.glob("*.session")
    assert float(session_file.read_text()) == created


def test_file_store_get_range_across_reset(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.save_many(1, [raw(s) for s in range(1, 6)])
    store.reset()
    store.save(1, b"new-1")
    store.save(2, b"new-2")
    assert store.get_range(1, 5) == [(1, b"new-1"), (2, b"new-2")]
    store.next_sender_seq = 3
    store.close()
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 5) == [(1, b"new-1"), (2, b"new-2")]
        assert store.next_sender_seq == 3
        assert body_path(store_dir).read_bytes() == record(1, b"new-1") + record(2, b"new-2")
    finally:
        store.close()


def test_file_store_reset_then_start_at_other_seq(store_dir: Path) -> None:
    store = open_store(store_dir)
    store.save_many(10, [raw(s) for s in range(10, 15)])
    store.reset()
    store.save_many(3, [b"c", b"d"])
    assert store.get_range(1, 20) == [(3, b"c"), (4, b"d")]
    store.close()
    store = open_store(store_dir)
    try:
        assert store.get_range(1, 20) == [(3, b"c"), (4, b"d")]
        assert store.next_sender_seq == 5
    finally:
        store.close()


def test_file_store_fsync_mode(store_dir: Path) -> None:
    store = open_store(store_dir, fsync=True)
    store.save(1, raw(1))
    store.next_sender_seq = 2
    store.flush()
    store.close()
    store = open_store(store_dir, fsync=True)
    try:
        assert store.get_range(1, 1) == [(1, raw(1))]
        assert store.next_sender_seq == 2
    finally:
        store.close()


def test_file_store_sessions_are_separate_and_keys_sanitised(tmp_path: Path) -> None:
    a = open_store(tmp_path, "FIX.4.4:STP->LP1")
    b = open_store(tmp_path, "../../FIX.4.4:STP->LP2")
    try:
        a.save(1, b"a")
        b.save(1, b"b")
        a.next_sender_seq, b.next_sender_seq = 2, 9
        assert a.get_range(1, 1) == [(1, b"a")]
        assert b.get_range(1, 1) == [(1, b"b")]
    finally:
        a.close()
        b.close()
    # every file stays inside the store directory
    for path in tmp_path.rglob("*"):
        assert path.parent == tmp_path
        assert "/" not in path.name and ":" not in path.name
    assert len(list(tmp_path.iterdir())) == 6
    a = open_store(tmp_path, "FIX.4.4:STP->LP1")
    b = open_store(tmp_path, "../../FIX.4.4:STP->LP2")
    try:
        assert (a.next_sender_seq, b.next_sender_seq) == (2, 9)
        assert a.get_range(1, 1) == [(1, b"a")]
        assert b.get_range(1, 1) == [(1, b"b")]
    finally:
        a.close()
        b.close()
