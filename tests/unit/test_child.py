"""adapters.child.ChildSupervisor with small Python children: restarts after
the backoff's delays, a crash loop waits longer and a child that ran well
starts over, a failed launch leaves nothing running, a stop asks, then kills
after the grace period, and ``async with`` stops the child however the block
ends."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import pytest

from adapters.child import ChildSupervisor
from stp.backoff import Backoff


class Log:
    """Records what the supervisor logs (event name and fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"       # a zombie is not running


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_child_that_keeps_crashing_is_restarted_after_growing_delays() -> None:
    log = Log()
    sup = ChildSupervisor("crasher", lambda: python("import sys; sys.exit(3)"),
                          restart=Backoff(0.05, 0.2), stop_grace=5.0, healthy_s=30.0, logger=log)
    await sup.start()
    await until(lambda: sup.restarts >= 5)
    await sup.stop()
    died = log.named("crasher_died")[:5]
    assert [d["returncode"] for d in died] == [3] * 5
    assert [d["restart_in_s"] for d in died] == [0.05, 0.1, 0.2, 0.2, 0.2]    # never up long: no reset
    assert [d["restarts"] for d in died] == [1, 2, 3, 4, 5]


async def test_a_child_that_ran_well_before_it_died_starts_the_backoff_over() -> None:
    log = Log()
    sup = ChildSupervisor("runner", lambda: python("import time; time.sleep(0.3)"),
                          restart=Backoff(0.05, 1.0, immediate=1), stop_grace=5.0, healthy_s=0.2,
                          logger=log)
    await sup.start()
    await until(lambda: sup.restarts >= 3)
    await sup.stop()
    assert [d["restart_in_s"] for d in log.named("runner_died")[:3]] == [0.0, 0.0, 0.0]


async def test_before_restart_runs_between_a_death_and_the_next_child() -> None:
    log = Log()
    calls: list[int | None] = []
    sup: ChildSupervisor

    async def between() -> None:
        assert sup.protocol is not None
        calls.append(sup.protocol.exited.result())     # the dead child is gone, no new one yet

    sup = ChildSupervisor("between", lambda: python("import sys; sys.exit(5)"),
                          restart=Backoff.fixed(0.05), stop_grace=5.0, before_restart=between, logger=log)
    await sup.start()
    await until(lambda: len(calls) >= 2)
    await sup.stop()
    assert calls[:2] == [5, 5]


async def test_a_launch_that_fails_is_tried_again_and_then_leaves_nothing_running() -> None:
    log = Log()
    pids: list[int] = []
    sup: ChildSupervisor

    async def launch() -> None:
        await sup.spawn()
        assert sup.pid is not None
        pids.append(sup.pid)
        raise ConnectionError("not ready")

    sup = ChildSupervisor("hanging", lambda: python("import time; time.sleep(60)"),
                          restart=Backoff(1.0, 1.0), stop_grace=5.0, launch=launch, logger=log)
    with pytest.raises(ConnectionError):
        await sup.start(attempts=3, retry=Backoff(0.01, 0.02))
    assert len(pids) == 3 and not any(alive(pid) for pid in pids)           # each killed
    assert [f["retry_in_s"] for f in log.named("hanging_start_failed")] == [0.01, 0.02]
    assert sup.stopping and sup.exit_code == -9


async def test_a_failed_restart_waits_the_next_delay_and_a_good_one_is_watched_again() -> None:
    log = Log()
    launches = [0]
    sup: ChildSupervisor

    async def launch() -> None:
        launches[0] += 1
        await sup.spawn()
        if launches[0] in (2, 3):                           # the first two restarts fail
            raise RuntimeError(f"launch {launches[0]} failed")

    sup = ChildSupervisor("flaky", lambda: python("import time; time.sleep(0.2)"),
                          restart=Backoff(0.02, 1.0, immediate=1), stop_grace=5.0, launch=launch,
                          logger=log)
    await sup.start()
    await until(lambda: sup.restarts >= 2)
    await sup.stop()
    assert [f["retry_in_s"] for f in log.named("flaky_restart_failed")] == [0.02, 0.04]
    assert log.named("flaky_died")[0]["restart_in_s"] == 0.0 and launches[0] >= 5


async def test_stop_asks_first_and_the_child_that_listens_exits_by_itself() -> None:
    log = Log()
    sup = ChildSupervisor("polite", lambda: python("import sys; sys.stdin.read(); sys.exit(7)"),
                          restart=Backoff(1.0, 1.0), stop_grace=20.0, logger=log)
    await sup.start()
    assert await sup.stop() == 7                     # its stdin closed: it exited with its own status
    assert not log.named("polite_stop_timeout") and sup.restarts == 0 and not log.named("polite_died")


async def test_stop_kills_a_child_that_does_not_stop_within_the_grace_period() -> None:
    log = Log()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    sup = ChildSupervisor("stubborn", lambda: python(code), restart=Backoff(1.0, 1.0), stop_grace=0.3,
                          logger=log)
    await sup.start()
    pid = sup.pid
    assert pid is not None
    t0 = time.monotonic()
    assert await sup.stop() == -9
    assert 0.3 <= time.monotonic() - t0 < 5.0
    assert log.named("stubborn_stop_timeout") == [{"pid": pid, "timeout_s": 0.3}]
    assert not alive(pid) and not log.named("stubborn_died")        # a stop is not a death


async def test_async_with_stops_the_child_after_an_exception_in_the_block() -> None:
    sup = ChildSupervisor("block", lambda: python("import sys; sys.stdin.read()"),
                          restart=Backoff(1.0, 1.0), stop_grace=10.0, logger=Log())
    with pytest.raises(KeyError):
        async with sup:
            pid = sup.pid
            assert pid is not None and alive(pid)
            raise KeyError("in the block")
    assert pid is not None
    assert not alive(pid) and sup.exit_code == 0 and sup.stopping


async def test_async_with_stops_the_child_when_the_task_is_cancelled() -> None:
    sup = ChildSupervisor("cancelled", lambda: python("import sys; sys.stdin.read()"),
                          restart=Backoff(1.0, 1.0), stop_grace=10.0, logger=Log())
    up = asyncio.Event()

    async def user() -> None:
        async with sup:
            up.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(user())
    await up.wait()
    pid = sup.pid
    assert pid is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not alive(pid))
    assert sup.exit_code == 0


async def test_a_stop_while_a_restart_waits_its_delay_starts_nothing() -> None:
    log = Log()
    sup = ChildSupervisor("waiting", lambda: python("import sys; sys.exit(1)"),
                          restart=Backoff.fixed(30.0), stop_grace=5.0, logger=log)
    await sup.start()
    await until(lambda: sup.restarts == 1)
    t0 = time.monotonic()
    assert await sup.stop() == 1                     # the dead child's status; the 30 s wait cut short
    assert time.monotonic() - t0 < 5.0 and sup.restarts == 1


async def test_a_failing_before_restart_is_logged_and_the_child_still_restarted() -> None:
    log = Log()

    async def between() -> None:
        raise OSError("the log could not be read")

    sup = ChildSupervisor("between_fails", lambda: python("import time; time.sleep(0.1)"),
                          restart=Backoff(0.02, 0.02, immediate=1), stop_grace=5.0, before_restart=between,
                          logger=log)
    await sup.start()
    await until(lambda: sup.restarts >= 2)
    await sup.stop()
    assert len(log.named("between_fails_before_restart_failed")) >= 2
