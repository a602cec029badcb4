"""The outbox relay against a real Mosquitto broker started by the test.

Every event must arrive exactly once after dedupe on the CloudEvent id, also
when the broker is stopped and restarted mid-stream and when the relay dies
between publishing and marking.  Skipped where mosquitto is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.mqtt import MqttSettings, OutboxRelay
from stp.breaks import Break, BreakType
from stp.changes import BatchChanges
from stp.events import break_detected
from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                          else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        # persistence: a desk subscriber's session and queued QoS 1 messages
        # survive a broker restart, as they would in production
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"persistence true\npersistence_location {tmp}/\nset_tcp_nodelay true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    await database.migrate()
    yield database
    await database.close()


class Subscriber:
    """Collects every event under the prefix; reconnects when the broker goes."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.messages: list[dict[str, Any]] = []
        self.retained_status: list[str] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"sub-{self.prefix}",
                                          clean_session=False) as client:
                    await client.subscribe(f"{self.prefix}/#", qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        event = json.loads(bytes(message.payload))
                        if str(message.topic).endswith("/status"):
                            self.retained_status.append(event["data"]["state"])
                        else:
                            self.messages.append(event)
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.2)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ids(self) -> list[str]:
        return [m["id"] for m in self.messages]


async def put_breaks(db: Database, prefix: str, start: int, count: int) -> set[str]:
    w = BatchChanges()
    ids = set()
    for i in range(start, start + count):
        brk = Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": f"E{i}"}, f"price differs on E{i}",
                    ours={"last_px": "1.1"}, theirs={"last_px": "1.2"})
        w.publish(break_detected(brk, prefix, datetime.now(UTC)), 1)
        ids.add(brk.break_id)
    await PostTradeStore(db).write(w)
    return ids


async def wait_until(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_every_event_arrives_once_after_dedupe(db: Database, broker: Broker) -> None:
    prefix = "t1"
    sub = Subscriber(broker.port, prefix)
    await sub.start()
    expected = await put_breaks(db, prefix, 0, 300)
    relay = OutboxRelay(db, MqttSettings(port=broker.port, topic_prefix=prefix, client_id="relay-1"))
    task = asyncio.create_task(relay.run())
    await wait_until(lambda: set(sub.ids()) >= expected)
    await relay.stop()
    await asyncio.wait_for(task, 10)
    await sub.stop()
    assert set(sub.ids()) == expected and len(sub.ids()) == 300   # once each, nothing else
    assert await relay.pending() == 0
    event = sub.messages[0]
    assert event["specversion"] == "1.0" and event["type"] == "com.fxstp.break.detected"
    assert event["data"]["theirs"] == {"last_px": "1.2"}
    assert sub.retained_status[0] == "online" and sub.retained_status[-1] == "offline"


async def test_broker_outage_mid_stream(db: Database, broker: Broker) -> None:
    prefix = "t2"
    sub = Subscriber(broker.port, prefix)
    await sub.start()
    expected = await put_breaks(db, prefix, 0, 200)
    relay = OutboxRelay(db, MqttSettings(port=broker.port, topic_prefix=prefix, client_id="relay-2"),
                        batch=20, window=10)
    task = asyncio.create_task(relay.run())
    await wait_until(lambda: len(sub.ids()) >= 50)
    broker.stop()                                   # mid-stream
    expected |= await put_breaks(db, prefix, 200, 100)   # the engine keeps detecting
    await asyncio.sleep(1.5)
    assert await relay.pending() > 0                # they wait in the outbox
    broker.start()
    await sub.ready.wait()
    try:
        await wait_until(lambda: set(sub.ids()) >= expected, timeout=30)
    except AssertionError:
        missing = expected - set(sub.ids())
        raise AssertionError(f"missing {len(missing)}, relay pending {await relay.pending()}, "
                             f"relay connected {relay.connected.is_set()}, "
                             f"published {relay.published}, received {len(sub.ids())}") from None
    await relay.stop()
    await asyncio.wait_for(task, 10)
    await sub.stop()
    assert set(sub.ids()) == expected              # after dedupe, every event once
    assert await relay.pending() == 0


async def test_a_database_error_does_not_end_the_relay(db: Database, broker: Broker,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Marking fails for a while (database down): the relay logs, retries,
    and every event still arrives."""
    prefix = "t4"
    sub = Subscriber(broker.port, prefix)
    await sub.start()
    expected = await put_breaks(db, prefix, 0, 30)
    relay = OutboxRelay(db, MqttSettings(port=broker.port, topic_prefix=prefix, client_id="relay-4"))
    real_mark = relay._mark
    failures = [3]

    async def flaky(ids: list[int]) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("database is locked")
        await real_mark(ids)

    monkeypatch.setattr(relay, "_mark", flaky)
    task = asyncio.create_task(relay.run())
    await wait_until(lambda: set(sub.ids()) >= expected, timeout=30)
    await wait_until_async(lambda: relay.pending(), 0, timeout=30)
    await relay.stop()
    await asyncio.wait_for(task, 10)
    await sub.stop()
    assert failures == [0] and set(sub.ids()) == expected


async def wait_until_async(value: Any, want: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await value() == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not {want} after {timeout} s")


async def test_relay_killed_between_publish_and_mark(db: Database, broker: Broker,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "t3"
    sub = Subscriber(broker.port, prefix)
    await sub.start()
    expected = await put_breaks(db, prefix, 0, 50)
    settings = MqttSettings(port=broker.port, topic_prefix=prefix, client_id="relay-3")
    first = OutboxRelay(db, settings, window=50)

    class Killed(BaseException):       # the process dies: nothing in the relay handles it
        pass

    async def die(ids: list[int]) -> None:
        raise Killed("killed before marking")

    monkeypatch.setattr(first, "_mark", die)
    with pytest.raises(Killed):
        await asyncio.wait_for(first.run(), 10)
    await wait_until(lambda: set(sub.ids()) >= expected)   # published, not marked
    assert await first.pending() == 50
    second = OutboxRelay(db, settings)
    task = asyncio.create_task(second.run())
    await wait_until(lambda: len(sub.ids()) >= 100)
    await second.stop()
    await asyncio.wait_for(task, 10)
    await sub.stop()
    assert len(sub.ids()) == 100                   # the repeat reached the wire...
    assert set(sub.ids()) == expected              # ...and dedupes on the event id
    assert await second.pending() == 0


async def test_no_broker_the_events_wait(db: Database) -> None:
    await put_breaks(db, "t4", 0, 5)
    relay = OutboxRelay(db, MqttSettings(port=free_port(), topic_prefix="t4"))
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(1.0)
    assert not relay.connected.is_set() and await relay.pending() == 5
    await relay.stop()
    await asyncio.wait_for(task, 10)
