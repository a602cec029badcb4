"""Resources as async context managers: whatever ends the block (its end, an
exception, a cancellation), what was opened is closed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.pool import QueuePool

from adapters.config import EngineConfig, SessionSpec
from adapters.db.repository import Database
from adapters.fix.gateway import FixGateway, InboundQueue
from adapters.mqtt import MqttSettings, OutboxRelay
from app.posttrade_process import PostTradeProcess
from tests.conftest import ROOT, free_port


def checked_in(pool: object) -> int:
    """Connections the pool keeps (a QueuePool's count; Pool does not declare it)."""
    assert isinstance(pool, QueuePool)
    return pool.checkedin()


async def test_a_database_used_with_async_with_is_closed_after_an_exception(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(RuntimeError, match="in the block"):
        async with Database(url) as db:
            await db.migrate()
            pool = db.engine.pool
            assert (await db.status())["executions"] == 0
            assert checked_in(pool) >= 1             # a connection kept by the pool
            raise RuntimeError("in the block")
    assert checked_in(pool) == 0 and db.engine.pool is not pool      # disposed: none kept


async def test_a_database_used_with_async_with_is_closed_when_the_task_is_cancelled(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    opened: asyncio.Future[Database] = asyncio.get_running_loop().create_future()

    async def user() -> None:
        async with Database(url) as db:
            await db.migrate()
            await db.status()
            opened.set_result(db)
            await asyncio.Event().wait()

    task = asyncio.create_task(user())
    db = await opened
    pool = db.engine.pool
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_in(pool) == 0 and db.engine.pool is not pool


# -- the outbox relay --------------------------------------------------------------


async def test_async_with_relay_runs_it_and_stops_it_after_an_exception(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        await db.migrate()
        relay = OutboxRelay(db, MqttSettings(port=free_port(), topic_prefix="t"))     # no broker there
        with pytest.raises(RuntimeError):
            async with relay:
                task = relay._task
                assert task is not None and not task.done()
                await asyncio.sleep(0.1)
                raise RuntimeError("in the block")
        assert task is not None
        assert task.done() and not task.cancelled()          # ended by stop(), not cancelled
        assert relay._task is None and relay._stopping


async def test_async_with_relay_cancels_a_run_that_does_not_end_within_its_stop_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        relay = OutboxRelay(db, MqttSettings(port=free_port(), topic_prefix="t"))
        relay.stop_timeout = 0.2

        async def stuck() -> None:
            await asyncio.Event().wait()       # a publish that never returns, say

        monkeypatch.setattr(relay, "run", stuck)
        t0 = time.monotonic()
        async with relay:
            task = relay._task
            assert task is not None
        await asyncio.sleep(0)
        assert task.cancelled() and time.monotonic() - t0 < 5


# -- the children: FIX gateway and post-trade ----------------------------------------


FAKE_GATEWAY = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from adapters.fix.pipe import FrameReader, decode_event, event_frame
reader, started = FrameReader(), False
while True:
    data = os.read(0, 65536)
    if not data:
        sys.exit(0)
    for _, payload in reader.feed(data):
        event = decode_event(payload)
        if event["event"] == "start" and not started:
            started = True
            sys.stdout.buffer.write(event_frame("ready", sessions=["LP1"], pid=os.getpid()))
            sys.stdout.buffer.flush()
        elif event["event"] == "stop":
            sys.exit(0)
"""


class FakeGateway(FixGateway):
    """The engine's side of the gateway for real; the child speaks the pipe
    protocol without quickfix."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", FAKE_GATEWAY]


def gateway_config(tmp_path: Path) -> EngineConfig:
    return EngineConfig(path=None, database_url="sqlite://", state_dir=tmp_path,
                        lps=(SessionSpec("lp", "LP1", 1, "STP", "LP1"),))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_async_with_gateway_starts_it_ready_and_stops_it_after_an_exception(tmp_path: Path) -> None:
    gateway = FakeGateway(gateway_config(tmp_path), InboundQueue(), resume=dict)
    with pytest.raises(RuntimeError):
        async with gateway:
            assert gateway.ready is not None and gateway.ready["sessions"] == ["LP1"]
            pid = gateway.pid
            assert pid is not None and alive(pid)
            raise RuntimeError("in the block")
    assert pid is not None
    assert not alive(pid) and gateway.exit_code == 0         # it was asked (the stop frame) and exited


async def test_a_gateway_that_dies_is_started_again_at_once_and_stopped_when_cancelled(
        tmp_path: Path) -> None:
    gateway = FakeGateway(gateway_config(tmp_path), InboundQueue(), resume=dict)
    pids: list[int] = []
    up = asyncio.Event()

    async def engine() -> None:
        async with gateway:
            up.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(engine())
    await up.wait()
    assert gateway.pid is not None
    pids.append(gateway.pid)
    t0 = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    await until(lambda: gateway.restarts == 1 and gateway.pid != pids[0] and gateway.ready is not None
                and gateway.ready["pid"] == gateway.pid)
    assert time.monotonic() - t0 < 5            # at once, not after a delay (the first restart)
    assert gateway.pid is not None
    pids.append(gateway.pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not alive(pids[1]))
    assert gateway.exit_code == 0


COUNTING_CHILD = "import sys; sys.exit(len(sys.stdin.buffer.read()))"


class FakePostTrade(PostTradeProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", COUNTING_CHILD]


async def test_async_with_posttrade_process_pokes_it_and_stops_it_by_closing_its_stdin(
        tmp_path: Path) -> None:
    child = FakePostTrade(gateway_config(tmp_path), stop_timeout=10)
    async with child:
        for _ in range(3):
            child.notify()
    assert child.exit_code == 3 and child.restarts == 0     # it read the three pokes, then end of file


async def test_a_posttrade_child_that_dies_is_started_again_after_a_second(tmp_path: Path) -> None:
    child = FakePostTrade(gateway_config(tmp_path), stop_timeout=10)
    with pytest.raises(KeyError):
        async with child:
            first = child.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            t0 = time.monotonic()
            await until(lambda: child.pid != first)
            assert 0.9 <= time.monotonic() - t0 < 5
            assert child.restarts == 1
            second = child.pid
            assert second is not None
            raise KeyError("in the block")
    assert second is not None
    assert not alive(second) and child.exit_code == 0
