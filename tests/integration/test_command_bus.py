"""The command topic cannot be wedged or silently lost, and the embedded
broker starts only when asked (issue "correct in the real world", items 3, 9
and 10), against private Mosquitto brokers.

* a command nested 100,000 deep is answered ``malformed_json`` and
  acknowledged, and the valid command after it is applied;
* the database failing under the listener shows in the retained status, and
  the commands are stored once it is back; a listener that fails is started
  again with the connection, and the broker delivers again what it had not
  acknowledged;
* commands are stored in batches, one transaction for what has arrived;
* 20,000 commands through a Mosquitto configured as the README says are all
  answered;
* a broker that is down when the engine starts keeps its port: the engine
  waits, and the desk's persistent subscriber gets every break once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from adapters.broker import broker_reachable
from adapters.commands import CommandListener
from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.mqtt import MqttSettings, OutboxRelay
from fixsim.scenario import FaultRates, Scenario
from handlers.posttrade import PostTrade
from stp.breaks import Break, BreakType
from stp.changes import BatchChanges
from tests.conftest import ROOT, free_port
from tests.integration.test_desk_bus import _ssi_break
from tests.integration.test_engine_intake import write_config
from tests.integration.test_fault_breaks import _collect, expected_breaks
from tests.integration.test_outbox import MOSQUITTO, Broker
from tests.integration.test_posttrade import REFERENCE, START, db, q

__all__ = ["db"]       # the fixture (SQLite and PostgreSQL)

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

# what the README's bus section asks of a Mosquitto the engine uses
README_SETTINGS = """max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
autosave_interval 10
"""


class ReadmeBroker(Broker):
    """A private Mosquitto with the README's settings (persistence and
    set_tcp_nodelay are in every test broker already)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.conf.write_text(self.conf.read_text() + README_SETTINGS)


