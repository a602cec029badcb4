"""The outbox relay: publishes committed events to the MQTT bus, reliably.

Events are written to the ``outbox`` table in the same transaction that
detects them.  The relay publishes them in order at QoS 1 with aiomqtt and
marks them published only after the broker's PUBACK (``publish`` returns
then); a crash between the two republishes them, and consumers drop repeats
by the CloudEvent id.  Without a broker the engine goes on and the events
wait; the relay reconnects with backoff (1 s doubling to 30 s) and catches up.
A broker can acknowledge a message and still lose it when it goes down
(Mosquitto persists on a timer), so after reconnecting from a lost
connection the relay republishes what it published in the ``replay_s``
seconds before the loss; consumers drop the repeats by id.  It keeps a
retained ``<prefix>/status`` ("online"; the last will and a clean stop say
"offline").  Up to ``window`` publishes are in flight at once, continuously
(a sliding window; paho's own in-flight limit is raised to match).  The same
connection receives the desk's commands (``adapters.commands``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog

from adapters.commands import CommandListener, enable_manual_acks, paho_of
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database, now_us
from stp.backoff import Backoff
from stp.events import engine_status

log = structlog.get_logger("engine.mqtt")


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "fxstp"
    client_id: str = "fxstp-engine"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    enabled: bool = True
    # start a broker (adapters.broker) if none listens on the loopback host/port: only when asked
    embedded: bool = False
    request_id_retention_days: float = 30.0     # applied inbox rows (and their request ids) are kept so long


class OutboxRelay:
    def __init__(self, db: Database, settings: MqttSettings, wakeup: asyncio.Event | None = None,
                 batch: int = 500, window: int = 100, commands: CommandListener | None = None) -> None:
        self.db = db
        self.commands = commands
        self.store = PostTradeStore(db)
        self.settings = settings
        self.wakeup = wakeup or asyncio.Event()
        self.batch = batch
        self.window = window
        self.published = 0
        self.publish_timeout = 10.0
        self.replay_s = 10.0
        self._lost_at_us: int | None = None
        self.connected = asyncio.Event()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self.listener_failures = 0      # command listener failures in a row (without storing a batch)
        # reconnecting: 1 s doubling to 30 s, from 1 s again once connected;
        # a command listener that keeps failing waits as long after its n-th failure
        self.backoff = Backoff(1.0, 30.0)
        self._task: asyncio.Task[None] | None = None     # run, under ``async with``
        self.stop_timeout = 5.0

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        will_event = engine_status("offline", s.topic_prefix, datetime.now(UTC))
        tls: ssl.SSLContext | None = None
        if s.tls:
            tls = ssl.create_default_context(cafile=s.ca_file)
        # a persistent session: the broker keeps the desk's commands (QoS 1)
        # for the engine while it is away and delivers them when it is back
        client = aiomqtt.Client(s.host, s.port, identifier=s.client_id, clean_session=False,
                                username=s.username,
                                password=s.password, tls_context=tls, keepalive=30, timeout=10,
                                max_inflight_messages=self.window,
                                will=aiomqtt.Will(will_event.topic, will_event.payload, qos=1, retain=True))
        # up to ``window`` publishes in flight is the design, not a warning
        client.pending_calls_threshold = self.window + 10
        if self.commands is not None:
            enable_manual_acks(client)      # a command is acknowledged once stored
        return client

    async def run(self) -> None:
        while not self._stopping:
            try:
                async with self._client() as client:
                    self.backoff.reset()
                    if self._lost_at_us is not None:
                        await self._replay_recent(self._lost_at_us)
                        self._lost_at_us = None
                    await self._status(client, "online")
                    listening = None
                    stored_before = 0
                    if self.commands is not None:
                        await client.subscribe(self.commands.topic, qos=1)
                        stored_before = self.commands.batches
                        health = functools.partial(self._commands_health, client)
                        listening = asyncio.create_task(self.commands.listen(client, health=health),
                                                        name="mqtt-commands")
                    self.connected.set()
                    log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
                    try:
                        await self._pump(client, listening)
                    except Exception as exc:
                        if not isinstance(exc, aiomqtt.MqttError):
                            await self._failed(client, listening, exc, stored_before)
                        raise
                    finally:
                        if listening is not None:
                            if self.commands is not None and self.commands.batches > stored_before \
                                    and not _failed_task(listening):
                                self.listener_failures = 0
                            listening.cancel()
                            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                                await listening
                    await self._status(client, "offline")
                    return
            except aiomqtt.MqttError as exc:
                self._lost()
                delay = self._retry_delay()
                log.warning("mqtt_unavailable", host=self.settings.host, port=self.settings.port,
                            error=str(exc), retry_in_s=delay)
            except Exception as exc:       # the database (reading, marking, storing a command)
                self._lost()
                delay = self._retry_delay()
                log.error("relay_failed", error=repr(exc)[:300], retry_in_s=delay)
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)

    def _lost(self) -> None:
        """The connection is gone (or never came): what was published in the
        last ``replay_s`` before this is republished after reconnecting."""
        if self.connected.is_set() and self._lost_at_us is None:
            self._lost_at_us = now_us()
        self.connected.clear()

    def _retry_delay(self) -> float:
        """The backoff's next delay; a command listener failing again and
        again waits at least as long as its n-th failure would (it is started
        again with the connection)."""
        if self.listener_failures:
            self.backoff.failures = max(self.backoff.failures, self.listener_failures - 1)
        return self.backoff.next()

    async def _status(self, client: aiomqtt.Client, state: str, **detail: str) -> None:
        event = engine_status(state, self.settings.topic_prefix, datetime.now(UTC), **detail)
        await client.publish(event.topic, event.payload, qos=1, retain=True, timeout=self.publish_timeout)

    async def _commands_health(self, client: aiomqtt.Client, reason: str | None) -> None:
        """The command listener cannot store commands (``reason``), or can again."""
        if reason is None:
            await self._status(client, "online")
        else:
            await self._status(client, "degraded", component="commands", reason=reason)

    async def _failed(self, client: aiomqtt.Client, listening: asyncio.Task[None] | None,
                      exc: BaseException, stored_before: int) -> None:
        """Before leaving a connection for a failure of its own (not the
        broker's): say so in the retained status, which would still say
        online; a command listener that failed is started again with the
        connection (the broker delivers again what it had not acknowledged),
        after a backoff that grows while it fails without storing anything."""
        component = "relay"
        if listening is not None and _failed_task(listening):
            component = "commands"
            assert self.commands is not None
            progressed = self.commands.batches > stored_before
            self.listener_failures = 1 if progressed else self.listener_failures + 1
            log.error("command_listener_failed", error=repr(exc)[:300], failures=self.listener_failures)
        with contextlib.suppress(Exception):
            await self._status(client, "degraded", component=component, reason=repr(exc)[:300])

    async def _pump(self, client: aiomqtt.Client, listening: asyncio.Task[None] | None = None) -> None:
        """Keep up to ``window`` publishes in flight (a sliding window: a broker
        that delays its last acknowledgements does not stall a whole chunk);
        mark what the broker acknowledged while the next ones are on the wire."""
        slots = asyncio.Semaphore(self.window)
        acked: list[int] = []
        failed: list[BaseException] = []
        inflight: set[asyncio.Task[None]] = set()
        # ids handed to the client and not marked yet: the next reads skip
        # them (not a cursor: on PostgreSQL a lower id can commit after a
        # higher one was read, and must still be published)
        handed: set[int] = set()

        async def publish(row: tuple[Any, ...]) -> None:
            try:
                # a PUBACK that never comes (broker gone) must not hang the relay
                await client.publish(row[1], row[2], qos=1, retain=bool(row[3]), timeout=self.publish_timeout)
                acked.append(int(row[0]))
                _quick_ack(client)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                failed.append(exc)
            finally:
                slots.release()

        async def mark() -> None:
            if acked:
                ids = acked[:]
                await self._mark(ids)
                del acked[:len(ids)]
                handed.difference_update(ids)
                self.published += len(ids)

        try:
            while True:
                if listening is not None and listening.done():
                    listening.result()          # the connection is gone: raise its MqttError
                if failed:
                    raise aiomqtt.MqttError(f"publish failed: {failed[0]!r}")
                await mark()
                self.wakeup.clear()             # before reading: a commit after this wakes us
                rows = [r for r in await self.store.fetch(
                    "SELECT id, topic, payload, retain FROM outbox WHERE published_us IS NULL "
                    "ORDER BY id LIMIT ?", (self.batch + len(handed),)) if int(r[0]) not in handed]
                if not rows:
                    if inflight:
                        await asyncio.wait(inflight, timeout=0.05)
                        continue
                    if self._stopping:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), 0.5)
                    continue
                for row in rows:
                    await slots.acquire()
                    if failed:
                        slots.release()
                        break
                    task = asyncio.create_task(publish(row))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    handed.add(int(row[0]))
                    if len(acked) >= self.window:
                        await mark()
        finally:
            for task in list(inflight):
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            if acked:
                with contextlib.suppress(Exception):
                    await mark()

    async def _replay_recent(self, lost_at_us: int) -> None:
        since = lost_at_us - int(self.replay_s * 1_000_000)
        sql = self.store.query("UPDATE outbox SET published_us = NULL WHERE published_us >= ?")
        async with self.db.engine.begin() as conn:
            result = await conn.exec_driver_sql(sql, (since,))
        log.info("mqtt_replaying", events=result.rowcount, seconds=self.replay_s)

    async def _mark(self, ids: list[int]) -> None:
        marks = ", ".join("?" * len(ids))
        sql = self.store.query(f"UPDATE outbox SET published_us = ? WHERE id IN ({marks})")
        async with self.db.engine.begin() as conn:
            await conn.exec_driver_sql(sql, (now_us(), *ids))

    async def stop(self) -> None:
        """Publish what is committed (briefly), say offline, end ``run``."""
        self._stopping = True
        self._stop_requested.set()
        self.wakeup.set()

    async def __aenter__(self) -> OutboxRelay:
        """``async with relay``: ``run`` in a task of its own for the block."""
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())

    async def close(self, timeout: float | None = None) -> None:
        """Stop the task ``async with`` started: what is committed is published
        and offline said within ``timeout`` seconds (``stop_timeout``), else it
        is cancelled (no broker: the outbox keeps the events for the next start)."""
        timeout = self.stop_timeout if timeout is None else timeout
        await self.stop()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()

    async def pending(self) -> int:
        rows = await self.store.fetch("SELECT COUNT(*) FROM outbox WHERE published_us IS NULL")
        return int(rows[0][0])


def _failed_task(task: asyncio.Task[None]) -> bool:
    """Whether the task ended with an exception (not cancelled, not running)."""
    return task.done() and not task.cancelled() and task.exception() is not None


def _quick_ack(client: aiomqtt.Client) -> None:
    """Acknowledge the broker's next TCP segment at once (Linux TCP_QUICKACK,
    which the kernel clears again by itself, hence after every PUBACK).

    A broker without TCP_NODELAY (Mosquitto's default) holds each PUBACK
    until its previous segment is acknowledged, and the kernel delays that
    acknowledgement up to 40 ms when the relay has nothing to send: measured,
    p99 detection-to-PUBACK 106-110 ms at 1,250 breaks/s without this, 30 ms
    with it (bench/relay.py).  aiomqtt does not expose the socket: it is
    paho's, reached through the client's ``_client``; without it, nothing
    happens."""
    paho = paho_of(client)
    sock = paho.socket() if paho is not None else None
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def settings_from_config(cfg: Any) -> MqttSettings:
    extra = cfg.mqtt_extra if hasattr(cfg, "mqtt_extra") else {}
    return MqttSettings(host=cfg.mqtt_host, port=cfg.mqtt_port, topic_prefix=cfg.mqtt_topic_prefix,
                        client_id=extra.get("client_id", "fxstp-engine"), username=extra.get("username"),
                        password=extra.get("password"), tls=bool(extra.get("tls", False)),
                        ca_file=extra.get("ca_file"), enabled=bool(extra.get("enabled", True)),
                        embedded=extra.get("embedded", False) is True,
                        request_id_retention_days=float(extra.get("request_id_retention_days", 30.0)))
