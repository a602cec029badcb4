"""The pre-logon guard in front of quickfix's acceptor, against the real
engine and gateway: a pre-logon flood stalls nobody and grows nothing; a
wrong password cannot reset a session; no password is kept in clear."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fixsim.dictionary import load_dictionary
from fixsim.session import Session, SessionConfig
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor, FixInitiator
from stp.fixwire import finish, format_utc_timestamp
from tests.conftest import free_port
from tests.integration.test_engine_intake import (  # noqa: F401 (engine_factory: a fixture)
    RecordingApp,
    _wait_port,
    engine_factory,
    er,
    expected_ids,
    simulator,
    write_config,
)

FLOOD_BYTES = 300 * 1024 * 1024


def logon(sender: str = "PLATFORM", target: str = "STP", password: str | None = "s3cret",
          user: str | None = "desk", begin: str = "FIX.4.4", reset: bool = True) -> bytes:
    body = f"35=A\x0134=1\x0149={sender}\x0152={format_utc_timestamp(time.time())}\x0156={target}\x01" \
           f"98=0\x01108=30\x01" + ("141=Y\x01" if reset else "")
    if user is not None:
        body += f"553={user}\x01"
    if password is not None:
        body += f"554={password}\x01"
    return finish(begin, body)


def _gateway_pid(engine: Any, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [e["pid"] for e in engine.events() if e.get("event") == "fix_gateway_started"]
        if pids:
            return int(pids[-1])
        time.sleep(0.2)
    raise AssertionError("the gateway never started")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Flood(threading.Thread):
    """Connections that send ``8=FIX.4.4`` and then bytes without SOH, one
    after the other, until told to stop once at least ``total`` bytes were
    accepted by the kernel, or ``deadline_s`` passed."""

    def __init__(self, port: int, total: int, deadline_s: float) -> None:
        super().__init__(daemon=True)
        self.port, self.total, self.deadline_s = port, total, deadline_s
        self.sent = 0
        self.connections = 0
        self.stop = threading.Event()

    def _done(self, deadline: float) -> bool:
        return time.monotonic() >= deadline or (self.stop.is_set() and self.sent >= self.total)

    def run(self) -> None:
        chunk = b"x" * (1024 * 1024)
        deadline = time.monotonic() + self.deadline_s
        while not self._done(deadline):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    self.connections += 1
                    self.sent += sock.send(b"8=FIX.4.4")
                    while not self._done(deadline):
                        self.sent += sock.send(chunk)
            except OSError:
                continue


def test_a_pre_logon_flood_neither_stalls_the_platform_nor_grows_the_gateway(
        tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    pf_port = free_port()
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", None, pf_port)
    engine = engine_factory(cfg)
    gateway = _gateway_pid(engine)
    asyncio.run(_wait_port(pf_port))
    time.sleep(1.0)
    before = _rss_mib(gateway)
    flood = Flood(pf_port, FLOOD_BYTES, deadline_s=240)
    flood.start()
    peak = before
    try:
        while flood.is_alive() and flood.sent < 30 * 1024 * 1024:
            peak = max(peak, _rss_mib(gateway))
            time.sleep(0.05)
        count = 300
        platform = simulator("platform", pf_port, count, tmp_path, rate=100, linger=2)
        wanted = len(expected_ids(count, "", 21, "platform"))
        deadline = time.monotonic() + 180
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            peak = max(peak, _rss_mib(gateway))
            status = engine.status()
            if status.get("sessions", {}).get("PLATFORM", {}).get("executions", 0) >= wanted:
                break
            time.sleep(0.5)
        during = flood.is_alive()          # the platform's fills all arrived while the flood went on
        flood.stop.set()
        while flood.is_alive():
            peak = max(peak, _rss_mib(gateway))
            time.sleep(0.05)
        platform.communicate(timeout=60)
    finally:
        flood.stop.set()
        flood.join(30)
    assert status["sessions"]["PLATFORM"]["executions"] == wanted, status
    assert during, "the flood ended before the platform's fills arrived: make it longer"
    assert flood.sent >= FLOOD_BYTES, (flood.sent, flood.connections)
    assert peak - before < 50, (before, peak)
    refused = [e for e in engine.events() if e.get("event") == "fix_guard_refused"]
    assert any("garbled first message" in e["reason"] for e in refused)
    assert max(e["bytes_received"] for e in refused) <= 4097           # what the guard read of each
    assert engine.stop() == 0


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the IPv4 TCP sockets process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:            # TCP_LISTEN
            address, port = parts[1].split(":")
            host = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            found.add((host, int(port, 16)))
    return found


def _seqnums(tmp_path: Path) -> str:
    return (tmp_path / "engine" / "quickfix" / "store" / "FIX.4.4-STP-PLATFORM.seqnums").read_text()


async def test_a_wrong_password_cannot_reset_the_session(tmp_path: Path, engine_factory: Any,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pf_port = free_port()
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", None, pf_port,
                       'username = "desk"\npassword_env = "H6_TEST_PLATFORM_PASSWORD"')
    monkeypatch.setenv("H6_TEST_PLATFORM_PASSWORD", "s3cret")      # the engine's and status's
    engine = engine_factory(cfg)
    await _wait_port(pf_port)
    # quickfix's acceptor is reachable only through the guard: every socket the
    # gateway listens on is the guard's (the configured port) or on 127.0.0.1
    deadline = time.monotonic() + 15      # quickfix's first socket closes when its select() returns
    while len(listening := _listening(_gateway_pid(engine))) != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert ("0.0.0.0", pf_port) in listening
    assert all(host == "127.0.0.1" for host, port in listening if port != pf_port), listening
    assert len(listening) == 2, listening
    # the genuine platform: one session (its store) across its connections
    app = RecordingApp()
    session = Session(SessionConfig("FIX.4.4", "PLATFORM", "STP", initiator=True, username="desk",
                                    password="s3cret", reset_on_logon=True), app, MemoryStore(),
                      load_dictionary("FIX.4.4"))

    async def connect_and_send(exec_ids: list[str]) -> None:
        initiator = FixInitiator(session, "127.0.0.1", pf_port, reconnect_interval=5)
        await initiator.start()
        try:
            await asyncio.wait_for(app.logged_on.wait(), 30)
            for exec_id in exec_ids:
                session.send("8", er(exec_id))
            await asyncio.to_thread(
                engine.wait_for, lambda s: s["sessions"].get("PLATFORM", {}).get("executions", 0)
                >= len(sent) + len(exec_ids))
            sent.extend(exec_ids)
        finally:
            await initiator.stop(logout_wait=2.0)
        connections.append(None)
        # until quickfix has taken the Logout (through the relay) and counted its number
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([
                e for e in engine.events() if e.get("event") == "fix_logout"
                and e.get("session") == "PLATFORM"]) < len(connections):
            await asyncio.sleep(0.1)

    sent: list[str] = []
    connections: list[None] = []
    await connect_and_send(["PF-1", "PF-2", "PF-3"])
    session.config = SessionConfig("FIX.4.4", "PLATFORM", "STP", initiator=True, username="desk",
                                   password="s3cret")            # from now on it keeps its numbers
    our_next, their_next = session.next_sender_seq, session.next_target_seq
    assert our_next > 4
    before = _seqnums(tmp_path)
    status_before = await asyncio.to_thread(engine.status)
    # an attacker: the right CompIDs, a wrong password, ResetSeqNumFlag=Y
    answers = []
    for data in (logon(password="wrong"), logon(password=None), logon(user="nobody", password="s3cret")):
        reader, writer = await asyncio.open_connection("127.0.0.1", pf_port)
        writer.write(data)
        await writer.drain()
        answers.append(await asyncio.wait_for(reader.read(), 15))
        writer.close()
    await asyncio.sleep(1.0)
    assert _seqnums(tmp_path) == before                                  # quickfix's numbers untouched
    assert answers == [b""] * 3                                          # refused: closed, nothing sent
    status = await asyncio.to_thread(engine.status)
    assert status["sessions"]["PLATFORM"]["last_seq"] == status_before["sessions"]["PLATFORM"]["last_seq"]
    assert status["sessions"]["PLATFORM"]["resets"] == status_before["sessions"]["PLATFORM"]["resets"]
    # the genuine platform comes back with its numbers and goes on
    app.received.clear()
    await connect_and_send(["PF-4"])
    assert session.next_sender_seq > our_next and session.next_target_seq > their_next
    assert not [m for m in app.received if m.msg_type in ("2", "4", "3")]   # no resend, reset or reject
    status = await asyncio.to_thread(engine.status)
    assert status["sessions"]["PLATFORM"]["executions"] == 4
    refused = [e for e in engine.events() if e.get("event") == "fix_guard_refused"]
    assert [e["reason"] for e in refused if "closed before" not in e["reason"]] == \
        ["invalid username or password"] * 3          # (_wait_port's connection closes before a Logon)
    assert engine.stop() == 0


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_no_password_is_kept_in_clear(tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    lp_port, pf_port = free_port(), free_port()
    secret_file = tmp_path / "lp1-password"
    secret_file.write_text("lp-pass-WORD-1\n")
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", lp_port,
                       pf_port, 'username = "desk"\npassword = "pf-pass-WORD-2"')
    cfg.write_text(cfg.read_text().replace('target_comp_id = "LP1"\n',
                                           f'target_comp_id = "LP1"\nusername = "eng"\n'
                                           f'password_file = "{secret_file}"\n', 1))
    # the LP requires our credentials
    lp_app = RecordingApp()
    lp = Session(SessionConfig("FIX.4.4", "LP1", "STP", username="eng", password="lp-pass-WORD-1"),
                 lp_app, MemoryStore(), load_dictionary("FIX.4.4"))
    acceptor = FixAcceptor([lp], "127.0.0.1", lp_port)
    await acceptor.start()
    engine = engine_factory(cfg)
    try:
        await asyncio.wait_for(lp_app.logged_on.wait(), 60)
        lp.send("8", er("LP-1"))
        await _wait_port(pf_port)
        # the platform logs on with ResetSeqNumFlag=Y: that Logon is journaled
        pf_app = RecordingApp()
        pf = Session(SessionConfig("FIX.4.4", "PLATFORM", "STP", initiator=True, username="desk",
                                   password="pf-pass-WORD-2", reset_on_logon=True), pf_app, MemoryStore(),
                     load_dictionary("FIX.4.4"))
        initiator = FixInitiator(pf, "127.0.0.1", pf_port, reconnect_interval=5)
        await initiator.start()
        try:
            await asyncio.wait_for(pf_app.logged_on.wait(), 30)
            pf.send("8", er("PF-1"))
            status = await asyncio.to_thread(engine.wait_for, lambda s: s["executions"] >= 2)
            assert status["sessions"]["PLATFORM"]["resets"] >= 1
        finally:
            await initiator.stop(logout_wait=2.0)
    finally:
        assert await asyncio.to_thread(engine.stop) == 0
        await acceptor.stop(logout_wait=0.5)
    with contextlib.closing(sqlite3.connect(tmp_path / "stp.db")) as db:
        raws = [r[0] for r in db.execute("SELECT raw FROM journal")]
    logons = [r for r in raws if "\x0135=A\x01" in r]
    assert logons and all("\x01553=desk\x01" in r for r in logons)      # the reset Logon is journaled ...
    state = _files(tmp_path / "engine") + [p for p in tmp_path.iterdir() if p.name.startswith("stp.db")]
    lp_log = next(p for p in state if p.name.endswith(".messages.current.log") and "LP1" in p.name)
    assert b"\x0135=A\x01" in lp_log.read_bytes() and b"\x01554=**************\x01" in lp_log.read_bytes()
    assert any(p.name.endswith(".body") and "LP1" in p.name for p in state)
    for path in state:
        data = path.read_bytes()
        for password in (b"lp-pass-WORD-1", b"pf-pass-WORD-2"):        # ... without any password
            assert password not in data, (path, password)
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))


def test_the_guard_bounds_time_and_waiting_connections() -> None:
    """A LogonGuard alone, in front of a plain server standing in for quickfix:
    a Logon never completed is closed after the time bound; past the bound on
    waiting connections the oldest is dropped; a good Logon still passes and
    is relayed both ways, without its password."""
    from adapters.config import SessionSpec
    from adapters.fix.guard import LogonGuard

    spec = SessionSpec(role="platform", name="PLATFORM", port=0, sender_comp_id="STP",
                       target_comp_id="PLATFORM", username="desk", password="s3cret")
    upstream = socket.create_server(("127.0.0.1", 0))
    port = free_port()
    guard = LogonGuard([("127.0.0.1", port, [spec], ("127.0.0.1", upstream.getsockname()[1]))],
                       timeout_s=1.0, pending_max=3)
    guard.start()
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(logon()[:30])                        # and then nothing
        slow.settimeout(15)
        started = time.monotonic()
        assert slow.recv(100) == b""                      # closed by the guard ...
        assert time.monotonic() - started < 10            # ... at its time bound, not at ours
        waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for sock in waiting:
            sock.settimeout(15)
        with contextlib.suppress(ConnectionResetError):
            assert waiting[0].recv(100) == b""            # the oldest dropped for the fourth
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(logon() + b"after")
        upstream.settimeout(15)
        conn, _ = upstream.accept()
        conn.settimeout(15)
        got = b""
        while not got.endswith(b"after"):
            got += conn.recv(4096)
        assert b"\x0135=A\x01" in got and b"s3cret" not in got and b"554=" not in got
        conn.sendall(b"reply")
        client.settimeout(15)
        assert client.recv(100) == b"reply"
        conn.close()
        assert client.recv(100) == b""                    # quickfix closing closes the client
        for sock in [slow, *waiting, client]:
            sock.close()
        assert guard.passed == 1 and guard.refused >= 2
    finally:
        guard.stop()
        upstream.close()
