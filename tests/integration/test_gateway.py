"""The FIX gateway process (quickfix in its own process) with the engine:
killed and restarted mid-stream, orphaned by a killed engine."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.integration.test_engine_intake import (  # noqa: F401 (engine_factory: a fixture)
    engine_factory,
    expected_ids,
    simulator,
    write_config,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (its parent has not reaped it yet)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gateway_pids(engine: Any) -> list[int]:
    return [e["pid"] for e in engine.events() if e.get("event") == "fix_gateway_started"]


def test_a_killed_gateway_is_restarted_and_nothing_is_lost_or_doubled(tmp_path: Path,
                                                                     engine_factory: Any) -> None:  # noqa: F811
    lp_port = free_port()
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", lp_port, None)
    count = 3000
    # linger below the heartbeat interval (5 s): each heartbeat restarts the simulator's idle timer
    lp = simulator("lp", lp_port, count, tmp_path, rate=1000, linger=3)
    engine = engine_factory(cfg)
    engine.wait_for(lambda s: s["executions"] >= 600)
    [first] = _gateway_pids(engine)
    os.kill(first, signal.SIGKILL)                       # mid-stream, messages in flight
    status = engine.wait_for(lambda s: s["executions"] >= count, timeout=120)
    lp.communicate(timeout=60)
    time.sleep(1.0)
    status = engine.status()
    assert status["executions"] == len(expected_ids(count, "", 21, "lp")) == count
    assert status["conflicts"] == 0
    pids = _gateway_pids(engine)
    assert len(pids) == 2 and pids[0] == first and pids[1] != first
    died = [e for e in engine.events() if e.get("event") == "fix_gateway_died"]
    assert len(died) == 1
    restarted = [e for e in engine.events() if e.get("event") == "fix_gateway_started"][1]
    assert restarted["resume"]["LP1"] > 0                # resumed after what was committed
    assert engine.stop() == 0
    stopped = [e for e in engine.events() if e.get("event") == "engine_stopped"][-1]
    assert stopped["gateway_restarts"] == 1 and stopped["gateway_exit"] == 0
    assert not _alive(pids[1])


def test_the_gateway_dies_with_a_killed_engine(tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}",
                       free_port(), free_port())
    engine = engine_factory(cfg)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _gateway_pids(engine):
        time.sleep(0.2)
    [gateway] = _gateway_pids(engine)
    assert _alive(gateway)
    engine.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(gateway):
        time.sleep(0.1)
    assert not _alive(gateway)