class Desk:
    """A desk client: sends commands, collects the replies and the status."""

    def __init__(self, client: aiomqtt.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.replies: list[dict[str, Any]] = []
        self.status: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Desk:
        await self.client.subscribe(f"{self.prefix}/replies/#", qos=1)
        await self.client.subscribe(f"{self.prefix}/status", qos=1)
        await self.client.subscribe(f"{self.prefix}/breaks/#", qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    async def _read(self) -> None:
        async for message in self.client.messages:
            body = json.loads(bytes(message.payload))
            topic = str(message.topic)
            if topic.startswith(f"{self.prefix}/replies/"):
                self.replies.append(body["data"])
            elif topic == f"{self.prefix}/status":
                self.status.append(body["data"])
            elif body["type"] != "com.fxstp.break.detected":
                self.changes.append(body)
            self._new.set()

    async def send(self, body: bytes | dict[str, Any]) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.client.publish(f"{self.prefix}/commands/breaks", payload, qos=1, timeout=30)

    async def until(self, predicate: Any, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._new.clear()
                await self._new.wait()

    def reply(self, request_id: str | None) -> list[dict[str, Any]]:
        return [r for r in self.replies if r["request_id"] == request_id]


class Engine:
    """Post-trade, its command listener and the outbox relay, as the engine runs them."""

    def __init__(self, db: Database, pipeline: PostTrade, port: int, prefix: str, client_id: str) -> None:
        self.pipeline = pipeline
        pipeline.timer_seconds = 30.0        # only a command wakes the inbox's work
        self.listener = CommandListener(db, prefix, wake=pipeline.tick_now.set)
        self.relay = OutboxRelay(db, MqttSettings(port=port, topic_prefix=prefix, client_id=client_id),
                                 wakeup=pipeline.committed, commands=self.listener)
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Engine:
        self.tasks = [asyncio.create_task(self.relay.run()), asyncio.create_task(self.pipeline.run())]
        await asyncio.wait_for(self.relay.connected.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.relay.stop()
        await self.pipeline.stop()
        for t in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 15)


def ack(request_id: str, bid: str, by: str = "ops1") -> dict[str, Any]:
    return {"request_id": request_id, "action": "ack", "break_id": bid, "by": by}


async def test_a_command_nested_100000_deep_is_answered_and_acknowledged(db: Database,
                                                                          tmp_path: Path) -> None:
    """Issue 9: it raised RecursionError, the listener died, the broker
    redelivered it for ever and no valid command was applied."""
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)
    prefix, client_id = "fxstp", f"engine-{uuid.uuid4().hex[:8]}"     # the pipeline's prefix
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 9_000 + b"1" + b"}" * 9_000        # under the size cap: the parser's depth
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client, Desk(client, prefix) as d:
            async with Engine(db, pipeline, broker.port, prefix, client_id):
                await d.send(deep)
                await d.send(deep_object)
                await d.send(ack("after-deep", bid))
                await d.until(lambda: d.reply("after-deep"))
                assert [r["error"]["code"] for r in d.reply(None)] == ["malformed_json", "malformed_json"]
                assert d.reply("after-deep")[0]["ok"] is True
            # the engine again, with the same session: had the broker not been
            # acknowledged, it would deliver the deep commands again now, before the marker
            restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
            await restarted.load()
            async with Engine(db, restarted, broker.port, prefix, client_id):
                await d.send({"request_id": "marker", "action": "ack", "break_id": "0" * 24, "by": "ops1"})
                await d.until(lambda: d.reply("marker"))
            assert len(d.reply(None)) == 2                          # no redelivery
            assert d.reply("marker")[0]["error"]["code"] == "unknown_break"
    finally:
        broker.stop()
    shown = await queries.show_break(db, bid)
    assert shown is not None and (shown["state"], shown["acknowledged_by"]) == ("acknowledged", "ops1")


async def test_the_database_failing_under_the_listener_shows_in_the_status(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storing fails (database down): the command stays unacknowledged, the
    retained status says degraded (commands), and once the database is back
    the command is stored, applied and answered once and the status is online."""
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)
    prefix = "fxstp"            # a private broker: the pipeline's prefix
    real = inbox_db.enqueue_batch
    failures = [3]

    async def flaky(database: Database, commands: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise OperationalError("INSERT INTO inbox", (), Exception("database is locked"))
        return await real(database, commands)

    monkeypatch.setattr(inbox_db, "enqueue_batch", flaky)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client, Desk(client, prefix) as d, \
                Engine(db, pipeline, broker.port, prefix, f"engine-{uuid.uuid4().hex[:8]}") as engine:
                engine.listener.retry_initial = 0.2
                await d.until(lambda: any(s["state"] == "online" for s in d.status))
                await d.send(ack("while-down", bid))
                await d.until(lambda: any(s["state"] == "degraded" for s in d.status))
                degraded = next(s for s in d.status if s["state"] == "degraded")
                assert degraded["component"] == "commands" and "database is locked" in degraded["reason"]
                await d.until(lambda: d.reply("while-down"))
                await d.until(lambda: d.status[-1]["state"] == "online")
                assert engine.listener.down is None
    finally:
        broker.stop()
    assert failures == [0]
    assert [r["ok"] for r in d.reply("while-down")] == [True]
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(1,)]
    assert (await queries.show_break(db, bid) or {})["state"] == "acknowledged"


async def test_a_listener_that_fails_is_started_again_and_gets_the_command_again(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker(tmp_path)
    broker.start()
    pipeline, bid = await _ssi_break(db)
    prefix = "fxstp"
    failures = [1]
    real = CommandListener.handle_batch

    async def crashing(self: CommandListener, *args: Any, **kwargs: Any) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("listener bug")
        await real(self, *args, **kwargs)

    monkeypatch.setattr(CommandListener, "handle_batch", crashing)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client, Desk(client, prefix) as d, \
                Engine(db, pipeline, broker.port, prefix, f"engine-{uuid.uuid4().hex[:8]}") as engine:
                await d.send(ack("first", bid))
                await d.until(lambda: d.reply("first"), timeout=60)
                await d.until(lambda: d.status[-1]["state"] == "online")
                assert engine.relay.listener_failures == 1
    finally:
        broker.stop()
    states = [s["state"] for s in d.status]
    degraded = next(s for s in d.status if s["state"] == "degraded")
    assert degraded["component"] == "commands" and "listener bug" in degraded["reason"]
    assert states == ["online", "degraded", "online", "offline"]         # offline: the clean stop
    assert [r["ok"] for r in d.reply("first")] == [True]
    assert (await queries.show_break(db, bid) or {})["state"] == "acknowledged"


class _Paho:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def ack(self, mid: int, qos: int) -> None:
        self.log.append(f"ack {mid}")


class _Messages:
    def __init__(self, messages: list[aiomqtt.Message]) -> None:
        self.queue = list(messages)

    def __len__(self) -> int:
        return len(self.queue)

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> aiomqtt.Message:
        if not self.queue:
            await asyncio.Event().wait()      # nothing more: until cancelled
        return self.queue.pop(0)


class _Client:
    """What the listener uses of aiomqtt's client: the queued messages, paho's ack, publish."""

    def __init__(self, messages: list[aiomqtt.Message], log: list[str]) -> None:
        self.messages = _Messages(messages)
        self._client = _Paho(log)
        self.log = log
        self.published: list[dict[str, Any]] = []

    async def publish(self, topic: str, payload: str, qos: int = 0, timeout: float | None = None) -> None:
        self.published.append(json.loads(payload)["data"])


async def test_what_has_arrived_is_stored_in_one_transaction_then_acknowledged(db: Database) -> None:
    pipeline, _ = await _ssi_break(db)
    log: list[str] = []
    event.listen(db.engine.sync_engine, "commit", lambda conn: log.append("commit"))
    payloads = [json.dumps(ack(f"b-{i}", "0" * 24)).encode() for i in range(299)]
    payloads.insert(100, b"[" * 30_000 + b"]" * 30_000)
    payloads.append(json.dumps(ack("b-0", "0" * 24)).encode())        # a repeat within the batch
    messages = [aiomqtt.Message("fxstp/commands/breaks", p, 1, False, i + 1, None)
                for i, p in enumerate(payloads)]
    client = _Client(messages, log)
    listener = CommandListener(db, "fxstp")
    task = asyncio.create_task(listener.listen(client))              # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    deadline = time.monotonic() + 60
    while len([e for e in log if e.startswith("ack")]) < len(messages) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # one commit for the 300 commands, then every message acknowledged, in order
    assert log == ["commit"] + [f"ack {i + 1}" for i in range(len(messages))]
    assert listener.batches == 1 and listener.repeated == 1
    assert [r["error"]["code"] for r in client.published] == ["malformed_json"]
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(299,)]
    await pipeline.tick()
    replies = [r for (r,) in await q(db, "SELECT payload FROM outbox WHERE topic = 'fxstp/replies/breaks'")]
    assert len(replies) == 299 and all('"unknown_break"' in r for r in replies)


class _LosingClient(_Client):
    """The connection goes when the listener publishes its replies."""

    async def publish(self, topic: str, payload: str, qos: int = 0, timeout: float | None = None) -> None:
        self.log.append("publish")
        raise aiomqtt.MqttError("the connection was lost")


async def test_a_reply_that_fails_to_publish_does_not_make_the_stored_commands_come_again(
        db: Database) -> None:
    """The batch is acknowledged once the inbox has committed it, before the
    replies: a reply publish that fails (the connection lost) ends the
    listener, but the broker has nothing to deliver again, so the commands
    (two without a request id among them) are stored and applied once."""
    pipeline, bid = await _ssi_break(db)
    no_id = {"action": "ack", "break_id": bid, "by": "ops1"}
    payloads = [json.dumps(no_id).encode(), b"{not json", json.dumps(ack("with-id", "0" * 24)).encode(),
                json.dumps({**no_id, "by": "ops2"}).encode()]
    messages = [aiomqtt.Message("fxstp/commands/breaks", p, 1, False, i + 1, None)
                for i, p in enumerate(payloads)]
    log: list[str] = []
    event.listen(db.engine.sync_engine, "commit", lambda conn: log.append("commit"))
    client = _LosingClient(messages, log)
    listener = CommandListener(db, "fxstp")
    with pytest.raises(aiomqtt.MqttError):
        await asyncio.wait_for(listener.listen(client), 60)         # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    # committed, every message acknowledged, then the (failing) reply to the malformed one
    assert log == ["commit", "ack 1", "ack 2", "ack 3", "ack 4", "publish"]
    assert await q(db, "SELECT COUNT(*) FROM inbox") == [(3,)]
    await pipeline.tick()
    results = [r for (r,) in await q(db, "SELECT result FROM inbox ORDER BY id")]
    assert results[0] == "acknowledged by ops1" and results[1].startswith("error: ")
    assert results[2].startswith("error: ")           # acknowledged already: the second, once
    assert (await queries.show_break(db, bid) or {})["state"] == "acknowledged"


async def test_the_listener_backs_off_as_backoff_says(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storing waits 0.5 s doubling to ``retry_max`` (here 1 s), the delays
    from ``stp.backoff.Backoff``, as every retry loop of the engine's."""
    from stp.backoff import Backoff

    _, bid = await _ssi_break(db)
    real = inbox_db.enqueue_batch
    failures = [4]

    async def locked(database: Database, commands: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise OperationalError("INSERT INTO inbox", (), Exception("database is locked"))
        return await real(database, commands)

    given: list[float] = []
    real_next = Backoff.next

    def recording(self: Backoff) -> float:
        given.append(real_next(self))
        return given[-1]

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(inbox_db, "enqueue_batch", locked)
    monkeypatch.setattr(Backoff, "next", recording)
    monkeypatch.setattr("adapters.commands.asyncio.sleep", sleep)
    listener = CommandListener(db, "fxstp")
    listener.retry_max = 1.0
    await listener.handle_batch(_Client([], []), [json.dumps(ack("r", bid)).encode()])  # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    assert waits == given == [0.5, 1.0, 1.0, 1.0]
    assert await q(db, "SELECT request_id FROM inbox") == [("r",)]


async def test_the_relay_backs_off_as_backoff_says_and_longer_after_listener_failures(db: Database) -> None:
    """No broker: the relay waits its backoff's delays, starting, after its
    command listener failed three times in a row, where the third failure's
    delay would be (a listener failing again and again waits longer)."""
    from stp.backoff import Backoff

    relay = OutboxRelay(db, MqttSettings(port=free_port(), topic_prefix=f"t-{uuid.uuid4().hex[:8]}"))
    assert isinstance(relay.backoff, Backoff)
    relay.backoff = Backoff(0.01, 0.08)
    relay.listener_failures = 3
    given: list[float] = []
    real_next = Backoff.next

    def recording(self: Backoff) -> float:
        given.append(real_next(self))
        if len(given) == 4:
            relay._stop_requested.set()
            relay._stopping = True
        return given[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Backoff, "next", recording)
        await asyncio.wait_for(relay.run(), 60)
    assert given == [0.04, 0.08, 0.08, 0.08]


async def test_the_database_being_unavailable_is_told_from_a_row_it_refuses() -> None:
    from sqlalchemy.exc import DataError, IntegrityError, InterfaceError

    from adapters.db.repository import database_unavailable

    # unavailable: wait and store the same batch again
    refused = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    with pytest.raises(Exception) as down:
        await inbox_db.enqueue_batch(refused, [("break_acknowledge", {}, "r")])
    await refused.close()
    assert database_unavailable(down.value)
    assert database_unavailable(OperationalError("INSERT", (), Exception("database is locked")))
    assert database_unavailable(InterfaceError("INSERT", (), Exception("connection closed")))
    assert database_unavailable(TimeoutError())
    # refused for what was written: the same write would fail again
    assert not database_unavailable(IntegrityError("INSERT", (), Exception("duplicate key")))
    assert not database_unavailable(DataError("INSERT", (), Exception("invalid byte sequence")))
    assert not database_unavailable(ValueError("x"))


async def test_a_batch_is_queued_in_the_order_it_came(db: Database) -> None:
    """Multi-row inserts, a command without a request id between them, a
    repeat within the batch and one of an earlier batch: each gets what it
    would have got on its own, and the inbox ids follow the order of arrival
    (the order the pipeline applies them in)."""
    (before,) = await inbox_db.enqueue_batch(db, [("break_acknowledge", {"n": 0}, "earlier")])
    commands: list[tuple[str, dict[str, Any], str | None]] = [
        ("break_acknowledge", {"n": 1}, "r1"), ("break_resolve", {"n": 2}, None),
        ("break_acknowledge", {"n": 3}, "r2"), ("break_acknowledge", {"n": 1}, "r1"),
        ("break_acknowledge", {"n": 0}, "earlier"), ("break_resolve", {"n": 4}, None)]
    commands += [("break_acknowledge", {"n": 10 + i}, f"many-{i}") for i in range(7)]
    queued = await inbox_db.enqueue_batch(db, commands, rows_per_statement=3)
    assert [x.new for x in queued] == [True, True, True, False, False, True] + [True] * 7
    new_ids = [x.inbox_id for x in queued if x.new]
    assert new_ids == sorted(new_ids) and new_ids[0] > before.inbox_id
    assert queued[3].inbox_id == queued[0].inbox_id and not queued[3].applied
    assert (queued[4].inbox_id, queued[4].payload) == (before.inbox_id, {"n": 0})
    rows = await q(db, "SELECT request_id, payload FROM inbox ORDER BY id")
    assert [r[0] for r in rows] == ["earlier", "r1", None, "r2", None] + [f"many-{i}" for i in range(7)]
    assert [json.loads(r[1])["n"] for r in rows] == [0, 1, 2, 3, 4] + [10 + i for i in range(7)]


async def test_a_batch_the_database_refuses_is_stored_one_by_one(db: Database,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A command the database refuses for its content (not for being down) is
    answered internal_error; the others of its batch are stored."""
    _, bid = await _ssi_break(db)
    real = inbox_db.enqueue_batch

    async def refusing(database: Database, commands: Any) -> Any:
        if any(c[2] == "poison" for c in commands):
            raise ValueError("the database refuses this row")
        return await real(database, commands)

    monkeypatch.setattr(inbox_db, "enqueue_batch", refusing)
    client = _Client([], [])
    listener = CommandListener(db, "fxstp")
    await listener.handle_batch(client, [json.dumps(ack(r, bid)).encode()        # type: ignore[arg-type]  # _Client stands in for aiomqtt's
                                         for r in ("good-1", "poison", "good-2")])
    assert [(r["request_id"], r["error"]["code"]) for r in client.published] == [("poison", "internal_error")]
    assert sorted(r for (r,) in await q(db, "SELECT request_id FROM inbox")) == ["good-1", "good-2"]


async def test_20000_commands_through_a_broker_set_up_as_the_readme_says(tmp_path: Path) -> None:
    """Issue 10: stock Mosquitto dropped 18,066 of 20,000 commands queued for
    the engine (max_queued_messages 1000) while it committed them one by one.
    With the README's settings and batches every command is answered."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    await database.migrate()
    broker = ReadmeBroker(tmp_path)
    broker.start()
    count = 20_000
    prefix = f"burst-{uuid.uuid4().hex[:8]}"
    pipeline = PostTrade(PostTradeStore(database), REFERENCE, frozenset({"LP1"}), {}, {}, topic_prefix=prefix)
    await pipeline.load()
    w = BatchChanges()
    bids = []
    for i in range(count):
        brk = Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": f"BURST-{i}"}, f"price differs on {i}")
        pipeline.breaks.add(brk, w, 1)
        bids.append(brk.break_id)
    await pipeline.store.write(w)
    await q_write(database, "UPDATE outbox SET published_us = 1")     # the detections are old news
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=1000) as client, \
                Desk(client, prefix) as d:
            client.pending_calls_threshold = 2000
            async with Engine(database, pipeline, broker.port, prefix, f"engine-{uuid.uuid4().hex[:8]}") as e:
                started = time.monotonic()
                for i in range(0, count, 500):
                    await asyncio.gather(*(d.send(ack(f"burst-{j}", bids[j])) for j in range(i, i + 500)))
                published = time.monotonic()
                await d.until(lambda: len(d.replies) >= count, timeout=600)
                answered = time.monotonic()
                batches = e.listener.batches
    finally:
        broker.stop()
        await database.close()
    print(f"\n{count} commands: published in {published - started:.1f} s, all answered in "
          f"{answered - started:.1f} s: {count / (answered - started):.0f} commands/s, "
          f"{batches} inbox transactions ({count / max(batches, 1):.0f} commands each)")
    assert sorted(r["request_id"] for r in d.replies) == sorted(f"burst-{j}" for j in range(count))
    assert all(r["ok"] and r["result"]["state"] == "acknowledged" for r in d.replies)


async def q_write(database: Database, sql: str) -> None:
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql(sql)


# -- a broker down when the engine starts (issue 3) -------------------------------------


COUNT, SEED = 200, 43
FAULTS = "execid_reuse=0.03,value_date=0.03"


@pytest.mark.slow
def test_a_broker_down_at_start_keeps_its_port_and_its_subscriber_gets_every_break_once(
        tmp_path: Path) -> None:
    """The configuration names a Mosquitto that is down when the engine
    starts.  The engine starts no broker of its own on that port (it used to:
    `embedded = "auto"`, and Mosquitto then could not start); the breaks wait
    in the outbox; Mosquitto comes up on its port seconds later and the desk's
    persistent subscriber, registered before, gets every break once."""
    events = list(Scenario(seed=SEED, count=COUNT, start=START, faults=FaultRates.parse(FAULTS)).events())
    expected = expected_breaks(events)
    assert {f for e in events for f in e.faults} == {"execid_reuse", "value_date"}
    broker = Broker(tmp_path)
    broker.start()
    asyncio.run(_collect(broker.port, 0, 0.1, 2))     # the desk's persistent session, then away
    broker.stop()
    procs: list[subprocess.Popen[str]] = []
    lp_port, pf_port = free_port(), free_port()
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", lp_port,
                       pf_port)
    cfg.write_text(cfg.read_text() + f'\n[mqtt]\nport = {broker.port}\ntopic_prefix = "faults"\n'
                   "[confirm]\nwindow_seconds = 4\n")
    run = [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error"]
    common = ["--count", str(COUNT), "--seed", str(SEED), "--start", START.isoformat(), "--reset",
              "--linger", "3", "--no-progress", "--wait-logon", "90", "--faults", FAULTS]
    log = tmp_path / "engine.log"
    try:
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "run_engine.py"), "run", "--config",
                                       str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                                      text=True))
        procs.append(subprocess.Popen([*run, "simulate", "lp", "--port", str(lp_port), "--state-dir",
                                       str(tmp_path / "sl"), *common], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True))
        procs.append(subprocess.Popen([*run, "simulate", "platform", "--port", str(pf_port), "--state-dir",
                                       str(tmp_path / "sp"), *common], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True))
        for sim in procs[1:]:
            out, _ = sim.communicate(timeout=180)
            assert sim.returncode == 0 and json.loads(out.strip().splitlines()[-1])["completed"]
        time.sleep(6)                                  # past the matching window: the unmatched expire
        # nothing took the broker's port, and the breaks wait in the outbox
        assert not broker_reachable("127.0.0.1", broker.port)
        engine_log = log.read_text()
        assert "mqtt_embedded_started" not in engine_log, engine_log[-2000:]
        waiting = asyncio.run(_outbox_waiting(tmp_path / "stp.db"))
        assert waiting >= len(expected), waiting
        broker.start()
        time.sleep(1.0)
        assert broker.proc is not None and broker.proc.poll() is None, "mosquitto could not start"
        received = asyncio.run(_collect(broker.port, len(expected), quiet_s=8.0, limit_s=120))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        broker.stop()
    got = {(topic.removeprefix("faults/breaks/"), ev["data"]["keys"]["exec_id"]) for topic, ev in received}
    assert got == expected
    assert len(received) == len(expected)             # each once, after dedupe on the event id


async def _outbox_waiting(path: Path) -> int:
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        return int((await q(database, "SELECT COUNT(*) FROM outbox WHERE published_us IS NULL"))[0][0])
    finally:
        await database.close()


async def test_request_ids_expire_after_the_retention(db: Database) -> None:
    """The applied inbox rows older than the retention go, and their request
    ids with them; rows not applied yet stay, and so does the newest row
    (SQLite would give its id again, and with it a reply's event id)."""
    pipeline, bid = await _ssi_break(db)
    listener = CommandListener(db, "fxstp")
    client = _Client([], [])
    for request_id in ("old-1", "old-2", "recent"):
        await listener.handle(client, json.dumps(ack(request_id, "0" * 24)).encode())   # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    await pipeline.tick()
    day = 86_400_000_000
    now = int(time.time() * 1_000_000)
    await q_write(db, f"UPDATE inbox SET applied_us = {now - 40 * day} "
                  "WHERE request_id IN ('old-1', 'old-2')")
    await listener.handle(client, json.dumps(ack("waiting", bid)).encode())     # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    await q_write(db, f"UPDATE inbox SET created_us = {now - 90 * day} WHERE request_id = 'waiting'")
    assert await inbox_db.prune_inbox(db, 30 * day, now) == 2
    assert sorted(r for (r,) in await q(db, "SELECT request_id FROM inbox")) == ["recent", "waiting"]
    # a released request id is a new command; one still kept is a repeat
    assert (await inbox_db.enqueue_batch(db, [("break_acknowledge", {"x": 1}, "old-1"),
                                             ("break_acknowledge", {"x": 1}, "recent")])
            )[0].new is True
    again = await inbox_db.enqueue_batch(db, [("break_acknowledge", {"x": 2}, "recent")])
    assert [queued.new for queued in again] == [False]
    # everything applied and old, the newest row is kept all the same
    await q_write(db, "DELETE FROM inbox WHERE request_id IN ('old-1', 'waiting')")
    await q_write(db, f"UPDATE inbox SET applied_us = {now - 40 * day}")
    assert await inbox_db.prune_inbox(db, 30 * day, now) == 0
    assert [r for (r,) in await q(db, "SELECT request_id FROM inbox")] == ["recent"]


async def test_the_engine_prunes_the_inbox_at_start(db: Database) -> None:
    from app.posttrade_parts import prune_inbox_periodically

    pipeline, _ = await _ssi_break(db)
    client = _Client([], [])
    listener = CommandListener(db, "fxstp")
    for request_id in ("a", "b"):
        await listener.handle(client, json.dumps(ack(request_id, "0" * 24)).encode())   # type: ignore[arg-type]  # _Client stands in for aiomqtt's
    await pipeline.tick()
    await q_write(db, "UPDATE inbox SET applied_us = 1")
    task = asyncio.create_task(prune_inbox_periodically(db, 1.0))
    deadline = time.monotonic() + 30
    while await q(db, "SELECT COUNT(*) FROM inbox") != [(1,)] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [r for (r,) in await q(db, "SELECT request_id FROM inbox")] == ["b"]
