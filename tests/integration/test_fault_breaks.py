"""End to end: the LP and platform simulators with fault injection, the engine
and a private Mosquitto, all separate processes.  Every injected content
fault must arrive as the right break type on the right topic, exactly the
breaks the faults explain and no other; wire faults (duplicates, PossDup
resends, sequence gaps, garbled messages) are absorbed by the session layer
and the dedupe and give none; a fault-free run gives none at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fixsim.scenario import FaultRates, Scenario, ScenarioEvent
from tests.conftest import ROOT, free_port
from tests.integration.test_engine_intake import write_config
from tests.integration.test_outbox import MOSQUITTO, Broker

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")]

START = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)     # far from any cut-off
COUNT, SEED = 500, 41
CONTENT = "price=0.01,quantity=0.01,side=0.01,value_date=0.01,missing_lp=0.01,missing_platform=0.01," \
          "execid_reuse=0.01"
WIRE = "duplicate=0.02,possdup=0.02,seq_gap=0.01,garbled=0.01"


def expected_breaks(events: list[ScenarioEvent]) -> set[tuple[str, str]]:
    """(topic under the prefix, exec_id) of the break each injected fault must raise.

    A value, quantity, side or date that differs on one side is a mismatch of
    the LP's fill (LP1 topic); a quantity beyond the order's cannot be
    processed at all: that side's report is DK'd (rejected_report on its own
    session) and the other side stays unmatched.  An LP SettlDate that is not
    the value date is also a value_date_mismatch.  A fill only one side
    reports is unmatched on that side; an ExecID the LP reuses is a conflict,
    and the platform's record of the fill it hid is unmatched.
    """
    out: set[tuple[str, str]] = set()
    for e in events:
        faults = set(e.faults)
        if not faults:
            continue
        if faults == {"missing_lp"}:
            assert e.platform is not None
            out.add(("PLATFORM/unmatched_platform", e.platform.exec_id))
        elif faults == {"missing_platform"}:
            assert e.lp is not None
            out.add(("LP1/unmatched_lp", e.lp.exec_id))
        elif faults == {"execid_reuse"}:
            assert e.lp is not None and e.platform is not None
            out.add(("LP1/execid_conflict", e.lp.exec_id))
            out.add(("PLATFORM/unmatched_platform", e.platform.exec_id))
        else:
            assert e.lp is not None and e.platform is not None and e.fault_side in ("lp", "platform")
            altered = e.lp if e.fault_side == "lp" else e.platform
            if "quantity" in faults and altered.last_qty > altered.order_qty:
                if e.fault_side == "lp":
                    out.add(("LP1/rejected_report", e.lp.exec_id))
                    out.add(("PLATFORM/unmatched_platform", e.platform.exec_id))
                else:
                    out.add(("PLATFORM/rejected_report", e.platform.exec_id))
                    out.add(("LP1/unmatched_lp", e.lp.exec_id))
                continue
            out.add(("LP1/mismatch", e.lp.exec_id))
            if "value_date" in faults and e.fault_side == "lp":
                out.add(("LP1/value_date_mismatch", e.lp.exec_id))
    return out


async def _collect(port: int, want: int, quiet_s: float, limit_s: float) -> list[tuple[str, dict[str, Any]]]:
    """Break-detected events from the bus until ``want`` distinct ids have come
    and ``quiet_s`` passed without another (or ``limit_s`` overall).

    The margin stage's ``margin_unpriced`` breaks are left out: an account
    whose P&L is in a currency no rate has reached yet is unpriced until one
    does (how long depends on the batch boundaries, so on the machine's load);
    these tests are about the fills' breaks."""
    got: dict[str, tuple[str, dict[str, Any]]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with aiomqtt.Client("127.0.0.1", port, identifier="fault-test", clean_session=False) as client:
        await client.subscribe("faults/breaks/#", qos=1)
        while loop.time() < deadline:
            wait = quiet_s if len(got) >= want else deadline - loop.time()
            try:
                async with asyncio.timeout(max(0.1, wait)):
                    message = await anext(aiter(client.messages))
            except TimeoutError:
                if len(got) >= want:
                    break
                continue
            event = json.loads(bytes(message.payload))
            if event["type"] == "com.fxstp.break.detected" and event["data"]["type"] != "margin_unpriced":
                got.setdefault(event["id"], (str(message.topic), event))
    return list(got.values())


def _run(tmp_path: Path, faults: str, want: int) -> list[tuple[str, dict[str, Any]]]:
    broker = Broker(tmp_path)
    broker.start()
    procs: list[subprocess.Popen[str]] = []
    sent: list[int] = []
    try:
        lp_port, pf_port = free_port(), free_port()
        cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}",
                           lp_port, pf_port)
        cfg.write_text(cfg.read_text() + f'\n[mqtt]\nport = {broker.port}\ntopic_prefix = "faults"\n'
                       "[confirm]\nwindow_seconds = 4\n")
        common = ["--count", str(COUNT), "--seed", str(SEED), "--start", START.isoformat(), "--reset",
                  "--linger", "3", "--no-progress", "--wait-logon", "90"]
        common += ["--faults", faults] if faults else []
        run = [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error"]
        # the subscriber's session exists before anything is published (QoS 1 is queued for it)
        asyncio.run(_collect(broker.port, 0, 0.1, 2))
        procs.append(subprocess.Popen([*run, "simulate", "lp", "--port", str(lp_port), "--state-dir",
                                       str(tmp_path / "sl"), *common], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "run_engine.py"), "run", "--config",
                                       str(cfg)],
                                      cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=(tmp_path / "engine.log").open("ab"), text=True))
        procs.append(subprocess.Popen([*run, "simulate", "platform", "--port", str(pf_port), "--state-dir",
                                       str(tmp_path / "sp"), *common], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True))
        for sim in (procs[0], procs[2]):                  # both simulators have sent everything
            out, _ = sim.communicate(timeout=120)
            summary = json.loads(out.strip().splitlines()[-1])
            assert sim.returncode == 0 and summary["completed"], summary
            sent.append(summary["execution_reports"])
        # the engine took in everything that was sent (a run where nothing ran proves nothing)
        stat = json.loads(subprocess.run([sys.executable, str(ROOT / "run_engine.py"), "status", "--config",
                                          str(cfg), "--json"], cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout)
        assert stat["executions"] + stat["conflicts"] >= sum(sent) - 5, (stat, sent)
        # past the matching window, unmatched fills have expired
        return asyncio.run(_collect(broker.port, want, quiet_s=8.0, limit_s=60))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        broker.stop()


def test_every_injected_fault_becomes_its_break_on_its_topic(tmp_path: Path) -> None:
    faults = f"{CONTENT},{WIRE}"
    events = list(Scenario(seed=SEED, count=COUNT, start=START, faults=FaultRates.parse(faults)).events())
    expected = expected_breaks(events)
    kinds = {f for e in events for f in e.faults}
    assert kinds == {"price", "quantity", "side", "value_date", "missing_lp", "missing_platform",
                     "execid_reuse"}                        # every content fault is exercised
    received = _run(tmp_path, faults, len(expected))
    got = {(topic.removeprefix("faults/breaks/"), ev["data"]["keys"]["exec_id"]) for topic, ev in received}
    assert got == expected
    assert len(received) == len(expected)                   # each once, after dedupe on the event id
    for topic, ev in received:                              # the topic names the event's own type
        assert topic.endswith("/" + ev["data"]["type"])


def test_a_run_without_faults_raises_no_break(tmp_path: Path) -> None:
    received = _run(tmp_path, "", 0)
    assert received == []
