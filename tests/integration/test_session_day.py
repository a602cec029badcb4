"""Session days against the real gateway (quickfix) and the simulators.

The test controls the session-day boundary through the configured schedule
(a start_time a few seconds after now, in UTC); the simulator starts its own
new day from MsgSeqNum 1 just after it (``--session-reset-at``), as an LP
with the same daily schedule does.  The engine runs as its own process and is
SIGKILLed and restarted after the boundary.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fixsim.session import Session, SessionConfig
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor
from stp.sessions import SessionSchedule, session_day
from tests.conftest import ROOT, free_port
from tests.integration.test_engine_intake import (  # noqa: F401 (engine_factory: a fixture)
    START,
    RecordingApp,
    engine_factory,
    expected_ids,
)


def boundary_in(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def config(tmp: Path, lp_port: int | None = None, lp_extra: str = "", pf_port: int | None = None,
           pf_extra: str = "") -> Path:
    text = f"""
[engine]
state_dir = "{tmp / 'engine'}"
[database]
url = "sqlite+aiosqlite:///{tmp / 'stp.db'}"
[mqtt]
enabled = false
"""
    if lp_port is not None:
        text += f"""
[[lp]]
name = "LP1"
host = "127.0.0.1"
port = {lp_port}
sender_comp_id = "STP"
target_comp_id = "LP1"
reconnect_interval = 1
heartbeat_interval = 5
{lp_extra}
"""
    if pf_port is not None:
        text += f"""
[[platform]]
name = "PLATFORM"
port = {pf_port}
sender_comp_id = "STP"
target_comp_id = "PLATFORM"
heartbeat_interval = 5
{pf_extra}
"""
    path = tmp / "engine.toml"
    path.write_text(text)
    return path


def daily_at(at: datetime) -> str:
    return f'start_time = "{at:%H:%M:%S}"\ntime_zone = "UTC"'


def day_of(boundary: datetime, at: datetime | None = None) -> str | None:
    """The session day of ``at`` (default: just after the boundary) for a
    daily UTC session starting at ``boundary``'s time of day."""
    schedule = SessionSchedule(boundary.time(), (boundary - timedelta(seconds=1)).time(), "UTC")
    return session_day(schedule, at or boundary + timedelta(seconds=1))


def sim(role: str, port: int, count: int, tmp: Path, rate: float, reset_at: datetime | None,
        *extra: str, fresh: bool = True) -> subprocess.Popen[str]:
    seed = extra[extra.index("--seed") + 1] if "--seed" in extra else "21"
    extra = tuple(x for i, x in enumerate(extra) if "--seed" not in extra[max(0, i - 1):i + 1])
    cmd = [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "info", "simulate", role,
           "--port", str(port), "--count", str(count), "--seed", seed, "--start", START.isoformat(),
           "--state-dir", str(tmp / f"sim-{role}"), "--linger", "-1", "--no-progress", "--wait-logon", "120",
           "--rate", str(rate), *extra]
    if fresh:
        cmd.append("--reset")
    if reset_at is not None:
        cmd += ["--session-reset-at", reset_at.isoformat()]
    log = (tmp / f"sim-{role}.log").open("ab")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fills(tmp: Path, session: str) -> list[str]:
    with sqlite3.connect(tmp / "stp.db") as conn:
        return [r[0] for r in conn.execute("SELECT exec_id FROM fills WHERE session = ?", (session,))]


def accepted_journal_rows(tmp: Path, session: str) -> int:
    with sqlite3.connect(tmp / "stp.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM journal WHERE session = ? AND outcome = 'accepted'",
                                (session,)).fetchone()[0])


