"""The embedded broker (amqtt in a child process) with aiomqtt clients: QoS 1,
retained messages, last will, reachability, and no orphan when the parent dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from adapters.broker import EmbeddedBroker, broker_reachable
from tests.conftest import ROOT, free_port

HOST = "127.0.0.1"


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(HOST, free_port())
    b.start()
    yield b
    b.stop()


async def receive(client: aiomqtt.Client, count: int, timeout: float = 5.0) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_qos1_publish_subscribe_round_trip(broker: EmbeddedBroker) -> None:
    async with aiomqtt.Client(HOST, broker.port, identifier="sub") as sub, \
            aiomqtt.Client(HOST, broker.port, identifier="pub") as pub:
        await sub.subscribe("fxstp/breaks/#", qos=1)
        # publish returns after the broker's PUBACK
        for i in range(50):
            await pub.publish(f"fxstp/breaks/t{i % 3}", f"m{i}".encode(), qos=1, timeout=5)
        got = await receive(sub, 50)
    assert [bytes(m.payload).decode() for m in got] == [f"m{i}" for i in range(50)]
    assert {m.qos for m in got} == {1}
    assert [m.topic.value for m in got[:3]] == ["fxstp/breaks/t0", "fxstp/breaks/t1", "fxstp/breaks/t2"]


async def test_retained_message_reaches_a_later_subscriber(broker: EmbeddedBroker) -> None:
    async with aiomqtt.Client(HOST, broker.port, identifier="pub") as pub:
        await pub.publish("fxstp/status", b"online", qos=1, retain=True, timeout=5)
        await pub.publish("fxstp/other", b"not retained", qos=1, timeout=5)
    async with aiomqtt.Client(HOST, broker.port, identifier="late") as late:
        await late.subscribe("fxstp/#", qos=1)
        got = await receive(late, 1)
        with pytest.raises(TimeoutError):  # only the retained one
            await receive(late, 1, timeout=0.5)
    assert got[0].topic.value == "fxstp/status"
    assert bytes(got[0].payload) == b"online"
    assert got[0].retain


async def test_persistent_session_gets_what_was_published_while_it_was_away(broker: EmbeddedBroker) -> None:
    # the desk's `watch --client-id`: clean_session=False, QoS 1
    async with aiomqtt.Client(HOST, broker.port, identifier="desk", clean_session=False) as desk:
        await desk.subscribe("fxstp/breaks/#", qos=1)
    await asyncio.sleep(2.5)  # amqtt's session monitor runs every second
    async with aiomqtt.Client(HOST, broker.port, identifier="pub") as pub:
        for i in range(3):
            await pub.publish(f"fxstp/breaks/b{i}", f"m{i}".encode(), qos=1, timeout=5)
    async with aiomqtt.Client(HOST, broker.port, identifier="desk", clean_session=False) as desk:
        got = await receive(desk, 3)
        async with aiomqtt.Client(HOST, broker.port, identifier="pub") as pub:  # still subscribed
            await pub.publish("fxstp/breaks/live", b"live", qos=1, timeout=5)
        got += await receive(desk, 1)
    assert sorted(bytes(m.payload) for m in got[:3]) == [b"m0", b"m1", b"m2"]
    assert bytes(got[3].payload) == b"live"


WILL_CLIENT = textwrap.dedent("""
    import asyncio, sys
    import aiomqtt

    async def main(port: int, mode: str) -> None:
        will = aiomqtt.Will("fxstp/status", b"offline", qos=1, retain=True)
        async with aiomqtt.Client("127.0.0.1", port, identifier="engine", will=will, keepalive=60):
            print("connected", flush=True)
            if mode == "hang":
                await asyncio.sleep(3600)   # until SIGKILLed: the connection drops without DISCONNECT

    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
