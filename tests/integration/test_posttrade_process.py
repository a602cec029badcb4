"""Post-trade in a process of its own (app/posttrade_process.py).

The engine runs as ``run_engine.py run``; its post-trade child is found
through /proc.  What is checked: the child is restarted when it dies and
catches up from its cursor, no fill is booked twice, the child ends by itself
when its engine is SIGKILLed, and one post-trade process per database holds
the lock at a time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.db.repository import Database
from tests.conftest import free_port
from tests.integration.test_engine_intake import (  # noqa: F401 (engine_factory: a fixture)
    PG_URL,
    engine_factory,
    pg_available,
    simulator,
    write_config,
)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_child(pid: int, other_than: int | None = None, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in children(pid) if c != other_than]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no post-trade child of {pid}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def query(url: str, sql: str) -> list[Any]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return list((await conn.exec_driver_sql(sql)).all())
    finally:
        await db.close()


def test_child_restarts_catches_up_and_ends_with_a_killed_engine(
        tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811 (the fixture imported above)
    url = f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
    lp_port = free_port()
    cfg = write_config(tmp_path / "engine.toml", url, lp_port, None)
    lp = simulator("lp", lp_port, 1500, tmp_path, rate=500, linger=4)
    engine = engine_factory(cfg)
    assert engine.proc is not None
    first = wait_child(engine.proc.pid)
    engine.wait_for(lambda s: s["executions"] >= 300)
    os.kill(first, signal.SIGKILL)                   # post-trade dies mid-stream
    second = wait_child(engine.proc.pid, other_than=first)
    assert second != first
    engine.wait_for(lambda s: s["executions"] >= 1500)
    lp.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cursor, last = asyncio.run(query(url, "SELECT (SELECT last_fill_id FROM pipeline_cursor), "
                                              "(SELECT MAX(id) FROM fills)"))[0]
        if cursor == last:
            break
        time.sleep(0.5)
    assert cursor == last == 1500
    twice = asyncio.run(query(url, "SELECT fill_id FROM bookings WHERE kind = 'trade' "
                                   "GROUP BY fill_id HAVING COUNT(*) > 1"))
    assert twice == []
    events = [e.get("event") for e in engine.events()]
    assert "posttrade_process_died" in events
    # the engine killed: its child sees its stdin close, finishes and exits
    engine.proc.kill()
    engine.proc.wait()
    deadline = time.monotonic() + 30
    while alive(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(second)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_one_holder_of_the_exclusive_lock_at_a_time(database: str, tmp_path: Path) -> None:
    if database == "postgresql" and not pg_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = PG_URL if database == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
    first, second = Database(url), Database(url)    # two engines' connections
    order: list[str] = []
    try:
        async with first.exclusive("posttrade-test"):
            waiting = asyncio.create_task(_take(second, order))
            await asyncio.sleep(1.0)
            assert not waiting.done()                 # the second waits
            order.append("first released")
        await asyncio.wait_for(waiting, 10)
        assert order == ["first released", "second held"]
        async with first.exclusive("posttrade-test"):     # free again
            pass
    finally:
        await first.close()
        await second.close()


async def _take(db: Database, order: list[str]) -> None:
    async with db.exclusive("posttrade-test"):
        order.append("second held")