def test_lp_new_day_from_1_while_fills_stream_then_kill_and_restart(tmp_path: Path,
                                                                    engine_factory: Any) -> None:  # noqa: F811
    """quickfix's scheduled reset and the LP starting its new day from 1,
    while fills stream; the engine SIGKILLed after the boundary and restarted:
    every fill journaled once, the session logged on at the end."""
    lp_port = free_port()
    boundary = boundary_in(60)        # generous: the engine streams well before it
    cfg = config(tmp_path, lp_port, daily_at(boundary))
    count = 8000
    # the LP's own boundary half a second after ours (it sends nothing in its
    # day's last second, as LPs do over the 17:00 roll)
    lp = sim("lp", lp_port, count, tmp_path, rate=100, reset_at=boundary + timedelta(seconds=0.5))
    try:
        engine = engine_factory(cfg)
        new_day = day_of(boundary)
        old = engine.wait_for(lambda s: s["sessions"].get("LP1", {}).get("executions", 0) >= 100, timeout=60)
        assert datetime.now(UTC) < boundary, "the machine was too slow to start before the boundary"
        assert old["sessions"]["LP1"]["session_day"] == day_of(boundary, boundary - timedelta(seconds=2))
        engine.wait_for(lambda s: s["sessions"].get("LP1", {}).get("session_day") == new_day
                        and s["sessions"]["LP1"]["last_seq"] >= 20, timeout=90)
        engine.proc.kill()
        engine.proc.wait()
        engine = engine_factory(cfg)
        ids = expected_ids(count, "", 21, "lp")
        status = engine.wait_for(lambda s: s["sessions"]["LP1"]["executions"] >= len(ids)
                                 and s["sessions"]["LP1"]["logged_on"], timeout=240)
        time.sleep(1.0)
        status = engine.status()
        lp1 = status["sessions"]["LP1"]
        assert lp1["logged_on"] is True and lp1["session_day"] == new_day
        got = fills(tmp_path, "LP1")
        assert sorted(got) == sorted(ids)                           # every fill, once
        assert accepted_journal_rows(tmp_path, "LP1") == len(ids)
        assert lp1["resets"] >= 1
        # no "MsgSeqNum too low" loop after the restart
        assert not [e for e in engine.events() if e.get("event") == "break_detected"
                    and e.get("type") == "session_down"]
        assert engine.stop() == 0
    finally:
        stop(lp)


