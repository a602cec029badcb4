"""Poison messages: the suspect a gateway died on twice, from quickfix's message log."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from adapters.config import EngineConfig, SessionSpec
from adapters.fix.gateway import FixGateway, InboundQueue
from adapters.fix.poison import PoisonWatch, Suspect, last_received, messages_log


def cfg(tmp_path: Path) -> EngineConfig:
    return EngineConfig(path=None, database_url="sqlite://", state_dir=tmp_path,
                        lps=(SessionSpec("lp", "LP1", 1, "STP", "LP1"),
                             SessionSpec("lp", "LP2", 1, "STP", "LP2")))


def entry(sender: str, target: str, seq: int, msg_type: str = "8", text: str = "x", extra: str = "") -> bytes:
    body = f"35={msg_type}\x0134={seq}\x0149={sender}\x0152=20261204-03:58:00.000\x0156={target}\x01" \
           f"17=E-{seq}\x0158={text}\x01{extra}"
    return (f"20261204-03:58:0{seq % 10}.123456789 : 8=FIX.4.4\x019={len(body)}\x01{body}10=000\x01\n"
            ).encode("latin-1")


class Log:
    def __init__(self, config: EngineConfig, session: int = 0) -> None:
        self.path = messages_log(config, config.sessions[session])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.them = config.sessions[session].target_comp_id

    def received(self, seq: int, msg_type: str = "8", text: str = "x", extra: str = "") -> None:
        with self.path.open("ab") as f:
            f.write(entry(self.them, "STP", seq, msg_type, text, extra))

    def sent(self, seq: int, msg_type: str = "0", extra: str = "") -> None:
        with self.path.open("ab") as f:
            f.write(entry("STP", self.them, seq, msg_type, extra=extra))


def test_the_last_message_received_is_read_byte_exact_from_the_log(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    log = Log(config)
    log.received(4)
    log.received(5, text="caf\xe9\nline two")         # Latin-1 and a newline inside the message
    log.sent(9)
    found = last_received(log.path, 0, "LP1")
    assert found is not None and found.seq == 5 and found.msg_type == "8"
    assert b"58=caf\xe9\nline two\x01" in found.raw and found.raw.startswith(b"8=FIX.4.4\x01")
    assert found.raw.endswith(b"10=000\x01")
    assert found.logged_at is not None
    assert last_received(log.path, log.path.stat().st_size, "LP1") is None    # nothing since
    assert last_received(tmp_path / "absent.log", 0, "LP1") is None


def test_two_deaths_on_the_same_uncommitted_message_make_it_the_suspect(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    log = Log(config)
    watch = PoisonWatch(config)
    watch.started()
    log.received(1)
    log.received(2, text="poison")
    assert watch.died({"LP1": 1}) == []                 # one death: restarted, nothing quarantined
    watch.started()
    log.received(3, "A")                                 # the counterparty's Logon, then the resend
    log.received(2, text="poison")
    log.sent(7)                                          # our heartbeat after it changes nothing
    [suspect] = watch.died({"LP1": 1})
    assert (suspect.session, suspect.seq) == ("LP1", 2) and b"58=poison" in suspect.message.raw
    assert suspect.before == ()
    watch.started()
    log.received(4, "A")
    log.received(2, text="poison")
    assert watch.died({"LP1": 1}) == []                 # the next suspect needs two deaths again


def test_no_suspect_without_the_same_message_twice_uncommitted(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    log, other = Log(config), Log(config, 1)
    watch = PoisonWatch(config)
    for committed, seq, msg_type in ((5, 6, "8"), (6, 7, "8"),      # progress each time
                                     (6, 8, "8"), (6, 9, "8"),      # another message each time
                                     (9, 9, "8"), (9, 9, "8"),      # committed already
                                     (9, 10, "0"), (9, 10, "0")):   # a Heartbeat
        watch.started()
        log.received(seq, msg_type)
        assert watch.died({"LP1": committed, "LP2": 0}) == []
    watch.started()
    assert watch.died({"LP1": 9, "LP2": 0}) == []       # received nothing in this run
    watch.started()
    other.received(1)
    assert watch.died({"LP1": 9, "LP2": 0}) == []       # LP2: its first death with it


def test_what_died_with_the_gateway_before_the_suspect_is_recovered_from_the_log(tmp_path: Path) -> None:
    """The frames of the messages quickfix processed just before the poison
    die with the gateway each time: committing past the poison alone would
    lose them.  They go to the intake first, from the log; a gap fill covers
    what it fills; a message quickfix rejected is its Reject."""
    config = cfg(tmp_path)
    log = Log(config)
    watch = PoisonWatch(config)
    for _ in range(2):
        watch.started()
        log.received(1 if _ == 0 else 9, "A")                 # Logon
        if _ == 1:
            log.received(1, "4", extra="123=Y\x0136=2\x01")   # GapFill of the first Logon
        log.received(2, text="good")
        log.received(3, text="bad enum")
        log.sent(5, "3", extra="45=3\x01373=5\x01")           # quickfix rejected 3
        log.received(4, "D")                                  # an order: not for us (BMR)
        log.received(5, text="poison")
        found = watch.died({"LP1": 0})
    [suspect] = found
    assert suspect.seq == 5
    assert [(kind, m.msg_type, m.seq) for kind, m in suspect.before] == [
        ("app", "8", 2), ("session_reject", "3", 5), ("unsupported", "D", 4)]
    assert b"58=good" in suspect.before[0][1].raw


def test_a_gap_before_the_suspect_stops_the_quarantine(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    log = Log(config)
    watch = PoisonWatch(config)
    for _ in range(2):
        watch.started()
        log.received(1, "A")
        log.received(3, text="poison")       # 2 never arrived: committing 3 would lose it
        found = watch.died({"LP1": 0})
    assert found == [] and watch.unrecoverable == [("LP1", 3)]


async def test_the_log_scan_leaves_the_event_loop_running(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``died`` reads and scans up to TAIL_MIN (plus SEGMENT_MAX) of log per
    session: on the loop that runs the intake it stopped the intake for as
    long.  It runs on a worker thread; the restart still waits for it and
    the suspect is handed over as before."""
    config = cfg(tmp_path)
    log = Log(config)
    gateway = FixGateway(config, InboundQueue(), lambda: {"LP1": 1, "LP2": 0})
    real = gateway.poison.died
    loop_ran = threading.Event()
    seen: list[bool] = []

    def died(committed: dict[str, int]) -> list[Suspect]:
        seen.append(loop_ran.wait(20))     # set by the loop: only while the scan is off it
        return real(committed)

    monkeypatch.setattr(gateway.poison, "died", died)
    for _ in range(2):
        gateway.poison.started()
        log.received(1 if _ == 0 else 3, "A")
        log.received(2, text="poison")
        loop_ran.clear()
        asyncio.get_running_loop().call_soon(loop_ran.set)
        quarantined = await gateway._quarantine()
    assert seen == [True, True]
    assert quarantined == 1 and gateway.quarantined == 1
    [item] = gateway.queue.take(10)
    assert item.kind == "poison" and "58=poison" in item.raw
