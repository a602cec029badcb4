"""The desk's side of issue 5 against real components: lifecycle commands on
the MQTT command topic (a private Mosquitto), escalations near cut-off, and
end-of-day reconciliation (statement and position report), on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters import desk, recon
from adapters.commands import CommandListener
from adapters.db.repository import Database
from adapters.mqtt import MqttSettings, OutboxRelay
from adapters.sim.scenario import FaultRates, Scenario
from adapters.sim.statement import write_statement
from stp.netting import NetKey
from tests.integration.test_outbox import MOSQUITTO, Broker
from tests.integration.test_posttrade import (
    REFERENCE,
    START,
    db,
    expected_nets,
    intake_and_pipeline,
    q,
    scenario,
)

__all__ = ["db"]       # the fixture (SQLite and PostgreSQL)


async def _none() -> Any:
    return
    yield


async def _ssi_break(database: Database) -> tuple[Any, str]:
    """A pipeline with one open ssi_missing break (LP2 has no CAD SSI)."""
    events = scenario(100)
    _, pipeline = await intake_and_pipeline(database, [e.lp for e in events], [])
    key = NetKey("LP2", "CAD", min(k.value_date for k in pipeline.net.nets))
    pipeline.settle.book.on_net_change(key, Decimal("1000.00"), START)
    await pipeline.tick(now=datetime.combine(key.value_date, datetime.min.time(), UTC))
    (brk,) = await desk.list_breaks(database, type_="ssi_missing")
    return pipeline, str(brk["break_id"])


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_lifecycle_commands_on_the_bus_and_their_replies(db: Database, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)
    pipeline.timer_seconds = 30.0          # only a command wakes the timer's work
    listener = CommandListener(db, "fxstp", wake=pipeline.tick_now.set)
    relay = OutboxRelay(db, MqttSettings(port=broker.port, topic_prefix="fxstp"), wakeup=pipeline.committed,
                        commands=listener)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(pipeline.run())]
    replies: dict[str, dict[str, Any]] = {}
    changes: list[dict[str, Any]] = []
    try:
        await asyncio.wait_for(relay.connected.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("fxstp/replies/#", qos=1)
            await client.subscribe("fxstp/breaks/#", qos=1)

            async def send(request_id: str, body: bytes | dict[str, Any],
                           reply_to: str | None = None) -> None:
                if isinstance(body, dict):
                    body = json.dumps({"request_id": request_id, **body,
                                       **({"reply_to": reply_to} if reply_to else {})}).encode()
                await client.publish("fxstp/commands/breaks", body, qos=1)
                async with asyncio.timeout(15):
                    async for message in client.messages:
                        event = json.loads(bytes(message.payload))   # type: ignore[arg-type]
                        data = event["data"]
                        if str(message.topic).startswith("fxstp/replies/"):
                            if data["request_id"] == request_id or (request_id == "" and
                                                                    data["request_id"] is None):
                                replies[request_id] = {"topic": str(message.topic), **data}
                                return
                        elif event["type"] != "com.fxstp.break.detected":
                            changes.append(event)

            async def state() -> str:
                shown = await desk.show_break(db, bid)
                assert shown is not None
                return str(shown["state"])

            await send("", b"{this is not json")
            await send("r-unknown", {"action": "ack", "break_id": "0" * 24, "by": "ops1"})
            await send("r-noreason", {"action": "resolve", "break_id": bid, "by": "ops1"})
            await send("r-bad-action", {"action": "delete", "break_id": bid, "by": "ops1"})
            assert await state() == "open"
            await send("r-ack", {"action": "acknowledge", "break_id": bid, "by": "ops1"},
                       "fxstp/replies/ops1")
            assert await state() == "acknowledged"
            await send("r-ack-again", {"action": "ack", "break_id": bid, "by": "ops2"})
            await send("r-resolve",
                       {"action": "resolve", "break_id": bid, "by": "ops2", "reason": "SSI added"})
            await send("r-after", {"action": "ack", "break_id": bid, "by": "ops3"})
            # the change events of the two good commands arrive on the break's topic
            async with asyncio.timeout(10):
                async for message in client.messages if len({c["id"] for c in changes}) < 2 else _none():
                    event = json.loads(bytes(message.payload))   # type: ignore[arg-type]
                    if event["type"] != "com.fxstp.break.detected":
                        changes.append(event)
                    if len({c["id"] for c in changes}) >= 2:
                        break
    finally:
        await relay.stop()
        await pipeline.stop()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 10)
        broker.stop()
    codes = {k: (v["ok"], v.get("error", {}).get("code")) for k, v in replies.items()}
    assert codes == {
        "": (False, "malformed_json"),
        "r-unknown": (False, "unknown_break"),
        "r-noreason": (False, "invalid_command"),
        "r-bad-action": (False, "invalid_command"),
        "r-ack": (True, None),
        "r-ack-again": (False, "illegal_transition"),
        "r-resolve": (True, None),
        "r-after": (False, "illegal_transition"),
    }
    assert replies["r-ack"]["topic"] == "fxstp/replies/ops1"
    assert replies["r-resolve"]["topic"] == "fxstp/replies/breaks"
    assert replies["r-resolve"]["result"] == {"break_id": bid, "state": "resolved", "by": "ops2"}
    assert "cannot acknowledge a break that is resolved" in replies["r-after"]["error"]["message"]
    shown = await desk.show_break(db, bid)
    assert shown is not None
    assert (shown["state"], shown["acknowledged_by"], shown["resolved_by"], shown["resolution"]) == \
        ("resolved", "ops1", "ops2", "SSI added")
    # only the two legal commands changed anything, each published once
    assert sorted({c["type"] for c in changes}) == \
        ["com.fxstp.break.acknowledged", "com.fxstp.break.resolved"]
    stored = [r[0] for r in await q(db, f"SELECT event_id FROM outbox WHERE event_id LIKE '{bid}-%'")]
    assert sorted(stored) == [f"{bid}-acknowledged", f"{bid}-resolved"]


async def test_unresolved_breaks_are_escalated_once_near_their_cut_off(db: Database) -> None:
    events = list(Scenario(seed=5, count=300, start=START, faults=FaultRates(price=0.05)).events())
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [e.platform for e in events])
    rows = await q(db, "SELECT break_id, cut_off_us FROM breaks WHERE type = 'mismatch' ORDER BY cut_off_us")
    assert len(rows) >= 5 and all(r[1] is not None for r in rows)
    first_cut = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(rows[0][1]))
    # a mismatch on a 2030 trade: its cut-off is the business day before the value date
    assert first_cut.date() < max(e.lp.settl_date for e in events if e.lp is not None)
    resolved = rows[0][0]
    from adapters import reports

    await reports.enqueue(db, "break_resolve", {"break_id": resolved, "by": "ops", "reason": "fixed"})
    await pipeline.tick(now=first_cut - timedelta(hours=3))          # too early: nothing
    assert await q(db, "SELECT COUNT(*) FROM outbox WHERE event_id LIKE '%-escalated'") == [(0,)]
    await pipeline.tick(now=first_cut - timedelta(minutes=30))
    escalated = {r[0] for r in await q(db, "SELECT event_id FROM outbox WHERE event_id LIKE '%-escalated'")}
    due = {r[0] for r in rows if int(r[1]) <= int(rows[0][1]) and r[0] != resolved}
    assert escalated == {f"{b}-escalated" for b in due} and due
    await pipeline.tick(now=first_cut - timedelta(minutes=10))       # once only
    again = [r[0] for r in await q(db, "SELECT event_id FROM outbox WHERE event_id LIKE '%-escalated'")]
    assert sorted(again) == sorted(escalated)
    payload = json.loads((await q(db, "SELECT payload FROM outbox WHERE event_id LIKE '%-escalated'"))[0][0])
    assert payload["type"] == "com.fxstp.break.escalated" and payload["data"]["minutes_to_cut_off"] == 30


async def test_statement_reconciliation(db: Database, tmp_path: Path) -> None:
    sc = Scenario(seed=11, count=400, start=START)
    events = list(sc.events())
    await intake_and_pipeline(db, [e.lp for e in events], [])
    buf = io.StringIO()
    write_statement(sc, buf)
    clean = tmp_path / "clean.csv"
    clean.write_text(buf.getvalue())
    result = await recon.reconcile_statement_file(db, REFERENCE, "fxstp", "LP1", clean)
    assert (result["breaks"], result["matched"], result["unreadable_lines"]) == (0, 400, [])
    lines = buf.getvalue().splitlines()
    header, body = lines[0], lines[1:]
    dropped = body[10].split(",")[0]
    altered = body[20].split(",")
    cols = header.split(",")
    altered[cols.index("last_px")] = str(Decimal(altered[cols.index("last_px")]) + Decimal("0.0001"))
    extra = body[30].split(",")
    extra[0] = "LP1-NOT-OURS"
    edited = [header, *body[:10], *body[11:20], ",".join(altered), *body[21:], ",".join(extra),
              "BAD-LINE,EUR/USD,9,1,1,USD"]
    path = tmp_path / "edited.csv"
    path.write_text("\n".join(edited) + "\n")
    result = await recon.reconcile_statement_file(db, REFERENCE, "fxstp", "LP1", path)
    assert result["by_type"] == {"recon_missing_lp": 1, "recon_difference": 1, "recon_missing_engine": 1}
    assert (result["lines"], result["matched"]) == (401, 398)
    # the unreadable line is reported with its line number, not reconciled
    assert [u["line"] for u in result["unreadable_lines"]] == [len(edited)]
    (gone,) = await desk.list_breaks(db, type_="recon_missing_lp")
    assert gone["keys"]["exec_id"] == dropped
    (diff,) = await desk.list_breaks(db, type_="recon_difference")
    assert diff["keys"]["exec_id"] == altered[0]
    (missing,) = await desk.list_breaks(db, type_="recon_missing_engine")
    assert missing["keys"]["exec_id"] == "LP1-NOT-OURS"
    # published with the run, and the file is kept as received
    assert (await q(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE 'fxstp/breaks/LP1/recon_%'")) == [(3,)]
    runs = await q(db, "SELECT kind, lines, matched, breaks, content FROM recon_runs ORDER BY id")
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [("statement", 400, 400, 0),
                                                        ("statement", 401, 398, 3)]
    assert runs[1][4] == path.read_text()
    # the same file again: the same breaks, counted, not new ones
    await recon.reconcile_statement_file(db, REFERENCE, "fxstp", "LP1", path)
    counted = await q(db, "SELECT COUNT(*), SUM(occurrences) FROM breaks WHERE type LIKE 'recon_%'")
    assert counted == [(3, 6)]


async def test_position_report_drift(db: Database, tmp_path: Path) -> None:
    events = scenario(600)
    lp = [e.lp for e in events if e.lp is not None]
    await intake_and_pipeline(db, lp, [])
    nets = expected_nets(lp)                           # computed independently of the engine
    report_dates = sorted({vd for (_, _, vd) in nets})[:2]
    rows = [(ccy, vd, amount) for (cp, ccy, vd), amount in sorted(nets.items()) if vd in report_dates]
    path = tmp_path / "positions.csv"
    path.write_text("currency,value_date,lp_pays\n" + "".join(f"{c},{v},{a}\n" for c, v, a in rows))
    result = await recon.reconcile_positions_file(db, REFERENCE, "fxstp", "LP1", path)
    assert (result["breaks"], result["unreadable_lines"]) == (0, [])
    assert result["matched"] >= len([r for r in rows if r[2] != 0])
    # one currency off by a minor unit, one left out
    ccy, vd, _ = rows[0]
    step = Decimal(1) if ccy == "JPY" else Decimal("0.01")
    skipped = next(r for r in rows[1:] if r[2] != 0)
    text = "currency,value_date,lp_pays\n" + "".join(
        f"{c},{v},{a + step if (c, v) == (ccy, vd) else a}\n" for c, v, a in rows if (c, v, a) != skipped)
    path.write_text(text)
    result = await recon.reconcile_positions_file(db, REFERENCE, "fxstp", "LP1", path)
    drift = await desk.list_breaks(db, type_="position_drift")
    assert {(b["keys"]["currency"], b["keys"]["value_date"]) for b in drift} == \
        {(ccy, vd.isoformat()), (skipped[0], skipped[1].isoformat())}
    assert result["breaks"] == 2
    shown = await desk.show_break(db, next(b["break_id"] for b in drift if b["keys"]["currency"] == ccy
                                           and b["keys"]["value_date"] == vd.isoformat()))
    assert shown is not None
    assert Decimal(shown["theirs"]["lp_pays"]) - Decimal(shown["ours"]["lp_pays"]) == step
    assert isinstance(date.fromisoformat(shown["keys"]["value_date"]), date)


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_a_command_sent_while_the_engine_is_away_is_applied_when_it_is_back(
        db: Database, tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)

    def relay() -> OutboxRelay:
        listener = CommandListener(db, "fxstp", wake=pipeline.tick_now.set)
        return OutboxRelay(db, MqttSettings(port=broker.port, client_id="engine-away"),
                           wakeup=pipeline.committed, commands=listener)

    first = relay()
    task = asyncio.create_task(first.run())
    try:
        await asyncio.wait_for(first.connected.wait(), 10)     # the engine's session exists
        await first.stop()
        await asyncio.wait_for(task, 10)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:     # the engine is away
            await client.publish("fxstp/commands/breaks", json.dumps(
                {"request_id": "while-away", "action": "ack", "break_id": bid, "by": "ops9"}), qos=1)
        second = relay()
        tasks = [asyncio.create_task(second.run()), asyncio.create_task(pipeline.run())]
        deadline = asyncio.get_running_loop().time() + 15
        state = None
        while asyncio.get_running_loop().time() < deadline:
            shown = await desk.show_break(db, bid)
            state = shown["state"] if shown else None
            if state == "acknowledged":
                break
            await asyncio.sleep(0.2)
        assert state == "acknowledged"
        await second.stop()
        await pipeline.stop()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 10)
    finally:
        broker.stop()


async def test_a_statement_nothing_can_be_read_from_stores_nothing(db: Database, tmp_path: Path) -> None:
    sc = Scenario(seed=11, count=50, start=START)
    await intake_and_pipeline(db, [e.lp for e in sc.events()], [])
    buf = io.StringIO()
    write_statement(sc, buf)
    bom = tmp_path / "bom.csv"                      # Excel's UTF-8 BOM before the header
    bom.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode())
    result = await recon.reconcile_statement_file(db, REFERENCE, "fxstp", "LP1", bom)
    assert (result["breaks"], result["matched"]) == (0, 50)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id;symbol;side\nE1;EURUSD;1\n")
    with pytest.raises(recon.ReconError, match="header lacks exec_id"):
        await recon.reconcile_statement_file(db, REFERENCE, "fxstp", "LP1", wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("currency,value_date,lp_pays\n")
    with pytest.raises(recon.ReconError, match="empty"):
        await recon.reconcile_positions_file(db, REFERENCE, "fxstp", "LP1", empty)
    assert await q(db, "SELECT COUNT(*) FROM breaks") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM recon_runs") == [(1,)]
