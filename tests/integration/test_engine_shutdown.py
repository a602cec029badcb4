"""run_engine's exit stack: the shutdown order exactly once needs (the intake
commits what it queued, then the gateway logs the sessions out, then they are
marked down, then post-trade processes what is committed and the relay
publishes it, then the database goes), on a stop and on a cancellation, and
nothing left behind (the engine lock, a gateway) when start-up fails part
way.  The gateway's child speaks the pipe protocol without quickfix; post-trade
runs inline with a relay that finds no broker."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters import config
from adapters.db.repository import Database
from adapters.fix.gateway import FixGateway, GatewayExited
from adapters.mqtt import OutboxRelay
from app.engine import run_engine
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from tests.conftest import free_port
from tests.unit.test_resources import FAKE_GATEWAY, alive


def engine_config(tmp_path: Path) -> config.EngineConfig:
    path = tmp_path / "engine.toml"
    path.write_text(f"""
[engine]
state_dir = "{tmp_path / 'engine'}"
posttrade = "inline"
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
[mqtt]
port = {free_port()}
topic_prefix = "shutdown-test"
[[lp]]
name = "LP1"
host = "127.0.0.1"
port = {free_port()}
sender_comp_id = "STP"
target_comp_id = "LP1"
""")
    return config.load(str(path), env={})


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shutdown steps in the order they were taken."""
    taken: list[str] = []

    def record(cls: Any, name: str, step: str, when: Any = None) -> None:
        real = getattr(cls, name)

        async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            if when is None or when(*args):
                taken.append(step)
            return await real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, recorded)

    record(Intake, "drain_and_stop", "intake commits what it queued")
    record(FixGateway, "stop", "gateway logs the sessions out")
    record(Database, "set_sessions_down", "sessions down", lambda _, reason: reason == "engine stopped")
    record(PostTrade, "stop", "post-trade processes what is committed")
    record(OutboxRelay, "stop", "relay publishes it")
    record(Database, "close", "database closed")
    return taken


ORDER = ["intake commits what it queued", "gateway logs the sessions out", "sessions down",
         "post-trade processes what is committed", "relay publishes it", "database closed"]


def fake_gateway(monkeypatch: pytest.MonkeyPatch, code: str = FAKE_GATEWAY) -> list[int]:
    pids: list[int] = []

    def command(self: FixGateway) -> list[str]:
        return [sys.executable, "-c", code]

    real = FixGateway._start_once

    async def start_once(self: FixGateway) -> dict[str, Any]:
        try:
            return await real(self)
        finally:
            if self.pid is not None:
                pids.append(self.pid)

    monkeypatch.setattr(FixGateway, "command", command)
    monkeypatch.setattr(FixGateway, "_start_once", start_once)
    return pids


async def engine_lock_free(cfg: config.EngineConfig) -> bool:
    async with Database(cfg.database_url) as db, db.try_exclusive("engine") as free:
        return free


async def test_a_stopped_engine_shuts_down_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    steps: list[str]) -> None:
    cfg = engine_config(tmp_path)
    pids = fake_gateway(monkeypatch)
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_engine(cfg, started=started, stop=stop))
    await asyncio.wait_for(started.wait(), 30)
    assert not await engine_lock_free(cfg)                     # held while it runs
    steps.clear()                                              # (that look's own database)
    stop.set()
    summary = await asyncio.wait_for(task, 30)
    assert steps == ORDER
    assert summary["gateway_exit"] == 0 and summary["gateway_restarts"] == 0
    assert "posttrade_processed" in summary and "messages" in summary
    assert not alive(pids[0]) and await engine_lock_free(cfg)


async def test_a_cancelled_engine_shuts_down_in_the_same_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list[str]) -> None:
    cfg = engine_config(tmp_path)
    pids = fake_gateway(monkeypatch)
    started = asyncio.Event()
    task = asyncio.create_task(run_engine(cfg, started=started))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert steps == ORDER
    assert not alive(pids[0]) and await engine_lock_free(cfg)


async def test_a_gateway_that_never_starts_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list[str]) -> None:
    cfg = engine_config(tmp_path)
    pids = fake_gateway(monkeypatch, "import sys; sys.exit(2)")
    with pytest.raises(GatewayExited, match="status 2"):
        await asyncio.wait_for(run_engine(cfg), 60)
    assert len(pids) == 5 and not any(alive(pid) for pid in pids)       # five attempts, each gone
    # the intake still commits what it had queued, the sessions are marked
    # down, post-trade still finishes (the failed start left no gateway to stop)
    assert steps == [step for step in ORDER if step != "gateway logs the sessions out"]
    assert await engine_lock_free(cfg)
    assert os.path.exists(tmp_path / "stp.db")
