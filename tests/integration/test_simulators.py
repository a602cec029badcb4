"""LP and platform simulators over real loopback FIX, against the counting sink.

Every wire fault the simulators inject is checked at the receiving end: the
sink (the project's session layer as a normal FIX engine) must end up with
every distinct ExecID exactly once, and see the fault the way a counterparty
would (a garbled frame, a resend request, a PossDup it ignores, a PossResend
duplicate, a reconnect).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixsim.runner import SimOptions, SimSummary, run_simulator
from fixsim.scenario import FaultRates, Scenario
from fixsim.sink import SinkOptions, run_sink
from fixsim.store import FileStore
from stp.fixwire import parse_frame
from tests.conftest import free_port

START = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def lp_options(tmp_path: Path, port: int, count: int, faults: str = "", **kw: Any) -> SimOptions:
    return SimOptions(role="lp", port=port, count=count, seed=kw.pop("seed", 11),
                      faults=FaultRates.parse(faults), state_dir=tmp_path / "lp",
                      reset=kw.pop("reset", True), start=START, linger=kw.pop("linger", 1.0),
                      progress=False, **kw)


def expected_ids(count: int, faults: str = "", seed: int = 11, side: str = "lp") -> set[str]:
    scenario = Scenario(seed=seed, count=count, faults=FaultRates.parse(faults), start=START)
    ids = set()
    for ev in scenario.events():
        fill = ev.lp if side == "lp" else ev.platform
        if fill is not None:
            ids.add(fill.exec_id)
    return ids


async def lp_and_sink(opt: SimOptions, idle: float = 1.5,
                      expect: int | None = None) -> tuple[SimSummary, dict[str, Any]]:
    lp_task = asyncio.create_task(run_simulator(opt, out=_Null()))  # type: ignore[arg-type]  # _Null stands in for a TextIO
    await asyncio.sleep(0.2)
    # bounded: a stuck peer fails the test instead of hanging the run
    sink = await asyncio.wait_for(run_sink(SinkOptions(connect=("127.0.0.1", opt.port), idle=idle,
                                                       expect=expect)), 90)
    lp = await asyncio.wait_for(lp_task, 30)
    return lp, sink


async def test_clean_stream_arrives_exactly_once(tmp_path: Path) -> None:
    opt = lp_options(tmp_path, free_port(), 1500)
    lp, sink = await lp_and_sink(opt)
    ids = expected_ids(1500)
    assert lp.completed and lp.execution_reports == 1500 and lp.faults == {}
    assert sink["unique"] == len(ids) == 1500
    assert sink["duplicates"] == sink["conflicts"] == sink["garbled"] == 0
    assert sink["resend_requests_sent"] == 0
    assert sink["exec_types"] == lp.exec_types
    assert set(lp.exec_types) == {"F", "G", "H"}   # cancels and corrections are in the stream


@pytest.mark.parametrize("fault", ["seq_gap", "garbled", "duplicate", "possdup", "disconnect"])
async def test_wire_fault_is_seen_and_recovered(tmp_path: Path, fault: str) -> None:
    opt = lp_options(tmp_path, free_port(), 800, f"{fault}=0.02")
    lp, sink = await lp_and_sink(opt)
    injected = lp.faults.get(fault, 0)
    assert injected >= 3, lp.faults                       # the fault really happened
    assert set(lp.faults) == {fault}
    assert sink["unique"] == len(expected_ids(800)) == 800  # nothing lost
    assert sink["conflicts"] == 0
    if fault == "seq_gap":
        assert sink["resend_requests_sent"] >= 1
        assert lp.messages_resent >= injected
        assert sink["duplicates"] == 0
    elif fault == "garbled":
        assert sink["garbled"] == injected
        assert sink["resend_requests_sent"] >= 1
        assert sink["duplicates"] == 0
    elif fault == "duplicate":
        assert sink["poss_resend"] == injected
        assert sink["duplicates"] == injected
    elif fault == "possdup":
        assert sink["poss_dup_ignored"] == injected
        assert sink["duplicates"] == 0
    elif fault == "disconnect":
        assert sink["logons"] == lp.logons == injected + 1
        assert sink["duplicates"] == 0


async def test_execid_reuse_reaches_the_peer_as_conflicts(tmp_path: Path) -> None:
    opt = lp_options(tmp_path, free_port(), 600, "execid_reuse=0.03")
    lp, sink = await lp_and_sink(opt)
    reused = lp.faults["execid_reuse"]
    assert reused >= 3
    assert sink["conflicts"] == reused
    assert sink["unique"] == len(expected_ids(600, "execid_reuse=0.03"))


async def test_missing_and_late_fills(tmp_path: Path) -> None:
    faults = "missing_lp=0.03,late=0.03"
    opt = lp_options(tmp_path, free_port(), 600, faults)
    lp, sink = await lp_and_sink(opt)
    assert lp.faults["missing_lp"] >= 3 and lp.faults["late"] >= 3
    assert sink["unique"] == len(expected_ids(600, faults)) == 600 - lp.faults["missing_lp"]
    # the late fills are the last ones the LP sent
    scenario = Scenario(seed=11, count=600, faults=FaultRates.parse(faults), start=START)
    late = [ev.lp.exec_id for ev in scenario.events() if ev.lp is not None and "late" in ev.faults]
    store = FileStore(opt.state_dir, "FIX.4.4-LP1-STP")
    sent = [parse_frame(raw) for _, raw in store.get_range(1, store.next_sender_seq)]
    store.close()
    er_ids = [m.get(17) for m in sent if m.msg_type == "8"]
    assert er_ids[-len(late):] == late


async def test_lp_restart_resumes_scenario_and_sequence(tmp_path: Path) -> None:
    """An LP simulator stopped and started again continues where it was."""
    port = free_port()
    sink_task = asyncio.create_task(run_sink(SinkOptions(connect=("127.0.0.1", port), idle=8,
                                                         expect=800)))
    first = await run_simulator(lp_options(tmp_path, port, 400, linger=0.3), out=_Null())  # type: ignore[arg-type]  # _Null stands in for a TextIO
    second = await run_simulator(lp_options(tmp_path, port, 800, reset=False, linger=2.0),
                                 out=_Null())  # type: ignore[arg-type]  # _Null stands in for a TextIO
    sink = await asyncio.wait_for(sink_task, 30)
    assert first.execution_reports == 400 and second.execution_reports == 400
    assert second.events == 800
    assert sink["unique"] == 800 and sink["duplicates"] == 0 and sink["conflicts"] == 0


async def test_platform_simulator_streams_its_record(tmp_path: Path) -> None:
    port = free_port()
    faults = "missing_platform=0.04,price=0.05"
    sink_task = asyncio.create_task(run_sink(SinkOptions(
        listen=("127.0.0.1", port), sender_comp_id="STP", target_comp_id="PLATFORM", idle=2.0)))
    await asyncio.sleep(0.2)
    opt = SimOptions(role="platform", port=port, count=500, seed=11, faults=FaultRates.parse(faults),
                     sender_comp_id="PLATFORM", target_comp_id="STP", state_dir=tmp_path / "pf",
                     reset=True, start=START, linger=0.5, progress=False, reconnect_interval=0.2)
    platform = await run_simulator(opt, out=_Null())  # type: ignore[arg-type]  # _Null stands in for a TextIO
    sink = await asyncio.wait_for(sink_task, 30)
    ids = expected_ids(500, faults, side="platform")
    assert platform.faults["missing_platform"] == 500 - len(ids) >= 3
    assert sink["unique"] == len(ids)
    # price mismatches put on the platform's side are counted by the platform
    scenario = Scenario(seed=11, count=500, faults=FaultRates.parse(faults), start=START)
    on_platform = sum(1 for ev in scenario.events() if "price" in ev.injected_by("platform"))
    assert platform.faults.get("price", 0) == on_platform >= 1


async def test_fix42_stream(tmp_path: Path) -> None:
    opt = lp_options(tmp_path, free_port(), 300, begin_string="FIX.4.2")
    lp_task = asyncio.create_task(run_simulator(opt, out=_Null()))  # type: ignore[arg-type]  # _Null stands in for a TextIO
    await asyncio.sleep(0.2)
    sink: dict[str, Any] = await run_sink(SinkOptions(connect=("127.0.0.1", opt.port), begin_string="FIX.4.2",
                                      idle=1.5))
    lp = await asyncio.wait_for(lp_task, 30)
    assert lp.execution_reports == 300 and sink["unique"] == 300
    assert set(sink["exec_types"]) <= {"1", "2"}   # FIX.4.2 ExecType carries the order state
