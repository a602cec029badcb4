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

from adapters.commands import CommandListener
from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.mqtt import MqttSettings, OutboxRelay
from fixsim.scenario import FaultRates, Scenario
from fixsim.statement import write_statement
from handlers import recon
from handlers.posttrade import PostTrade
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
    (brk,) = await queries.list_breaks(database, type_="ssi_missing")
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
                        event = json.loads(bytes(message.payload))
                        data = event["data"]
                        if str(message.topic).startswith("fxstp/replies/"):
                            if data["request_id"] == request_id or (request_id == "" and
                                                                    data["request_id"] is None):
                                replies[request_id] = {"topic": str(message.topic), **data}
                                return
                        elif event["type"] != "com.fxstp.break.detected":
                            changes.append(event)

            async def state() -> str:
                shown = await queries.show_break(db, bid)
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
                    event = json.loads(bytes(message.payload))
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
    shown = await queries.show_break(db, bid)
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
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [e.platform for e in events])  # type: ignore[misc]  # price faults drop no side
    rows = await q(db, "SELECT break_id, cut_off_us FROM breaks WHERE type = 'mismatch' ORDER BY cut_off_us")
    assert len(rows) >= 5 and all(r[1] is not None for r in rows)
    first_cut = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(rows[0][1]))
    # a mismatch on a 2030 trade: its cut-off is the business day before the value date
    assert first_cut.date() < max(e.lp.settl_date for e in events if e.lp is not None)
    resolved = rows[0][0]
    await inbox_db.enqueue(db, "break_resolve", {"break_id": resolved, "by": "ops", "reason": "fixed"})
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
    await intake_and_pipeline(db, [e.lp for e in events], [])  # type: ignore[misc]  # no faults: no side is missing
    buf = io.StringIO()
    write_statement(sc, buf)
    clean = tmp_path / "clean.csv"
    clean.write_text(buf.getvalue())
    result = await recon.reconcile_statement_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", clean)
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
    result = await recon.reconcile_statement_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", path)
    assert result["by_type"] == {"recon_missing_lp": 1, "recon_difference": 1, "recon_missing_engine": 1}
    assert (result["lines"], result["matched"]) == (401, 398)
    # the unreadable line is reported with its line number, not reconciled
    assert [u["line"] for u in result["unreadable_lines"]] == [len(edited)]
    (gone,) = await queries.list_breaks(db, type_="recon_missing_lp")
    assert gone["keys"]["exec_id"] == dropped
    (diff,) = await queries.list_breaks(db, type_="recon_difference")
    assert diff["keys"]["exec_id"] == altered[0]
    (missing,) = await queries.list_breaks(db, type_="recon_missing_engine")
    assert missing["keys"]["exec_id"] == "LP1-NOT-OURS"
    # published with the run, and the file is kept as received
    assert (await q(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE 'fxstp/breaks/LP1/recon_%'")) == [(3,)]
    runs = await q(db, "SELECT kind, lines, matched, breaks, content FROM recon_runs ORDER BY id")
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [("statement", 400, 400, 0),
                                                        ("statement", 401, 398, 3)]
    assert runs[1][4] == path.read_text()
    # the same file again: the same breaks, counted, not new ones
    await recon.reconcile_statement_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", path)
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
    result = await recon.reconcile_positions_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", path)
    assert (result["breaks"], result["unreadable_lines"]) == (0, [])
    assert result["matched"] >= len([r for r in rows if r[2] != 0])
    # one currency off by a minor unit, one left out
    ccy, vd, _ = rows[0]
    step = Decimal(1) if ccy == "JPY" else Decimal("0.01")
    skipped = next(r for r in rows[1:] if r[2] != 0)
    text = "currency,value_date,lp_pays\n" + "".join(
        f"{c},{v},{a + step if (c, v) == (ccy, vd) else a}\n" for c, v, a in rows if (c, v, a) != skipped)
    path.write_text(text)
    result = await recon.reconcile_positions_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", path)
    drift = await queries.list_breaks(db, type_="position_drift")
    assert {(b["keys"]["currency"], b["keys"]["value_date"]) for b in drift} == \
        {(ccy, vd.isoformat()), (skipped[0], skipped[1].isoformat())}
    assert result["breaks"] == 2
    shown = await queries.show_break(db, next(b["break_id"] for b in drift if b["keys"]["currency"] == ccy
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
            shown = await queries.show_break(db, bid)
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
    await intake_and_pipeline(db, [e.lp for e in sc.events()], [])  # type: ignore[misc]  # no faults: no side is missing
    buf = io.StringIO()
    write_statement(sc, buf)
    bom = tmp_path / "bom.csv"                      # Excel's UTF-8 BOM before the header
    bom.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode())
    result = await recon.reconcile_statement_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", bom)
    assert (result["breaks"], result["matched"]) == (0, 50)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id;symbol;side\nE1;EURUSD;1\n")
    with pytest.raises(recon.ReconError, match="header lacks exec_id"):
        await recon.reconcile_statement_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("currency,value_date,lp_pays\n")
    with pytest.raises(recon.ReconError, match="empty"):
        await recon.reconcile_positions_file(PostTradeStore(db), REFERENCE, "fxstp", "LP1", empty)
    assert await q(db, "SELECT COUNT(*) FROM breaks") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM recon_runs") == [(1,)]


# -- commands delivered more than once (QoS 1) ----------------------------------


class FakeClient:
    """What CommandListener.handle needs of an MQTT client: publish (the
    replies it sends itself)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, topic: str, payload: str, qos: int = 0, timeout: float | None = None) -> None:
        self.published.append((topic, json.loads(payload)))


def command(request_id: str | None, action: str, bid: str, by: str, **more: str) -> bytes:
    body = {"action": action, "break_id": bid, "by": by, **more}
    return json.dumps(body if request_id is None else {"request_id": request_id, **body}).encode()


async def replies_of(db: Database, request_id: str | None) -> list[dict[str, Any]]:
    """The replies in the outbox (published by the pipeline), in order."""
    out = []
    sql = "SELECT payload FROM outbox WHERE topic LIKE 'fxstp/replies/%' ORDER BY id"
    for (payload,) in await q(db, sql):
        event = json.loads(payload)
        if event["data"]["request_id"] == request_id:
            out.append(event)
    return out


async def test_a_command_with_a_request_id_is_applied_once_and_a_repeat_gets_the_same_reply(
        db: Database) -> None:
    pipeline, bid = await _ssi_break(db)
    listener = CommandListener(db, "fxstp")
    client = FakeClient()
    ack = command("desk-1", "acknowledge", bid, "ops1", reply_to="fxstp/replies/ops1")
    await listener.handle(client, ack)                       # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    (first,) = await replies_of(db, "desk-1")
    assert first["data"] == {"request_id": "desk-1", "ok": True,
                             "result": {"break_id": bid, "state": "acknowledged", "by": "ops1"}}
    assert client.published == []                            # the pipeline answered, through the outbox
    outbox = await q(db, "SELECT COUNT(*) FROM outbox")

    # delivered again (the broker redelivers what the engine had not acknowledged):
    # nothing is queued or changed, and the reply is the first one, the same event
    await listener.handle(client, ack)                       # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    assert client.published == [("fxstp/replies/ops1", first)]
    await pipeline.tick()
    assert await q(db, "SELECT COUNT(*) FROM outbox") == outbox
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(1,)]
    assert (listener.repeated, listener.refused) == (1, 0)

    # ... after a restart too: the dedupe is in the database
    restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()
    again = FakeClient()
    await CommandListener(db, "fxstp").handle(again, ack)    # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await restarted.tick()
    assert again.published == [("fxstp/replies/ops1", first)]
    assert await q(db, "SELECT COUNT(*) FROM outbox") == outbox
    stored = [r[0] for r in await q(db, f"SELECT event_id FROM outbox WHERE event_id LIKE '{bid}-%'")]
    assert stored == [f"{bid}-acknowledged"]
    shown = await queries.show_break(db, bid)
    assert shown is not None and (shown["state"], shown["acknowledged_by"]) == ("acknowledged", "ops1")

    # the same request id with another command: refused, nothing changes
    for other, answered_on in (
            (command("desk-1", "resolve", bid, "ops1", reason="done"), "fxstp/replies/breaks"),
            (command("desk-1", "acknowledge", bid, "ops2", reply_to="fxstp/replies/ops1"),
             "fxstp/replies/ops1"),
            (command("desk-1", "acknowledge", bid, "ops1"), "fxstp/replies/breaks")):   # another reply_to
        refused = FakeClient()
        await listener.handle(refused, other)                 # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
        ((topic, reply),) = refused.published
        assert topic == answered_on
        assert reply["data"]["ok"] is False and reply["data"]["request_id"] == "desk-1"
        assert reply["data"]["error"]["code"] == "request_id_reused"
        assert "desk-1" in reply["data"]["error"]["message"] and str(first["id"]) != reply["id"]
    await restarted.tick()
    assert await q(db, "SELECT COUNT(*) FROM outbox") == outbox
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(1,)]
    assert (await queries.show_break(db, bid) or {})["state"] == "acknowledged"

    # "ack" is "acknowledge": the same command
    same = FakeClient()
    await listener.handle(same, command("desk-1", "ack", bid, "ops1",                # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
                                        reply_to="fxstp/replies/ops1"))
    assert same.published == [("fxstp/replies/ops1", first)]


async def test_a_repeat_while_the_first_waits_and_a_refused_command_repeated(db: Database) -> None:
    pipeline, bid = await _ssi_break(db)
    listener = CommandListener(db, "fxstp")
    client = FakeClient()
    resolve = command("desk-2", "resolve", bid, "ops1", reason="SSI added")
    await listener.handle(client, resolve)                   # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await listener.handle(client, resolve)                   # type: ignore[arg-type]  # FakeClient; before the pipeline applied the first
    assert client.published == []                            # the first one's reply will answer both
    await pipeline.tick()
    (reply,) = await replies_of(db, "desk-2")
    assert reply["data"]["ok"] is True and reply["data"]["result"]["state"] == "resolved"
    assert [r[0] for r in await q(db, f"SELECT event_id FROM outbox WHERE event_id LIKE '{bid}-%'")] == \
        [f"{bid}-resolved"]
    # a refused command repeated gets the same refusal, not another error
    unknown = command("desk-3", "acknowledge", "0" * 24, "ops1")
    await listener.handle(client, unknown)                   # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    (refusal,) = await replies_of(db, "desk-3")
    assert refusal["data"]["error"]["code"] == "unknown_break"
    await listener.handle(client, unknown)                   # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    assert client.published == [("fxstp/replies/breaks", refusal)]
    # without a request id nothing is deduplicated: a repeat is an illegal transition, as before
    for _ in range(2):
        await listener.handle(client, command(None, "resolve", bid, "ops2", reason="again"))  # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    codes = [r["data"]["error"]["code"] for r in await replies_of(db, None)]
    assert codes == ["illegal_transition", "illegal_transition"]
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(4,)]


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_a_command_redelivered_after_a_restart_is_answered_as_the_first_was(
        db: Database, tmp_path: Path) -> None:
    """On the bus: a command applied, the engine restarted, the same command
    again (as the broker redelivers one the engine had not acknowledged): the
    desk gets the first reply again, the break changes once."""
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)
    ack = command("desk-9", "ack", bid, "ops1")
    replies: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []

    async def engine_once(p: PostTrade, client: aiomqtt.Client, body: bytes) -> dict[str, Any]:
        listener = CommandListener(db, "fxstp", wake=p.tick_now.set)
        relay = OutboxRelay(db, MqttSettings(port=broker.port, client_id="engine-redelivery"),
                            wakeup=p.committed, commands=listener)
        p.timer_seconds = 30.0
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(p.run())]
        try:
            await asyncio.wait_for(relay.connected.wait(), 10)
            await client.publish("fxstp/commands/breaks", body, qos=1)
            async with asyncio.timeout(15):
                async for message in client.messages:
                    event: dict[str, Any] = json.loads(bytes(message.payload))
                    if str(message.topic).startswith("fxstp/replies/"):
                        replies.append(event)
                        if event["data"]["request_id"] == "desk-9":
                            return event
                    elif event["type"] != "com.fxstp.break.detected":
                        changes.append(event)
            raise AssertionError("no reply")
        finally:
            await relay.stop()
            await p.stop()
            for t in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 10)

    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("fxstp/replies/#", qos=1)
            await client.subscribe("fxstp/breaks/#", qos=1)
            first = await engine_once(pipeline, client, ack)
            restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
            await restarted.load()
            second = await engine_once(restarted, client, ack)
            reused = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
            await reused.load()
            third = await engine_once(reused, client, command("desk-9", "resolve", bid, "ops1", reason="x"))
    finally:
        broker.stop()
    assert first["data"] == {"request_id": "desk-9", "ok": True,
                             "result": {"break_id": bid, "state": "acknowledged", "by": "ops1"}}
    assert second == first
    assert third["data"]["ok"] is False and third["data"]["error"]["code"] == "request_id_reused"
    assert {c["id"] for c in changes} == {f"{bid}-acknowledged"}
    shown = await queries.show_break(db, bid)
    assert shown is not None and shown["state"] == "acknowledged"
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(1,)]


async def test_migration_gives_earlier_commands_their_request_id_and_reply(db: Database) -> None:
    """0007 on a database that already holds commands: the first MQTT command
    per request id gets its request id and reply; a later row with the same
    request id (a redelivery applied before the upgrade) keeps none."""
    from alembic import command as alembic
    from alembic.config import Config

    from adapters.db.repository import MIGRATIONS

    await db.drop_all()

    def upgrade(to: str) -> Any:
        def run(conn: Any) -> None:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            alembic.upgrade(cfg, to)
        return run

    async with db.engine.begin() as conn:
        await conn.run_sync(upgrade("0006_market_prices"))
        mqtt = {"break_id": "b1", "by": "ops1", "reason": None, "reply_to": None, "via": "mqtt"}
        rows = [(1, "break_acknowledge", {**mqtt, "request_id": "r-1"}),
                (2, "cash", {"account": "ACC001", "request_id": "not-a-command"}),
                (3, "break_acknowledge", {**mqtt, "request_id": "r-1"}),     # redelivered, applied again
                (4, "break_resolve", {**mqtt, "request_id": None, "reason": "x"}),
                (5, "break_acknowledge", {"break_id": "b2", "by": "cli"})]
        for inbox_id, kind, payload in rows:
            await conn.exec_driver_sql(
                f"INSERT INTO inbox (id, kind, payload, created_us, applied_us, result) VALUES "
                f"({inbox_id}, '{kind}', '{json.dumps(payload)}', 1, 2, 'done')")
        for inbox_id in (1, 3):
            await conn.exec_driver_sql(
                "INSERT INTO outbox (event_id, topic, payload, retain, created_us) VALUES "
                f"('reply-inbox-{inbox_id}', 'fxstp/replies/breaks', '{{\"reply\": {inbox_id}}}', false, 2)")
    await db.migrate()
    assert await q(db, "SELECT id, request_id, reply FROM inbox ORDER BY id") == [
        (1, "r-1", '{"reply": 1}'), (2, None, None), (3, None, None), (4, None, None), (5, None, None)]
    # and from now on the request id is taken
    queued = await inbox_db.enqueue_once(db, "break_acknowledge", {**mqtt, "request_id": "r-1"}, "r-1")
    assert (queued.new, queued.inbox_id, queued.applied, queued.reply) == (False, 1, True, '{"reply": 1}')