def test_engine_down_across_the_boundary_resumes_from_1(tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    """The engine is SIGKILLed before the boundary and started after it: it
    must not hand quickfix the previous day's number ("expecting 401 but
    received 1")."""
    lp_port = free_port()
    boundary = boundary_in(60)
    cfg = config(tmp_path, lp_port, daily_at(boundary))
    lp = sim("lp", lp_port, 400, tmp_path, rate=200, reset_at=boundary + timedelta(seconds=0.5))
    try:
        engine = engine_factory(cfg)
        engine.wait_for(lambda s: s["sessions"].get("LP1", {}).get("executions", 0) >= 400, timeout=90)
        old = engine.status()["sessions"]["LP1"]
        assert old["last_seq"] > 400 and old["session_day"] != day_of(boundary)
        engine.proc.kill()
        engine.proc.wait()
        while datetime.now(UTC) < boundary + timedelta(seconds=3):
            time.sleep(0.2)
        restarted = datetime.now(UTC).isoformat()
        engine = engine_factory(cfg)
        status = engine.wait_for(lambda s: s["sessions"]["LP1"]["logged_on"]
                                 and s["sessions"]["LP1"]["last_logon"] > restarted, timeout=60)
        assert status["sessions"]["LP1"]["session_day"] == day_of(boundary)
        assert status["sessions"]["LP1"]["last_seq"] < 10
        stop(lp)
        # the simulator, restarted, streams the rest in the new day's numbering
        lp = sim("lp", lp_port, 800, tmp_path, rate=200, reset_at=None, fresh=False)
        ids = expected_ids(800, "", 21, "lp")
        engine.wait_for(lambda s: s["sessions"]["LP1"]["executions"] >= len(ids), timeout=90)
        assert sorted(fills(tmp_path, "LP1")) == sorted(ids)
        assert accepted_journal_rows(tmp_path, "LP1") == len(ids)
        assert engine.stop() == 0
    finally:
        stop(lp)


def test_reset_seq_num_flag_while_fills_stream_then_kill_and_restart(tmp_path: Path,
                                                                      engine_factory: Any) -> None:  # noqa: F811
    """The platform logs on again with ResetSeqNumFlag=Y mid-stream (a session
    that never resets on schedule); the engine is SIGKILLed after and
    restarted: every record journaled once, the session logged on."""
    pf_port = free_port()
    cfg = config(tmp_path, pf_port=pf_port, pf_extra="non_stop = true")
    count = 1200
    engine = engine_factory(cfg)
    reset_at = boundary_in(10)
    pf = sim("platform", pf_port, count, tmp_path, 60, reset_at, "--reset-flag")
    try:
        engine.wait_for(lambda s: s["sessions"].get("PLATFORM", {}).get("resets", 0) >= 1
                        and s["sessions"]["PLATFORM"]["last_seq"] >= 20, timeout=90)
        engine.proc.kill()
        engine.proc.wait()
        engine = engine_factory(cfg)
        ids = expected_ids(count, "", 21, "platform")
        engine.wait_for(lambda s: s["sessions"]["PLATFORM"]["executions"] >= len(ids)
                        and s["sessions"]["PLATFORM"]["logged_on"], timeout=120)
        time.sleep(1.0)
        assert sorted(fills(tmp_path, "PLATFORM")) == sorted(ids)
        assert accepted_journal_rows(tmp_path, "PLATFORM") == len(ids)
        assert engine.status()["sessions"]["PLATFORM"]["session_day"] == "non-stop"
        assert engine.stop() == 0
    finally:
        stop(pf)


def _breaks(tmp: Path, kind: str) -> list[tuple[str, str, str]]:
    try:
        with sqlite3.connect(tmp / "stp.db") as conn:
            return [tuple(r) for r in conn.execute("SELECT type, keys, summary FROM breaks WHERE type = ?",
                                                   (kind,))]
    except sqlite3.OperationalError:          # not migrated yet
        return []


async def test_a_session_refused_at_every_logon_is_a_session_down_break(tmp_path: Path,
                                                                       engine_factory: Any) -> None:  # noqa: F811
    lp_port = free_port()
    cfg = config(tmp_path, lp_port, 'password = "wrong"\nnon_stop = true')
    app = RecordingApp()
    lp = Session(SessionConfig("FIX.4.4", "LP1", "STP", password="right"), app, MemoryStore())
    acceptor = FixAcceptor([lp], "127.0.0.1", lp_port)
    await acceptor.start()
    try:
        engine = engine_factory(cfg)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _breaks(tmp_path, "session_down"):
            await asyncio.sleep(0.5)
        found = _breaks(tmp_path, "session_down")
        assert len(found) == 1 and json.loads(found[0][1]) == {"session": "LP1"}
        status = engine.status()["sessions"]["LP1"]
        assert status["logged_on"] is False and status["last_logout"] is not None
        assert status["last_reason"]
        down = [e for e in engine.events() if e.get("event") == "break_detected"]
        assert down and down[0]["type"] == "session_down" and down[0]["severity"] == "critical"
        assert engine.stop() == 0
    finally:
        await acceptor.stop()


def _session_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_engine.py"), "session", "reset", "--config",
                           str(cfg), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_session_reset_through_the_engine_and_on_the_database(tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    lp_port = free_port()
    cfg = config(tmp_path, lp_port, "non_stop = true")
    lp = sim("lp", lp_port, 200, tmp_path, rate=400, reset_at=None)
    try:
        engine = engine_factory(cfg)
        engine.wait_for(lambda s: s["sessions"].get("LP1", {}).get("executions", 0) >= 200
                        and s["sessions"]["LP1"]["logged_on"], timeout=90)
        before = engine.status()["sessions"]["LP1"]["last_seq"]
        # the LP's numbers are set to match what ops agreed with the LP: here, where the
        # simulator already is (so the session logs on again without a gap)
        done = _session_cli(cfg, "--session", "LP1", "--inbound", str(before + 1), "--by", "ops1",
                            "--reason", "agreed with the LP")
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout)
        assert (row["state"], row["via"], row["requested_by"]) == ("applied", "engine", "ops1")
        assert row["before_last_seq"] == before and row["after_inbound"] == before + 1
        assert row["before_outbound"] >= 1 and row["after_outbound"] == row["before_outbound"]
        engine.wait_for(lambda s: s["sessions"]["LP1"]["logged_on"], timeout=30)
        assert engine.status()["sessions"]["LP1"]["last_seq"] >= before
        assert engine.stop() == 0
        # no engine: on the database, applied at the next start
        done = _session_cli(cfg, "--session", "LP1", "--by", "ops2")
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout)
        assert (row["state"], row["via"], row["after_inbound"], row["after_outbound"]) == \
            ("applied", "database", 1, 1)
        with sqlite3.connect(tmp_path / "stp.db") as conn:
            assert conn.execute("SELECT last_seq, pending_outbound FROM session_state WHERE session = 'LP1'"
                                ).fetchone() == (0, 1)
            audit = conn.execute("SELECT requested_by, state, via FROM session_resets ORDER BY id").fetchall()
        assert audit == [("ops1", "applied", "engine"), ("ops2", "applied", "database")]
        stop(lp)
        lp = sim("lp", lp_port, 200, tmp_path, rate=400, reset_at=None)     # a fresh LP: from 1
        engine = engine_factory(cfg)
        engine.wait_for(lambda s: s["sessions"]["LP1"]["logged_on"], timeout=60)
        created = [e for e in engine.events() if e.get("event") == "fix_session_created"][-1]
        assert (created["next_target_seq"], created["next_sender_seq"]) == (1, 1)
        assert engine.stop() == 0
        with sqlite3.connect(tmp_path / "stp.db") as conn:
            assert conn.execute("SELECT pending_outbound FROM session_state WHERE session = 'LP1'"
                                ).fetchone() == (None,)
        assert _session_cli(cfg, "--session", "NOPE").returncode == 2
    finally:
        stop(lp)




