"""The FIX session state machine (fixsim.session), without I/O.

Two harnesses:

- ``Pair``: an initiator ("ENG") and an acceptor ("LP1") wired back to back.
  ``pump()`` moves each side's ``take_output()`` through a ``Framer`` into
  the other side's ``on_bytes_frame`` / ``on_garbled`` until both are quiet;
  a ``tamper`` hook can drop or corrupt frames in transit.  Every frame a
  side emits is parsed and kept in ``pair.sent[side]``.
- ``Scripted``: one acceptor ("LP1") fed hand-made messages from "ENG", the
  way the QuickFIX acceptance definitions drive it.

Time is a fake clock (``t[0]``), passed both as the session's ``clock`` and
as the ``now`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from fixsim.dictionary import load_dictionary
from fixsim.session import (
    BusinessRejectError,
    Session,
    SessionConfig,
    UnsupportedMessageType,
)
from fixsim.store import MemoryStore
from stp.fixwire import (
    SOH,
    Framer,
    Message,
    checksum,
    encode,
    format_utc_timestamp,
    parse_frame,
    parse_utc_timestamp,
)

T0 = 1_700_000_000.0
BEGIN = "FIX.4.4"
INI, ACC = "ENG", "LP1"


def ts(when: float) -> str:
    return format_utc_timestamp(when)


def order(cl_ord_id: str, when: float = T0) -> list[tuple[int, str]]:
    return [(11, cl_ord_id), (21, "3"), (40, "1"), (54, "1"), (55, "EUR/USD"), (60, ts(when))]


def split_frames(data: bytes) -> list[bytes]:
    """Frames of a session's output; every one must pass the Framer's checks."""
    framer = Framer()
    framer.feed(data)
    frames = []
    for frame, error in framer.frames():
        assert error is None, f"session emitted a bad frame ({error}): {frame!r}"
        frames.append(frame)
    assert framer.buffered == 0, "trailing bytes after the last frame"
    return frames


def types(msgs: Iterable[Message]) -> list[str]:
    return [m.msg_type for m in msgs]


def seqs(msgs: Sequence[Message]) -> list[int]:
    return [int(m[34]) for m in msgs]


def corrupt_checksum(frame: bytes) -> bytes:
    head, _, _ = frame.rpartition(b"10=")
    bad = (checksum(head) + 1) & 0xFF
    return head + b"10=%03d\x01" % bad


class RecordingApp:
    """Stores what the session hands up; ``on_app`` may raise to refuse."""

    def __init__(self) -> None:
        self.app_msgs: list[Message] = []
        self.admin_msgs: list[Message] = []
        self.logons = 0
        self.logouts = 0
        self.on_app: Callable[[Message], None] | None = None

    def on_logon(self, session: Session) -> None:
        self.logons += 1

    def on_logout(self, session: Session) -> None:
        self.logouts += 1

    def from_admin(self, msg: Message, session: Session) -> None:
        self.admin_msgs.append(msg)

    def from_app(self, msg: Message, session: Session) -> None:
        if self.on_app is not None:
            self.on_app(msg)
        self.app_msgs.append(msg)

    def cl_ord_ids(self) -> list[str]:
        return [m[11] for m in self.app_msgs]


Tamper = Callable[[str, Message, bytes], bytes | None]


class Pair:
    def __init__(self, ini: dict[str, Any] | None = None, acc: dict[str, Any] | None = None,
                 acc_dictionary: bool = False) -> None:
        self.t = [T0]

        def clock() -> float:
            return self.t[0]

        self.ini_app = RecordingApp()
        self.acc_app = RecordingApp()
        self.ini = Session(SessionConfig(BEGIN, INI, ACC, initiator=True, **(ini or {})),
                           self.ini_app, MemoryStore(), clock=clock)
        self.acc = Session(SessionConfig(BEGIN, ACC, INI, **(acc or {})), self.acc_app, MemoryStore(),
                           load_dictionary(BEGIN) if acc_dictionary else None, clock=clock)
        self.sides = {"ini": self.ini, "acc": self.acc}
        self.framers = {"ini": Framer(), "acc": Framer()}      # receiving framers
        self.sent: dict[str, list[Message]] = {"ini": [], "acc": []}
        self.tamper: Tamper | None = None

    @property
    def now(self) -> float:
        return self.t[0]

    def advance(self, seconds: float) -> None:
        self.t[0] += seconds

    def connect(self) -> None:
        self.acc.on_connect(self.now)
        self.ini.on_connect(self.now)

    def disconnect(self) -> None:
        self.ini.on_disconnect()
        self.acc.on_disconnect()
        self.framers = {"ini": Framer(), "acc": Framer()}

    def logon(self) -> None:
        self.connect()
        self.pump()
        assert self.ini.logged_on and self.acc.logged_on

    def mark(self) -> dict[str, int]:
        return {side: len(msgs) for side, msgs in self.sent.items()}

    def since(self, mark: dict[str, int], side: str) -> list[Message]:
        return self.sent[side][mark[side]:]

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for src, dst in (("ini", "acc"), ("acc", "ini")):
                data = self.sides[src].take_output()
                if not data:
                    continue
                moved = True
                self._deliver(src, dst, data)
            if not moved:
                return
        raise AssertionError("sessions never went quiet")

    def _deliver(self, src: str, dst: str, data: bytes) -> None:
        receiver = self.sides[dst]
        framer = self.framers[dst]
        for frame in split_frames(data):
            msg = parse_frame(frame)
            self.sent[src].append(msg)
            wire = frame if self.tamper is None else self.tamper(src, msg, frame)
            if wire is None or receiver.disconnect_requested:
                continue            # lost in transit / connection already closed
            framer.feed(wire)
            for rframe, error in framer.frames():
                if error is not None:
                    receiver.on_garbled(rframe, error)
                else:
                    receiver.on_bytes_frame(rframe, self.now)


def drop(side: str, *seq_nums: int, msg_type: str | None = None) -> Tamper:
    """Lose the frames ``side`` sends with these MsgSeqNums (first copy only)."""
    pending = set(seq_nums)

    def tamper(src: str, msg: Message, frame: bytes) -> bytes | None:
        seq = int(msg[34])
        if src == side and seq in pending and (msg_type is None or msg.msg_type == msg_type) \
                and msg.get(43) != "Y":
            pending.discard(seq)
            return None
        return frame

    return tamper


class Scripted:
    """An acceptor ("LP1") driven by hand-made messages from "ENG"."""

    def __init__(self, dictionary: bool = False, begin: str = BEGIN, **config: Any) -> None:
        self.t = [T0]
        self.begin = begin
        self.app = RecordingApp()
        self.s = Session(SessionConfig(begin, ACC, INI, **config), self.app, MemoryStore(),
                         load_dictionary(begin) if dictionary else None, clock=lambda: self.t[0])
        self.s.on_connect(self.t[0])

    def raw(self, msg_type: str, seq: int | str | None, body: Sequence[tuple[int, str]] = (),
            header: Sequence[tuple[int, str]] = (), sending_time: str | None = None,
            sender: str | None = INI, target: str | None = ACC) -> bytes:
        hdr: list[tuple[int, str]] = [(52, sending_time or ts(self.t[0]))]
        if seq is not None:
            hdr.append((34, str(seq)))
        if sender is not None:
            hdr.append((49, sender))
        if target is not None:
            hdr.append((56, target))
        hdr.extend(header)
        return encode(self.begin, msg_type, hdr, body)

    def send(self, msg_type: str, seq: int | str | None, body: Sequence[tuple[int, str]] = (),
             **kw: Any) -> list[Message]:
        self.s.on_bytes_frame(self.raw(msg_type, seq, body, **kw), self.t[0])
        return self.out()

    def out(self) -> list[Message]:
        return [parse_frame(f) for f in split_frames(self.s.take_output())]

    def logon(self, heartbeat: int = 30) -> None:
        out = self.send("A", 1, [(98, "0"), (108, str(heartbeat))])
        assert types(out) == ["A"] and self.s.logged_on

    def heartbeats(self, first: int, last: int) -> None:
        for seq in range(first, last + 1):
            assert self.send("0", seq) == []
        assert self.s.next_target_seq == last + 1


# ---------------------------------------------------------------- logon


def test_logon_handshake_both_ways() -> None:
    p = Pair(ini={"heartbeat_interval": 30})
    p.logon()
    [logon] = p.sent["ini"]
    [answer] = p.sent["acc"]
    assert (logon.msg_type, logon[34], logon[49], logon[56], logon[98], logon[108]) == \
        ("A", "1", INI, ACC, "0", "30")
    assert 141 not in logon
    assert (answer.msg_type, answer[34], answer[49], answer[56], answer[98], answer[108]) == \
        ("A", "1", ACC, INI, "0", "30")
    for s in (p.ini, p.acc):
        assert s.logged_on and not s.disconnect_requested
        assert (s.next_sender_seq, s.next_target_seq) == (2, 2)
        assert s.counters.logons == 1
    assert p.ini_app.logons == 1 and p.acc_app.logons == 1
    assert types(p.acc_app.admin_msgs) == ["A"]
    assert types(p.ini_app.admin_msgs) == ["A"]


def test_acceptor_takes_heartbeat_interval_from_initiator_logon() -> None:
    p = Pair(ini={"heartbeat_interval": 5}, acc={"heartbeat_interval": 60})
    p.logon()
    assert p.acc.heartbeat_interval == 5
    assert p.sent["acc"][0][108] == "5"
    # and the acceptor heartbeats on the initiator's interval, not its own
    p.advance(5)
    p.acc.on_timer(p.now)
    p.pump()
    assert [(m.msg_type, m[34]) for m in p.sent["acc"][1:]] == [("0", "2")]


def test_reset_seq_num_flag_on_logon() -> None:
    p = Pair(ini={"reset_on_logon": True})
    # both sides carry state from an earlier session
    for s in (p.ini, p.acc):
        s.store.save(1, b"old")
        s.store.next_sender_seq, s.store.next_target_seq = 10, 7
    p.logon()
    [logon] = p.sent["ini"]
    [answer] = p.sent["acc"]
    assert (logon[34], logon[141]) == ("1", "Y")
    assert (answer[34], answer[141]) == ("1", "Y")
    for s in (p.ini, p.acc):
        assert (s.next_sender_seq, s.next_target_seq) == (2, 2)
        assert [seq for seq, _ in s.store.get_range(1, 20)] == [1]
        assert s.store.get_range(1, 1)[0][1] != b"old"
    assert p.ini.counters.rejects_sent == p.acc.counters.rejects_sent == 0


def test_acceptor_reset_on_logon_without_flag_from_initiator() -> None:
    p = Pair(acc={"reset_on_logon": True})
    p.acc.store.next_sender_seq, p.acc.store.next_target_seq = 40, 30
    p.logon()
    assert p.sent["acc"][0][34] == "1"
    assert (p.acc.next_sender_seq, p.acc.next_target_seq) == (2, 2)


def test_logon_timeout_when_acceptor_never_answers() -> None:
    p = Pair(ini={"logon_timeout": 10})
    p.connect()
    p.ini.take_output()                        # lost
    p.advance(9.9)
    p.ini.on_timer(p.now)
    assert not p.ini.disconnect_requested
    p.advance(0.1)
    p.ini.on_timer(p.now)
    assert p.ini.disconnect_requested and not p.ini.logged_on


# ------------------------------------------------------- heartbeats and test requests


def test_heartbeat_after_heartbtint_of_silence() -> None:
    p = Pair(ini={"heartbeat_interval": 30})
    p.logon()
    m = p.mark()
    p.advance(29.9)
    p.ini.on_timer(p.now)
    p.acc.on_timer(p.now)
    p.pump()
    assert p.since(m, "ini") == [] and p.since(m, "acc") == []
    p.advance(0.1)
    p.ini.on_timer(p.now)
    p.acc.on_timer(p.now)
    p.pump()
    [hb_i] = p.since(m, "ini")
    [hb_a] = p.since(m, "acc")
    assert (hb_i.msg_type, hb_i[34], 112 in hb_i) == ("0", "2", False)
    assert (hb_a.msg_type, hb_a[34], 112 in hb_a) == ("0", "2", False)
    assert p.ini.logged_on and p.acc.logged_on
    assert p.ini.next_target_seq == p.acc.next_target_seq == 3


def test_test_request_then_disconnect_when_peer_is_silent() -> None:
    p = Pair(ini={"heartbeat_interval": 30})
    p.logon()
    out: list[tuple[float, Message]] = []

    def tick(at: float) -> None:
        p.t[0] = T0 + at
        p.ini.on_timer(p.now)
        out.extend((at, m) for m in map(parse_frame, split_frames(p.ini.take_output())))

    tick(30)                       # our own silence: a Heartbeat
    tick(35.9)
    assert [(a, m.msg_type) for a, m in out] == [(30, "0")]
    tick(36)                       # 1.2 x HeartBtInt without receiving: TestRequest
    assert [(a, m.msg_type, m.get(112)) for a, m in out[1:]] == [(36, "1", "TEST")]
    assert out[1][1][34] == "3"
    for at in (40, 50, 66, 71.9):  # no Heartbeat while a TestRequest is outstanding
        tick(at)
    assert len(out) == 2 and not p.ini.disconnect_requested
    tick(72)                       # 2.4 x HeartBtInt: give up
    assert p.ini.disconnect_requested
    assert len(out) == 2


def test_test_request_is_answered_with_its_test_req_id() -> None:
    p = Pair(ini={"heartbeat_interval": 30})
    p.logon()
    m = p.mark()
    p.advance(36)
    p.ini.on_timer(p.now)          # acceptor silent for 36 s (no acceptor tick)
    p.pump()
    assert [(x.msg_type, x.get(112)) for x in p.since(m, "ini")] == [("1", "TEST")]
    assert [(x.msg_type, x[34], x.get(112)) for x in p.since(m, "acc")] == [("0", "2", "TEST")]
    assert p.ini.test_request_counter == 0
    p.advance(36)                  # 72 s after logon but only 36 s since the answer
    p.ini.on_timer(p.now)
    assert not p.ini.disconnect_requested


def test_scripted_test_request_answered() -> None:
    sc = Scripted()
    sc.logon()
    [hb] = sc.send("1", 2, [(112, "HELLO")])
    assert (hb.msg_type, hb[34], hb[112]) == ("0", "2", "HELLO")
    assert sc.s.next_target_seq == 3


# ------------------------------------------------------------ gaps and resends


def test_gap_two_app_messages_dropped_are_recovered_in_order_once() -> None:
    p = Pair()
    p.logon()
    p.tamper = drop("ini", 2, 3)
    p.advance(1)
    sent = [p.ini.send("D", order(f"O{i}")) for i in (1, 2, 3)]
    assert sent == [2, 3, 4]
    originals = {int(m[34]): m for m in map(parse_frame, (raw for _, raw in p.ini.store.get_range(2, 4)))}
    p.advance(1)
    m = p.mark()
    p.pump()
    from_acc = p.since(m, "acc")
    resend_requests = [x for x in from_acc if x.msg_type == "2"]
    assert len(resend_requests) == 1
    rr = resend_requests[0]
    assert (rr[34], rr[7], rr[16]) == ("2", "2", "0")
    assert p.acc.counters.resend_requests_sent == 1
    # wire from the initiator: 2, 3 lost; 4; then the resend of 2..4
    from_ini = p.since(m, "ini")
    assert [(x.msg_type, x[34], x.get(43)) for x in from_ini] == [
        ("D", "2", None), ("D", "3", None), ("D", "4", None),
        ("D", "2", "Y"), ("D", "3", "Y"), ("D", "4", "Y")]
    for resent in from_ini[3:]:
        orig = originals[int(resent[34])]
        assert resent[122] == orig[52]
        assert resent[52] != resent[122]
        assert parse_utc_timestamp(resent[52]) > parse_utc_timestamp(resent[122])
        assert resent[11] == orig[11]
    # processed in order, exactly once
    assert p.acc_app.cl_ord_ids() == ["O1", "O2", "O3"]
    assert p.acc.next_target_seq == 5
    assert p.acc.counters.poss_dup_ignored == 1            # the resent copy of 4
    assert p.acc.resend_range is None and p.acc._queue == {}
    assert p.ini.counters.messages_resent == 3
    assert p.acc.counters.rejects_sent == 0 and p.acc.logged_on


def test_gap_admin_messages_replaced_by_one_gap_fill() -> None:
    p = Pair()
    p.logon()
    # initiator sends D2, HB3, HB4, D5; lose them all, deliver D6
    p.tamper = drop("ini", 2, 3, 4, 5)
    p.advance(1)
    p.ini.send("D", order("A"))
    p.ini.generate_heartbeat(None, p.now)
    p.ini.generate_heartbeat(None, p.now)
    p.ini.send("D", order("B"))
    p.ini.send("D", order("C"))
    assert p.ini.next_sender_seq == 7
    p.advance(1)
    m = p.mark()
    p.pump()
    [rr] = [x for x in p.since(m, "acc") if x.msg_type == "2"]
    assert (rr[7], rr[16]) == ("2", "0")
    resent = p.since(m, "ini")[5:]
    assert [(x.msg_type, x[34]) for x in resent] == [("D", "2"), ("4", "3"), ("D", "5"), ("D", "6")]
    gap_fill = resent[1]
    assert (gap_fill[123], gap_fill[43], gap_fill[36]) == ("Y", "Y", "5")
    assert 122 in gap_fill
    assert p.ini.counters.gap_fills_sent == 1
    assert p.acc_app.cl_ord_ids() == ["A", "B", "C"]
    assert p.acc.next_target_seq == 7
    assert p.acc.logged_on and p.acc.counters.rejects_sent == 0


@pytest.mark.parametrize(("end", "expected"), [
    (4, [("4", 2, "5")]),
    (6, [("4", 2, "5"), ("D", 5, None), ("D", 6, None)]),
    (8, [("4", 2, "5"), ("D", 5, None), ("D", 6, None), ("4", 7, "9")]),
    (9, [("4", 2, "5"), ("D", 5, None), ("D", 6, None), ("4", 7, "9"), ("D", 9, None)]),
    (0, [("4", 2, "5"), ("D", 5, None), ("D", 6, None), ("4", 7, "9"), ("D", 9, None)]),
])
def test_resend_request_admin_and_application_messages(end: int, expected: list[Any]) -> None:
    """8_AdminAndApplicationMessages: admin 2-4, app 5-6, admin 7-8, app 9."""
    sc = Scripted()
    sc.logon()
    seq = 2
    for _ in range(3):
        assert types(sc.send("1", seq, [(112, "HELLO")])) == ["0"]
        seq += 1
    sc.s.send("D", order("INTC"))
    sc.s.send("D", order("CDG"))
    sc.out()
    for _ in range(2):
        assert types(sc.send("1", seq, [(112, "HELLO")])) == ["0"]
        seq += 1
    sc.s.send("D", order("IVP"))
    originals = {n: parse_frame(raw) for n, raw in sc.s.store.get_range(1, 9)}
    sc.out()
    sc.t[0] += 5
    out = sc.send("2", seq, [(7, "2"), (16, str(end))])
    assert [(m.msg_type, int(m[34]), m.get(36)) for m in out] == expected
    for m in out:
        assert m[43] == "Y"
        if m.msg_type == "4":
            assert m[123] == "Y"
        else:
            assert m[122] == originals[int(m[34])][52]
            assert m[52] == ts(sc.t[0])
    # our own sequence numbers are untouched by the resend
    [hb] = sc.send("1", seq + 1, [(112, "HELLO")])
    assert (hb.msg_type, hb[34]) == ("0", "10")


def test_msg_seq_num_too_high_queues_and_requests_resend() -> None:
    """2b_MsgSeqNumTooHigh."""
    sc = Scripted()
    sc.logon()
    sc.heartbeats(2, 4)
    [rr] = sc.send("0", 10)
    assert (rr.msg_type, rr[34], rr[7], rr[16]) == ("2", "2", "5", "0")
    assert sc.s.next_target_seq == 5 and sc.s.resend_range == (5, 9)
    for seq in range(5, 10):
        assert sc.send("0", seq) == []
    assert sc.s.next_target_seq == 11                      # the queued 10 was processed too
    assert sc.s.resend_range is None
    [logout] = sc.send("5", 11)
    assert (logout.msg_type, logout[34]) == ("5", "3")
    assert sc.s.disconnect_requested


# ---------------------------------------------------------------- garbled


def test_garbled_frame_after_logon_is_ignored_and_recovered() -> None:
    p = Pair()
    p.logon()
    done = set()

    def corrupt(src: str, msg: Message, frame: bytes) -> bytes:
        if src == "ini" and msg[34] == "2" and msg.get(43) != "Y" and 2 not in done:
            done.add(2)
            return corrupt_checksum(frame)
        return frame

    p.tamper = corrupt
    p.ini.send("D", order("X"))
    m = p.mark()
    p.pump()
    assert p.acc.counters.garbled == 1
    assert p.since(m, "acc") == []                         # no Reject, nothing at all
    assert p.acc.logged_on and not p.acc.disconnect_requested
    assert p.acc.next_target_seq == 2 and p.acc_app.app_msgs == []
    # the next message shows the gap, which is recovered
    p.ini.send("D", order("Y"))
    p.pump()
    assert [(x.msg_type, x[7]) for x in p.since(m, "acc") if x.msg_type == "2"] == [("2", "2")]
    assert p.acc_app.cl_ord_ids() == ["X", "Y"]
    assert p.acc.counters.rejects_sent == 0


def test_garbled_frame_before_logon_disconnects() -> None:
    p = Pair()
    p.tamper = lambda src, msg, frame: corrupt_checksum(frame) if msg.msg_type == "A" else frame
    p.connect()
    p.pump()
    assert p.acc.counters.garbled == 1
    assert p.acc.disconnect_requested
    assert p.sent["acc"] == [] and not p.acc.logged_on and p.acc_app.logons == 0


def test_on_garbled_directly() -> None:
    sc = Scripted()
    sc.logon()
    sc.s.on_garbled(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01", "CheckSum mismatch")
    assert sc.out() == [] and not sc.s.disconnect_requested and sc.s.counters.garbled == 1


# ----------------------------------------------------------- too low / PossDup


def test_msg_seq_num_too_low_without_possdup_logs_out() -> None:
    """2c_MsgSeqNumTooLow."""
    sc = Scripted()
    sc.logon()
    sc.heartbeats(2, 4)
    [logout] = sc.send("0", 2)
    assert (logout.msg_type, logout[34]) == ("5", "2")
    assert logout[58] == "MsgSeqNum too low, expecting 5 but received 2"
    assert sc.s.disconnect_requested


def test_possdup_too_low_with_orig_sending_time_is_ignored() -> None:
    """2e_PossDupAlreadyReceived / 19a."""
    sc = Scripted()
    sc.logon()
    assert sc.send("D", 2, order("ID")) == []
    assert sc.send("D", 3, order("ID2")) == []
    out = sc.send("D", 2, order("ID"), header=[(43, "Y"), (122, ts(T0 - 1))])
    assert out == []
    assert sc.s.counters.poss_dup_ignored == 1
    assert sc.s.next_target_seq == 4 and not sc.s.disconnect_requested
    assert sc.app.cl_ord_ids() == ["ID", "ID2"]


def test_possdup_orig_sending_time_after_sending_time_rejected() -> None:
    """2f_PossDupOrigSendingTimeTooHigh."""
    sc = Scripted()
    sc.logon()
    sc.send("D", 2, order("ID"))
    sc.send("D", 3, order("ID"))
    out = sc.send("D", 2, order("ID"), header=[(43, "Y"), (122, ts(T0 + 10))])
    assert types(out) == ["3", "5"]
    rej = out[0]
    assert (rej[45], rej[372], rej[373], rej[58]) == ("2", "D", "10", "SendingTime accuracy problem")
    assert sc.s.next_target_seq == 4


def test_possdup_without_orig_sending_time_rejected_without_seq_increment() -> None:
    """2g_PossDupNoOrigSendingTime."""
    sc = Scripted()
    sc.logon()
    sc.send("D", 2, order("ID"))
    sc.send("D", 3, order("ID"))
    [rej] = sc.send("D", 2, order("ID"), header=[(43, "Y")])
    assert (rej.msg_type, rej[34], rej[45], rej[371], rej[372], rej[373], rej[58]) == \
        ("3", "2", "2", "122", "D", "1", "Required tag missing")
    assert sc.s.next_target_seq == 4
    [hb] = sc.send("1", 4, [(112, "HELLO")])
    assert (hb.msg_type, hb[34], hb[112]) == ("0", "3", "HELLO")
    assert sc.app.cl_ord_ids() == ["ID", "ID"]


# ------------------------------------------------------------ SequenceReset


def test_sequence_reset_reset_mode_moves_expected_seq() -> None:
    """11a_NewSeqNoGreater / 11b_NewSeqNoEqual."""
    sc = Scripted()
    sc.logon()
    assert sc.send("4", 0, [(36, "25")]) == []
    assert sc.s.next_target_seq == 25
    [hb] = sc.send("1", 25, [(112, "HELLO")])
    assert (hb.msg_type, hb[34]) == ("0", "2")
    assert sc.send("4", 0, [(36, "50"), (123, "N")]) == []
    assert sc.s.next_target_seq == 50
    assert sc.send("4", 0, [(36, "50")]) == []              # equal: nothing happens
    assert sc.s.next_target_seq == 50 and sc.s.counters.rejects_sent == 0


def test_sequence_reset_reset_mode_to_lower_number_rejected() -> None:
    """11c_NewSeqNoLess."""
    sc = Scripted()
    sc.logon()
    [rej] = sc.send("4", 0, [(36, "1")])
    assert (rej.msg_type, rej[34], rej[45], rej[372], rej[373]) == ("3", "2", "0", "4", "5")
    assert rej[58] == "Value is incorrect (out of range) for this tag"
    assert 371 not in rej
    assert sc.s.next_target_seq == 2
    [hb] = sc.send("1", 2, [(112, "HELLO")])
    assert hb[34] == "3"


def test_sequence_reset_gap_fill_in_sequence() -> None:
    sc = Scripted()
    sc.logon()
    assert sc.send("4", 2, [(36, "6"), (123, "Y")], header=[(43, "Y"), (122, ts(T0))]) == []
    assert sc.s.next_target_seq == 6


# ------------------------------------------------------- SendingTime / CompID


@pytest.mark.parametrize("offset", [-121, 121])
def test_sending_time_out_of_range_rejected_and_logged_out(offset: int) -> None:
    """2o_SendingTimeValueOutOfRange."""
    sc = Scripted()
    sc.logon()
    out = sc.send("0", 2, sending_time=ts(T0 + offset))
    assert [(m.msg_type, m[34]) for m in out] == [("3", "2"), ("5", "3")]
    rej, logout = out
    assert (rej[45], rej[372], rej[373], rej[58]) == ("2", "0", "10", "SendingTime accuracy problem")
    assert 58 not in logout
    assert sc.s.sent_logout and not sc.s.disconnect_requested
    assert sc.send("5", 3) == []                           # their answer: we are done
    assert sc.s.disconnect_requested


def test_sending_time_within_window_accepted() -> None:
    sc = Scripted()
    sc.logon()
    assert sc.send("0", 2, sending_time=ts(T0 - 119)) == []
    assert sc.s.next_target_seq == 3


@pytest.mark.parametrize(("sender", "target"), [("WT", ACC), (INI, "DLSI"), ("WT", "DLSI")])
def test_wrong_comp_id_after_logon_rejected_and_logged_out(sender: str, target: str) -> None:
    """2k_CompIDDoesNotMatchProfile."""
    sc = Scripted()
    sc.logon()
    out = sc.send("D", 2, order("ID"), sender=sender, target=target)
    assert [(m.msg_type, m[34]) for m in out] == [("3", "2"), ("5", "3")]
    rej = out[0]
    assert (rej[45], rej[372], rej[373], rej[58]) == ("2", "D", "9", "CompID problem")
    assert sc.app.app_msgs == []
    assert sc.s.sent_logout


# ------------------------------------------------------- application refusals


def test_unsupported_message_type_business_reject() -> None:
    sc = Scripted()
    sc.logon()

    def refuse(msg: Message) -> None:
        raise UnsupportedMessageType()

    sc.app.on_app = refuse
    [bmr] = sc.send("D", 2, order("ID"))
    assert (bmr.msg_type, bmr[34], bmr[45], bmr[372], bmr[380], bmr[58]) == \
        ("j", "2", "2", "D", "3", "Unsupported Message Type")
    assert sc.s.next_target_seq == 3
    assert sc.s.counters.business_rejects_sent == 1 and sc.s.logged_on


def test_business_reject_error_values_on_the_wire() -> None:
    sc = Scripted()
    sc.logon()

    def refuse(msg: Message) -> None:
        raise BusinessRejectError(1, "no such order")

    sc.app.on_app = refuse
    [bmr] = sc.send("G", 2, order("ID"))
    assert (bmr.msg_type, bmr[45], bmr[372], bmr[380], bmr[58]) == ("j", "2", "G", "1", "no such order")
    assert sc.s.next_target_seq == 3 and sc.s.logged_on


def test_application_exception_does_not_kill_the_session() -> None:
    sc = Scripted()
    sc.logon()
    calls = []

    def boom(msg: Message) -> None:
        calls.append(msg[11])
        if msg[11] == "BAD":
            raise RuntimeError("bug in the application")

    sc.app.on_app = boom
    [bmr] = sc.send("D", 2, order("BAD"))
    assert (bmr.msg_type, bmr[45], bmr[372], bmr[380]) == ("j", "2", "D", "4")
    assert sc.s.logged_on and not sc.s.disconnect_requested
    assert sc.s.next_target_seq == 3
    assert sc.send("D", 3, order("GOOD")) == []
    assert calls == ["BAD", "GOOD"] and sc.app.cl_ord_ids() == ["GOOD"]
    assert sc.s.next_target_seq == 4


def test_unsupported_message_type_through_pair() -> None:
    p = Pair()
    p.logon()
    p.acc_app.on_app = lambda msg: (_ for _ in ()).throw(UnsupportedMessageType())
    p.ini.send("D", order("ID"))
    m = p.mark()
    p.pump()
    [bmr] = p.since(m, "acc")
    assert (bmr.msg_type, bmr[380], bmr[45]) == ("j", "3", "2")
    assert [x[372] for x in p.ini_app.app_msgs] == ["D"]   # the initiator's app sees the 35=j
    assert p.acc.next_target_seq == 3 and p.ini.next_target_seq == 3


# ------------------------------------------------------------ credentials


@pytest.mark.parametrize(("username", "password", "reason"), [
    ("trader", "wrong", "invalid password"),
    ("nobody", "secret", "invalid username"),
    (None, None, "invalid username"),
])
def test_acceptor_refuses_bad_credentials(username: str | None, password: str | None,
                                          reason: str) -> None:
    p = Pair(ini={"username": username, "password": password},
             acc={"username": "trader", "password": "secret"})
    p.connect()
    p.pump()
    logon, answer = p.sent["ini"]          # the initiator answers the Logout and goes
    assert (answer.msg_type, answer[34]) == ("5", "2") and p.ini.disconnect_requested
    if username is not None:
        assert (logon[553], logon[554]) == (username, password)
    [logout] = p.sent["acc"]
    assert (logout.msg_type, logout[58]) == ("5", reason)
    assert p.acc.disconnect_requested and not p.acc.logged_on
    assert p.acc_app.logons == 0 and p.ini_app.logons == 0
    assert not p.ini.logged_on


def test_acceptor_accepts_right_credentials() -> None:
    p = Pair(ini={"username": "trader", "password": "secret"},
             acc={"username": "trader", "password": "secret"})
    p.logon()
    assert p.acc_app.logons == 1 and p.ini_app.logons == 1
    assert types(p.sent["acc"]) == ["A"]


# ------------------------------------------------------------------ logout


def test_logout_handshake() -> None:
    p = Pair()
    p.logon()
    p.ini.logout("end of day")
    p.pump()
    [lo_i] = p.sent["ini"][1:]
    [lo_a] = p.sent["acc"][1:]
    assert (lo_i.msg_type, lo_i[34], lo_i[58]) == ("5", "2", "end of day")
    assert (lo_a.msg_type, lo_a[34], 58 in lo_a) == ("5", "2", False)
    assert p.ini.disconnect_requested and p.acc.disconnect_requested
    assert p.ini.next_target_seq == 3 and p.acc.next_target_seq == 3
    p.disconnect()
    assert p.ini_app.logouts == 1 and p.acc_app.logouts == 1
    assert not p.ini.logged_on and not p.acc.logged_on


def test_logout_times_out_when_peer_never_answers() -> None:
    p = Pair(ini={"logout_timeout": 2.0})
    p.logon()
    p.ini.logout()
    assert types(map(parse_frame, split_frames(p.ini.take_output()))) == ["5"]  # lost
    p.advance(1.9)
    p.ini.on_timer(p.now)
    assert not p.ini.disconnect_requested
    p.advance(0.1)
    p.ini.on_timer(p.now)
    assert p.ini.disconnect_requested
    p.ini.logout()                                         # a second logout sends nothing
    assert p.ini.take_output() == b""


# --------------------------------------------------------------- reconnect


def test_sequence_numbers_persist_across_reconnect() -> None:
    p = Pair()
    p.logon()
    p.ini.send("D", order("A"))
    p.acc.send("8", [(11, "A"), (17, "E1")])
    p.pump()
    p.disconnect()
    assert (p.ini.next_sender_seq, p.ini.next_target_seq) == (3, 3)
    p.advance(10)
    m = p.mark()
    p.logon()
    [logon] = p.since(m, "ini")
    [answer] = p.since(m, "acc")
    assert (logon.msg_type, logon[34], 141 in logon) == ("A", "3", False)
    assert (answer.msg_type, answer[34]) == ("A", "3")
    assert (p.ini.next_sender_seq, p.ini.next_target_seq) == (4, 4)
    assert (p.acc.next_sender_seq, p.acc.next_target_seq) == (4, 4)
    assert p.ini_app.logons == 2 and p.acc_app.logons == 2


def test_messages_lost_before_disconnect_recovered_after_reconnect() -> None:
    p = Pair()
    p.logon()
    p.ini.send("D", order("A"))
    p.pump()
    p.tamper = drop("ini", 3, 4)
    p.ini.send("D", order("B"))
    p.ini.send("D", order("C"))
    p.pump()                       # both lost, then the connection drops
    p.disconnect()
    p.tamper = None
    p.advance(5)
    m = p.mark()
    p.connect()
    p.pump()
    assert p.ini.logged_on and p.acc.logged_on
    from_ini = p.since(m, "ini")
    from_acc = p.since(m, "acc")
    assert (from_ini[0].msg_type, from_ini[0][34]) == ("A", "5")
    assert [(x.msg_type, x[34]) for x in from_acc] == [("A", "2"), ("2", "3")]
    assert (from_acc[1][7], from_acc[1][16]) == ("3", "0")
    assert [(x.msg_type, x[34], x.get(43), x.get(36)) for x in from_ini[1:]] == [
        ("D", "3", "Y", None), ("D", "4", "Y", None), ("4", "5", "Y", "6")]
    assert p.acc_app.cl_ord_ids() == ["A", "B", "C"]
    assert p.acc.next_target_seq == 6 and p.ini.next_sender_seq == 6
    assert p.acc.resend_range is None


def test_message_sent_while_disconnected_is_not_written_ahead_of_logon() -> None:
    p = Pair()
    p.logon()
    p.disconnect()
    p.ini.send("D", order("OFFLINE"))          # stored for a resend, as QuickFIX does
    p.advance(5)
    p.ini.on_connect(p.now)
    first = parse_frame(split_frames(p.ini.take_output())[0])
    assert first.msg_type == "A"


def test_message_sent_while_disconnected_recovered_after_reconnect() -> None:
    p = Pair()
    p.logon()
    p.disconnect()
    p.ini.send("D", order("OFFLINE"))
    p.advance(5)
    p.connect()
    p.pump()
    assert p.ini.logged_on and p.acc.logged_on and not p.acc.disconnect_requested
    assert p.acc_app.cl_ord_ids() == ["OFFLINE"]
    assert p.acc.next_target_seq == p.ini.next_sender_seq


# -------------------------------------------------------- send_batch / possdup


def test_send_batch_consecutive_stored_and_valid() -> None:
    p = Pair()
    p.logon()
    bodies = [f"11=B{i}{SOH}55=EUR/USD{SOH}54=1{SOH}38=1000000{SOH}" for i in range(5)]
    p.advance(0.5)
    assert p.ini.send_batch("D", bodies, p.now) == 5
    assert p.ini.next_sender_seq == 7
    data = p.ini.take_output()
    frames = split_frames(data)                # Framer accepts them, checksums and lengths valid
    assert len(frames) == 5
    stored = p.ini.store.get_range(2, 6)
    assert [seq for seq, _ in stored] == [2, 3, 4, 5, 6]
    assert [raw for _, raw in stored] == frames
    for i, (frame, msg) in enumerate(zip(frames, map(parse_frame, frames), strict=True)):
        assert [t for t, _ in msg.fields[:7]] == [8, 9, 35, 34, 49, 52, 56]
        assert (msg.msg_type, msg[34], msg[49], msg[56], msg[11]) == ("D", str(2 + i), INI, ACC, f"B{i}")
        assert msg[52] == ts(p.now)
        assert int(msg[9]) == len(frame) - frame.index(b"35=") - len(b"10=000\x01")
        assert int(msg[10]) == checksum(frame[:frame.rindex(b"10=")])
    assert p.ini.counters.sent == 1 + 5
    p.framers["acc"].feed(data)
    for frame, error in p.framers["acc"].frames():
        assert error is None
        p.acc.on_bytes_frame(frame, p.now)
    assert p.acc_app.cl_ord_ids() == [f"B{i}" for i in range(5)]
    assert p.acc.next_target_seq == 7
    assert p.ini.send_batch("D", [], p.now) == 0 and p.ini.take_output() == b""


def test_send_batch_resent_with_possdup_after_loss() -> None:
    p = Pair()
    p.logon()
    p.tamper = drop("ini", 2, 3)
    p.ini.send_batch("D", [f"11=B{i}{SOH}" for i in range(3)])
    p.pump()
    assert p.acc_app.cl_ord_ids() == ["B0", "B1", "B2"]
    assert p.acc.next_target_seq == 5


def test_resend_possdup_is_ignored_by_receiver() -> None:
    p = Pair()
    p.logon()
    p.ini.send("D", order("ID"))
    p.pump()
    original = p.sent["ini"][-1]
    p.advance(3)
    assert p.ini.resend_possdup(2, p.now) is True
    m = p.mark()
    p.pump()
    [dup] = p.since(m, "ini")
    assert (dup.msg_type, dup[34], dup[43], dup[122], dup[11]) == ("D", "2", "Y", original[52], "ID")
    assert dup[52] == ts(p.now)
    assert p.since(m, "acc") == []
    assert p.acc.counters.poss_dup_ignored == 1
    assert p.acc_app.cl_ord_ids() == ["ID"]
    assert p.acc.next_target_seq == 3 and p.ini.next_sender_seq == 3
    assert p.ini.resend_possdup(99) is False


# ------------------------------------------------------ dictionary validation


def test_undefined_tag_rejected_with_ref_tag_id() -> None:
    """14a_BadField."""
    sc = Scripted(dictionary=True)
    sc.logon(heartbeat=2)
    [rej] = sc.send("0", 2, [(999, "HI")])
    assert (rej.msg_type, rej[34], rej[45], rej[371], rej[372], rej[373], rej[58]) == \
        ("3", "2", "2", "999", "0", "0", "Invalid tag number")
    assert sc.s.next_target_seq == 3
    [rej] = sc.send("D", 3, [*order("ID"), (5000, "HI")])
    assert (rej[45], rej[371], rej[372], rej[373]) == ("3", "5000", "D", "0")
    assert sc.s.next_target_seq == 4 and sc.app.app_msgs == []


def test_required_tag_missing_rejected() -> None:
    """14b_RequiredFieldMissing."""
    sc = Scripted(dictionary=True)
    sc.logon(heartbeat=2)
    [rej] = sc.send("0", 2, target=None)
    assert (rej[45], rej[371], rej[372], rej[373], rej[58]) == ("2", "56", "0", "1", "Required tag missing")
    no_cl_ord_id = [f for f in order("ID") if f[0] != 11]
    [rej] = sc.send("D", 3, no_cl_ord_id)
    assert (rej.msg_type, rej[34], rej[45], rej[371], rej[372], rej[373]) == ("3", "3", "3", "11", "D", "1")
    assert sc.s.next_target_seq == 4 and sc.app.app_msgs == []
    assert sc.s.logged_on


def test_validation_through_pair() -> None:
    p = Pair(acc_dictionary=True)
    p.logon()
    p.ini.send("D", [*order("ID"), (9999, "X")])
    m = p.mark()
    p.pump()
    [rej] = p.since(m, "acc")
    assert (rej.msg_type, rej[371], rej[373]) == ("3", "9999", "0")
    assert p.acc.next_target_seq == 3 and p.acc_app.app_msgs == []
    p.ini.send("D", order("OK"))
    p.pump()
    assert p.acc_app.cl_ord_ids() == ["OK"]


def test_resent_message_keeps_header_extras_and_passes_validation() -> None:
    p = Pair(acc_dictionary=True)
    p.logon()
    p.tamper = drop("ini", 2)
    # session-owned header tags from the application (34, 43) are ignored
    p.ini.send("D", order("X"), header=[(50, "DESK1"), (115, "CLIENT"), (34, "999"), (43, "Y")])
    p.ini.send("D", order("Y"))
    p.advance(1)
    m = p.mark()
    p.pump()
    original, _, resent, _ = p.sent["ini"][1:5]
    assert (original[34], 43 in original, original[50], original[115]) == ("2", False, "DESK1", "CLIENT")
    assert (resent[34], resent[43], resent[50], resent[115], resent[122]) == \
        ("2", "Y", "DESK1", "CLIENT", original[52])
    # header first (tag order), then the body as it was
    tags = [t for t, _ in resent.fields]
    assert tags[:11] == [8, 9, 35, 34, 43, 49, 50, 52, 56, 115, 122]
    assert tags[11:-1] == [t for t, _ in original.fields][9:-1]
    assert [x.msg_type for x in p.since(m, "acc")] == ["2"]     # no Reject from the validator
    assert p.acc_app.cl_ord_ids() == ["X", "Y"]


def test_reset_on_disconnect_restarts_at_one_with_reset_flag() -> None:
    p = Pair(ini={"reset_on_disconnect": True}, acc={"reset_on_disconnect": True})
    p.logon()
    p.ini.send("D", order("X"))
    p.pump()
    p.disconnect()
    assert (p.ini.next_sender_seq, p.acc.next_target_seq) == (1, 1)
    m = p.mark()
    p.logon()
    [logon] = p.since(m, "ini")
    [answer] = p.since(m, "acc")
    assert (logon[34], logon[141], answer[34], answer[141]) == ("1", "Y", "1", "Y")
    assert (p.ini.next_sender_seq, p.acc.next_target_seq) == (2, 2)


def test_file_store_restart_recovers_lost_message(tmp_path: Any) -> None:
    from fixsim.store import FileStore

    p = Pair()

    def install(pair: Pair) -> None:
        for side, init in (("ini", True), ("acc", False)):
            old = pair.sides[side]
            cfg = old.config
            session = Session(cfg, old.app, FileStore(tmp_path, cfg.key), clock=old.clock)
            pair.sides[side] = session
            setattr(pair, side, session)
            assert session.config.initiator is init

    install(p)
    p.logon()
    p.ini.send("D", order("A"))
    p.pump()
    p.tamper = drop("ini", 3)
    p.ini.send("D", order("B"))
    p.pump()
    p.disconnect()
    p.ini.store.close()
    p.acc.store.close()
    p.tamper = None
    install(p)                                             # a process restart
    assert (p.ini.next_sender_seq, p.ini.next_target_seq) == (4, 2)
    assert (p.acc.next_sender_seq, p.acc.next_target_seq) == (2, 3)
    p.logon()
    assert p.acc_app.cl_ord_ids() == ["A", "B"]
    assert p.acc.next_target_seq == p.ini.next_sender_seq == 5
    p.ini.store.close()
    p.acc.store.close()


def test_simultaneous_gaps_both_directions_converge() -> None:
    p = Pair()
    p.logon()
    p.tamper = lambda src, msg, frame: None if (
        msg.msg_type == "D" and msg[34] in ("2", "3") and msg.get(43) != "Y") else frame
    for i in range(3):
        p.ini.send("D", order(f"I{i}"))
        p.acc.send("D", order(f"A{i}"))
    p.pump()
    assert p.acc_app.cl_ord_ids() == ["I0", "I1", "I2"]
    assert p.ini_app.cl_ord_ids() == ["A0", "A1", "A2"]
    for s in (p.ini, p.acc):
        assert s.logged_on and not s.disconnect_requested
        assert s.counters.resend_requests_sent == 1 and s.resend_range is None
    assert p.ini.next_target_seq == p.acc.next_sender_seq
    assert p.acc.next_target_seq == p.ini.next_sender_seq


def test_malformed_msg_seq_num_rejected_by_dictionary() -> None:
    """14f_IncorrectDataFormat for MsgSeqNum: Reject 373=6, expected seq unchanged."""
    sc = Scripted(dictionary=True)
    sc.logon()
    [rej] = sc.send("D", "2x", order("X"))
    assert (rej.msg_type, rej[45], rej[371], rej[373]) == ("3", "2x", "34", "6")
    assert sc.s.next_target_seq == 2
    assert sc.send("D", 2, order("Y")) == []
    assert sc.app.cl_ord_ids() == ["Y"]


def test_malformed_msg_seq_num_without_dictionary_does_not_advance_expected_seq() -> None:
    sc = Scripted()
    sc.logon()
    out = sc.send("D", "2x", order("X"))
    assert "j" not in types(out)
    assert sc.s.next_target_seq == 2
    assert sc.send("D", 2, order("Y")) == []
    assert not sc.s.disconnect_requested and sc.app.cl_ord_ids() == ["Y"]


def test_fix42_reject_reason_only_for_codes_defined_in_42() -> None:
    """14h_RepeatedTag (FIX.4.2): no 373 for reasons above 11; 373 kept for 10."""
    sc = Scripted(dictionary=True, begin="FIX.4.2")
    sc.logon(heartbeat=2)
    body = [(11, "ID"), (21, "1"), (40, "1"), (40, "2"), (54, "1"), (38, "200.00"), (55, "INTC"),
            (60, ts(T0))]
    [rej] = sc.send("D", 2, body)
    assert (rej[8], rej.msg_type, rej[45], rej[371], rej[372], rej[58]) == \
        ("FIX.4.2", "3", "2", "40", "D", "Tag appears more than once")
    assert 373 not in rej
    out = sc.send("0", 3, sending_time=ts(T0 + 200))
    assert types(out) == ["3", "5"] and out[0][373] == "10"
