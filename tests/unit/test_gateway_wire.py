"""The wire between the FIX gateway process and the engine (no processes here)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from adapters.config import MAX_MESSAGE_BYTES_LIMIT
from adapters.fix.gateway import InboundQueue
from adapters.fix.oversize import largest_field_tag
from adapters.fix.pipe import (
    EVENT,
    HEADER,
    MAX_FRAME,
    MESSAGE,
    MESSAGE_META,
    TRUNCATED_KEEP,
    FrameReader,
    WireError,
    _cut,
    decode_event,
    decode_message,
    event_frame,
    message_frame,
)
from adapters.fix.quickfix import msg_type_of
from stp.fixwire import fields_of
from stp.inbound import Inbound
from stp.journal import escaped_text, journal_raw, tolerant_fields

SESSIONS = ("LP1", "LP2", "PLATFORM")
RAW = ("8=FIX.4.4\x019=71\x0135=8\x0134=7\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
       "17=E-1\x0155=EUR/USD\x0110=123\x01")


def test_a_message_frame_round_trips() -> None:
    frame = message_frame("session_reject", 2, 1_893_920_400_123_456, RAW + "é")
    [(kind, payload)] = FrameReader().feed(frame)
    assert kind == MESSAGE
    item = decode_message(payload, SESSIONS)
    assert item == Inbound("PLATFORM", RAW + "é", 1_893_920_400.123456, "session_reject",
                           size=len((RAW + "é").encode()))
    assert not item.binary and not item.truncated


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    frames = [message_frame("app", i % 3, 1_000_000 * i, RAW.replace("E-1", f"E-{i}")) for i in range(200)]
    frames.insert(50, event_frame("logon", session="LP2"))
    stream = b"".join(frames)
    rng = random.Random(7)
    reader, out = FrameReader(), []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 7, 40, 333, 5000])
        out += reader.feed(stream[pos:pos + step])
        pos += step
    assert len(out) == 201
    assert out[50] == (EVENT, event_frame("logon", session="LP2")[HEADER.size:])
    assert decode_event(out[50][1]) == {"event": "logon", "session": "LP2"}
    messages = [decode_message(p, SESSIONS) for k, p in out if k == MESSAGE]
    assert [m.raw.split("\x0117=")[1].split("\x01")[0] for m in messages] == [f"E-{i}" for i in range(200)]
    assert [m.session for m in messages] == [SESSIONS[i % 3] for i in range(200)]


def test_a_corrupt_header_is_an_error_not_a_wait() -> None:
    with pytest.raises(WireError):
        FrameReader().feed(b"Z\x05\x00\x00\x00hello")
    with pytest.raises(WireError):                                # a length no FIX message has
        FrameReader().feed(HEADER.pack(MESSAGE, 1 << 30))


def test_a_message_frame_for_an_unknown_session_is_refused() -> None:
    [(_, payload)] = FrameReader().feed(message_frame("app", 3, 0, RAW))
    with pytest.raises(WireError):
        decode_message(payload, SESSIONS)


def test_msg_type_is_read_from_the_raw_text() -> None:
    assert msg_type_of(RAW) == "8"
    assert msg_type_of(RAW.replace("35=8", "35=AE")) == "AE"
    assert msg_type_of("8=FIX.4.4\x019=5\x0135=W") == "W"
    assert msg_type_of("garbage") == ""


async def test_the_queue_pauses_the_pipe_when_full_and_resumes_at_half() -> None:
    calls: list[str] = []
    queue = InboundQueue(maximum=10)
    queue.on_full = lambda: calls.append("full")
    queue.on_space = lambda: calls.append("space")
    item = Inbound("LP1", RAW, 0.0, "app")
    for _ in range(9):
        queue.put(item)
    assert calls == [] and queue.wakeup.is_set()
    queue.put(item)
    queue.put(item)                      # still full: told once
    assert calls == ["full"]
    assert len(queue.take(3)) == 3 and calls == ["full"]       # 8 left: above half
    assert len(queue.take(3)) == 3 and calls == ["full", "space"]
    queue.closed = True
    queue.put(item)                      # after the engine closed the hand-off: not taken
    assert len(queue) == 5
    await asyncio.sleep(0)


async def test_sends_without_a_gateway_are_held_for_the_next_one() -> None:
    """A DontKnowTrade decided while the gateway is being restarted is held
    (its report is committed: the LP would never ask again), within a bound;
    once stopping, nothing is held."""
    from adapters.config import EngineConfig, SessionSpec
    from adapters.fix.gateway import FixGateway

    cfg = EngineConfig(path=None, database_url="sqlite://", state_dir=Path("/tmp"),
                       lps=(SessionSpec("lp", "LP1", 1, "STP", "LP1"),))
    gateway = FixGateway(cfg, InboundQueue(), resume=dict)
    gateway.max_unsent = 2
    fields = {17: "E-1", 55: "EUR/USD", 37: "O-1"}
    assert gateway.send_dont_know("LP1", fields, "A", "unknown symbol")
    assert gateway.send_business_reject("LP1", {34: "9", 35: "W"}, "2", "unknown pair")
    assert not gateway.send_dont_know("LP1", fields, "A", "unknown symbol")      # over the bound
    assert not gateway.send_dont_know("NOBODY", fields, "A", "no such session")
    held = [decode_event(p) for f in gateway._unsent for _, p in FrameReader().feed(f)]
    assert [(h["session"], h["msg_type"]) for h in held] == [("LP1", "Q"), ("LP1", "j")]
    assert [127, "A"] in held[0]["body"] and [17, "E-1"] in held[0]["body"]
    await gateway.stop()
    gateway.max_unsent = 10
    assert not gateway.send_dont_know("LP1", fields, "A", "unknown symbol")      # stopping


# quickfix's Python binding hands a message whose bytes are not UTF-8 over as
# a str with surrogate escapes (b"\xff" -> "\udcff")
LATIN = RAW.replace("\x0110=", "\x0158=caf\xe9 \xff\xfe\x0110=").encode("latin-1")
FROM_QUICKFIX = LATIN.decode("utf-8", "surrogateescape")


def test_a_message_that_is_not_utf8_crosses_the_pipe_byte_exact() -> None:
    """It used to raise UnicodeEncodeError in message_frame: the fill was lost."""
    [(_, payload)] = FrameReader().feed(message_frame("app", 0, 5, FROM_QUICKFIX))
    item = decode_message(payload, SESSIONS)
    assert item.binary and not item.truncated and item.size == len(LATIN)
    assert item.wire_bytes() == LATIN
    raw, encoding, size, truncated = journal_raw(item)
    assert (encoding, size, truncated) == ("latin-1", len(LATIN), False)
    assert raw.encode(encoding) == LATIN                      # the journal keeps the bytes exactly
    valid = decode_message(FrameReader().feed(message_frame("app", 0, 5, RAW + "é"))[0][1], SESSIONS)
    assert journal_raw(valid) == (RAW + "é", "utf-8", len((RAW + "é").encode()), False)


def test_fields_of_a_message_that_is_not_utf8_are_text_and_stable() -> None:
    """Each byte that is not UTF-8 becomes \\xNN, valid UTF-8 stays: the same
    bytes always give the same ExecID (dedupe) and nothing else moves."""
    text = escaped_text(FROM_QUICKFIX.replace("E-1", "E-\udcff\udcfe") + "1=\u00e9\x01")
    fields = fields_of(text)
    assert fields[17] == "E-\\xff\\xfe" and fields[58] == "caf\\xe9 \\xff\\xfe" and fields[1] == "é"
    assert fields[55] == "EUR/USD"
    fields[17].encode()                                       # storable text
    assert escaped_text(FROM_QUICKFIX) == escaped_text(LATIN.decode("utf-8", "surrogateescape"))


def test_an_oversized_message_is_framed_truncated_with_its_true_size() -> None:
    big = RAW.replace("\x0110=", "\x0158=" + "é" * 600_000 + "\x0110=")
    size = len(big.encode())
    frame = message_frame("oversized", 1, 7, big, limit=1024 * 1024)
    assert len(frame) < TRUNCATED_KEEP + 64
    [(_, payload)] = FrameReader().feed(frame)
    item = decode_message(payload, SESSIONS)
    assert item.truncated and item.size == size and item.kind == "oversized"
    assert not item.binary                                    # not cut inside a character
    assert big.startswith(item.raw)
    fields = tolerant_fields(item.raw, item.truncated)
    assert fields[34] == "7" and fields[35] == "8" and 58 not in fields   # the cut field is left out
    assert journal_raw(item)[2:] == (size, True)


def test_the_pipe_takes_any_message_the_gateway_accepts() -> None:
    """A message at the largest size cap the configuration allows (8 MiB)
    fits a frame (MAX_FRAME 16 MiB): a longer length on the pipe can only be
    corruption."""
    cap = MAX_MESSAGE_BYTES_LIMIT
    assert cap + MESSAGE_META.size + 4096 <= MAX_FRAME
    big = RAW.replace("\x0110=", "\x0158=" + "x" * (cap - len(RAW) - 4) + "\x0110=")
    assert len(big.encode()) == cap
    frame = message_frame("app", 0, 1, big, limit=cap)
    reader = FrameReader()
    out = []
    for i in range(0, len(frame), 1 << 20):
        out += reader.feed(frame[i:i + (1 << 20)])
    [(_, payload)] = out
    assert decode_message(payload, SESSIONS).raw == big
    with pytest.raises(WireError):
        FrameReader().feed(HEADER.pack(MESSAGE, MAX_FRAME + 1))
    # at the default cap the same message is truncated into a frame far below any limit
    assert len(message_frame("app", 0, 1, big)) < TRUNCATED_KEEP + 64


def test_a_cut_never_splits_a_character() -> None:
    for text in ("a" * 10 + "é" * 10, "ab" + "€" * 10, "x" + "😀" * 10):
        data = text.encode()
        for keep in range(len(data) + 1):
            assert _cut(data, keep).decode() == text[:len(_cut(data, keep).decode())]
            assert keep - 3 <= len(_cut(data, keep)) <= keep


def test_the_largest_field_names_the_reject() -> None:
    assert largest_field_tag(RAW.replace("\x0110=", "\x0158=" + "x" * 500 + "\x0110=").encode()) == 58
    assert largest_field_tag(RAW.encode()) == 52