async def test_a_refused_platform_logon_shows_in_status(tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    """quickfix calls no onLogout for an acceptor session it never logged on:
    the gateway reports the Logout it sends instead."""
    from fixsim.transport import FixInitiator

    pf_port = free_port()
    cfg = config(tmp_path, pf_port=pf_port, pf_extra='username = "desk"\npassword = "s3cret"')
    engine = engine_factory(cfg)
    app = RecordingApp()
    session = Session(SessionConfig("FIX.4.4", "PLATFORM", "STP", initiator=True, username="desk",
                                    password="wrong"), app, MemoryStore())
    deadline = time.monotonic() + 60
    initiator = FixInitiator(session, "127.0.0.1", pf_port, reconnect_interval=1)
    await initiator.start()
    try:
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = engine.status()["sessions"].get("PLATFORM", {})
            if status.get("last_reason"):
                break
            await asyncio.sleep(0.5)
        assert status["logged_on"] is False
        assert "invalid username or password" in status["last_reason"]
    finally:
        await initiator.stop(logout_wait=0.5)
    assert engine.stop() == 0


def test_an_lp_that_restarted_from_1_is_session_down_until_ops_reset(tmp_path: Path,
                                                                     engine_factory: Any) -> None:  # noqa: F811
    """The LP starts again from MsgSeqNum 1 outside any agreed schedule: the
    engine is logged out at every logon ("MsgSeqNum too low"), raises
    session_down, and ops' `session reset` gets it logged on again."""
    lp_port = free_port()
    cfg = config(tmp_path, lp_port, "non_stop = true")
    # far enough ahead that the new LP's numbers (its Logons) do not catch up during the test
    lp = sim("lp", lp_port, 1000, tmp_path, rate=1000, reset_at=None)
    try:
        engine = engine_factory(cfg)
        engine.wait_for(lambda s: s["sessions"].get("LP1", {}).get("executions", 0) >= 1000, timeout=90)
        stop(lp)
        lp = sim("lp", lp_port, 100, tmp_path, 400, None, "--seed", "22")     # fresh: from 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _breaks(tmp_path, "session_down"):
            time.sleep(0.5)
        (found,) = _breaks(tmp_path, "session_down")
        assert "MsgSeqNum too low" in found[2]
        assert "MsgSeqNum too low" in engine.status()["sessions"]["LP1"]["last_reason"]
        # the LP counts its side from 1 again; it has kept up with ours (our Logons)
        done = _session_cli(cfg, "--session", "LP1", "--inbound", "1", "--by", "ops1",
                            "--reason", "LP restarted from 1")
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout)
        assert (row["state"], row["after_inbound"]) == ("applied", 1)
        assert row["after_outbound"] == row["before_outbound"]
        status = engine.wait_for(lambda s: s["sessions"]["LP1"]["executions"] >= 1100
                                 and s["sessions"]["LP1"]["logged_on"], timeout=90)
        assert status["sessions"]["LP1"]["executions"] == 1100
        assert engine.stop() == 0
    finally:
        stop(lp)