""")


def run_will_client(port: int, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WILL_CLIENT, str(port), mode], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "connected"
    return proc


async def test_last_will_is_published_when_a_client_drops(broker: EmbeddedBroker) -> None:
    async with aiomqtt.Client(HOST, broker.port, identifier="desk") as desk:
        await desk.subscribe("fxstp/status", qos=1)
        # a clean DISCONNECT: no will
        proc = run_will_client(broker.port, "clean")
        assert proc.wait(10) == 0
        with pytest.raises(TimeoutError):
            await receive(desk, 1, timeout=1.0)
        # killed: the broker sees the TCP connection close without DISCONNECT
        proc = run_will_client(broker.port, "hang")
        proc.kill()
        proc.wait(10)
        got = await receive(desk, 1)
    assert (got[0].topic.value, bytes(got[0].payload), got[0].qos) == ("fxstp/status", b"offline", 1)
    # the will was retained: a later subscriber sees "offline"
    async with aiomqtt.Client(HOST, broker.port, identifier="later") as later:
        await later.subscribe("fxstp/status", qos=1)
        retained = await receive(later, 1)
    assert bytes(retained[0].payload) == b"offline"
    assert retained[0].retain


def test_reachable_while_running_and_not_after_stop() -> None:
    port = free_port()
    assert not broker_reachable(HOST, port)
    b = EmbeddedBroker(HOST, port)
    b.start()
    try:
        assert b.running
        assert broker_reachable(HOST, port)
    finally:
        b.stop()
    assert not b.running
    assert not broker_reachable(HOST, port)
    b.stop()  # twice is fine


async def test_async_start_and_stop() -> None:
    b = EmbeddedBroker(HOST, free_port())
    await b.astart()
    try:
        async with aiomqtt.Client(HOST, b.port) as client:
            await client.publish("x", b"y", qos=1, timeout=5)
    finally:
        await b.astop()
    assert not broker_reachable(HOST, b.port)


def test_start_fails_clearly_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        b = EmbeddedBroker(HOST, taken.getsockname()[1], start_timeout=10)
        with pytest.raises(RuntimeError, match="address already in use"):
            b.start()
        assert not b.running


def process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (it no longer runs or holds sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


ENGINE = textwrap.dedent("""
    import sys, time
    from adapters.broker import EmbeddedBroker

    b = EmbeddedBroker("127.0.0.1", int(sys.argv[1]))
    b.start()
    print(b.pid, flush=True)
    time.sleep(3600)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_broker_exits_when_its_parent_is_killed() -> None:
    port = free_port()
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, str(port)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    child = 0
    try:
        assert engine.stdout is not None
        child = int(engine.stdout.readline())
        assert broker_reachable(HOST, port)
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        deadline = time.monotonic() + 5
        while broker_reachable(HOST, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not broker_reachable(HOST, port), "the broker outlived its parent"
        while not process_gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_gone(child)
    finally:
        if engine.poll() is None:
            engine.kill()
        if child and not process_gone(child):
            os.kill(child, signal.SIGKILL)


def test_the_engine_embeds_a_broker_when_none_listens(tmp_path: Path) -> None:
    """A fresh machine: no broker on the configured loopback port.  The engine
    starts the embedded one there, breaks reach `breaks watch`, and the broker
    goes away with the engine."""
    import json

    from tests.integration.test_engine_intake import write_config

    mqtt_port, lp_port = free_port(), free_port()
    assert not broker_reachable("127.0.0.1", mqtt_port)
    cfg = write_config(tmp_path / "engine.toml", f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}", lp_port, None)
    cfg.write_text(cfg.read_text() + f"\n[mqtt]\nport = {mqtt_port}\nembedded = true\n")
    run = [sys.executable, str(ROOT / "run_engine.py")]
    engine = subprocess.Popen([*run, "run", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=(tmp_path / "engine.log").open("wb"))
    watch = lp = None
    try:
        deadline = time.monotonic() + 30
        while not broker_reachable("127.0.0.1", mqtt_port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert broker_reachable("127.0.0.1", mqtt_port), (tmp_path / "engine.log").read_text()[-2000:]
        watch = subprocess.Popen([*run, "breaks", "watch", "--config", str(cfg), "--count", "1", "--json"],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        # an LP that reuses an ExecID with other content: an execid_conflict break
        lp = subprocess.Popen([*run, "--log-level", "error", "simulate", "lp", "--port", str(lp_port),
                               "--count", "50", "--seed", "3", "--start", "2030-01-07T08:00:00+00:00",
                               "--faults", "execid_reuse=0.2", "--state-dir", str(tmp_path / "sl"), "--reset",
                               "--linger", "2", "--no-progress", "--wait-logon", "60"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
        out, _ = watch.communicate(timeout=60)
        event = json.loads(out.splitlines()[0])
        assert event["data"]["type"] == "execid_conflict"
        logged = [json.loads(line) for line in (tmp_path / "engine.log").read_text().splitlines()
                  if line.startswith("{")]
        assert any(e.get("event") == "mqtt_embedded_started" for e in logged)
    finally:
        for p in (lp, watch):
            if p is not None and p.poll() is None:
                p.kill()
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while broker_reachable("127.0.0.1", mqtt_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not broker_reachable("127.0.0.1", mqtt_port)
