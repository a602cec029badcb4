"""The command topic: break lifecycle commands and allocations from the desk over MQTT.

The relay's connection subscribes to ``<prefix>/commands/breaks`` (QoS 1).
A command that parses (``stp.commands``) goes into the inbox, where the
post-trade pipeline applies it like ``breaks ack|resolve`` from the CLI: in
one transaction with the state change, the published change and the reply
(through the outbox, so the reply is as reliable as the change).  A command
that does not parse is answered at once with an error reply and changes
nothing.  Replies go to the command's ``reply_to`` (under
``<prefix>/replies/``) or ``<prefix>/replies/breaks``.

The broker's message is acknowledged (PUBACK, paho's manual acks) once the
command is committed to the inbox (or, if it is refused without being
stored, once its reply is ready), before any of the listener's own replies
are published: a command the engine had not stored when it crashed or lost
its connection is delivered again (the engine's session is persistent), a
stored one is not, even if publishing a reply then fails.  Such a reply (a
refusal, the stored reply of a repeat) is lost with the connection: a desk
that sends the command again with the same request_id gets the stored reply
then.  The reply of a stored command, with or without a request id, is not
one of those: the pipeline publishes it through the outbox when it applies
the command.

So a command can arrive twice (QoS 1 is at-least-once, and a desk may send
it again when its reply is late).  A command with a ``request_id`` is stored
once (the inbox's unique index on request_id): the same request id with the
same command again changes nothing and is answered with the reply the first
got (the same event, once the first is applied; while it waits in the inbox,
its own reply answers both); the same request id with another command is
refused (``request_id_reused``).  Commands without a request id are queued
every time they arrive (a repeat is then an illegal transition).

The listener takes what has arrived at once (up to ``batch_max`` messages)
and stores it in one transaction (``inbox.enqueue_batch``), then
acknowledges the lot and publishes the replies: one commit per batch, not
per command, so a burst is drained as fast as it comes.  Nothing wedges the topic: a payload that does
not parse, whatever the reason (too large, not UTF-8, nested too deep), is
answered ``malformed_json`` and acknowledged; one whose handling fails in an
unforeseen way is answered ``internal_error``, logged with its payload and
acknowledged.  When the database cannot store a batch (down, locked), the
listener keeps it unacknowledged and tries again with backoff (0.5 s
doubling to 30 s), saying so in the retained status (``degraded``,
component ``commands``) until it can; a batch the database refuses for its
content is stored command by command, and a command it refuses on its own is
answered ``internal_error``.  Request ids are released when the applied
inbox rows are pruned (``inbox.prune_inbox``, ``[mqtt]
request_id_retention_days``).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog

from adapters.db import inbox
from adapters.db.repository import Database, database_unavailable
from stp.backoff import Backoff
from stp.commands import AllocateCommand, BreakCommand, CommandError, parse_command
from stp.events import command_reply, reply_topic

log = structlog.get_logger("engine.commands")


def paho_of(client: aiomqtt.Client) -> Any:
    """The paho client under aiomqtt's (not exposed: its ``_client``), for
    what aiomqtt does not offer (manual acks, the socket); None if gone."""
    return getattr(client, "_client", None)


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """PUBACK a QoS 1 message now that it is handled (manual acks are on)."""
    paho = paho_of(client)
    if paho is not None and message.qos > 0:
        paho.ack(message.mid, message.qos)


def _ack_all(client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
    for message in messages:
        _ack(client, message)


def enable_manual_acks(client: aiomqtt.Client) -> None:
    paho = paho_of(client)
    if paho is not None:
        paho.manual_ack_set(True)


Health = Callable[[str | None], Awaitable[None]]     # None: storing again; else why not


@dataclass(slots=True)
class _Queueing:
    """A parsed command on its way into the inbox."""

    command: BreakCommand | AllocateCommand
    kind: str
    payload: dict[str, Any]


class CommandListener:
    def __init__(self, db: Database, prefix: str, wake: Callable[[], None] | None = None,
                 batch_max: int = 1000) -> None:
        self.db = db
        self.prefix = prefix
        self.topic = f"{prefix}/commands/breaks"
        self.wake = wake
        self.batch_max = batch_max
        self.received = 0
        self.refused = 0
        self.repeated = 0
        self.batches = 0
        self.retry_initial = 0.5
        self.retry_max = 30.0
        self.down: str | None = None        # why commands cannot be stored now, while it lasts

    def _reply_ok(self, reply_to: str | None) -> bool:
        """A reply goes under <prefix>/replies/: a desk client cannot make the
        engine publish onto its own topics."""
        return reply_to is None or reply_to.startswith(f"{self.prefix}/replies/")

    async def listen(self, client: aiomqtt.Client, health: Health | None = None) -> None:
        """Handle commands until cancelled (the relay's connection ends): what
        has arrived at once is one batch, stored in one transaction, then
        acknowledged.  An MqttError (the connection is gone) ends it; the
        broker delivers what was not acknowledged again."""
        messages = client.messages
        while True:
            batch = [await anext(messages)]
            while len(messages) > 0 and len(batch) < self.batch_max:
                batch.append(await anext(messages))
            # acknowledged once the inbox has committed them, before the replies
            # go out: a reply that fails to publish must not make the broker
            # deliver (and the inbox store) the batch again
            await self.handle_batch(client, [_payload(m) for m in batch if m.topic.matches(self.topic)],
                                    health, stored=functools.partial(_ack_all, client, batch))

    async def handle(self, client: aiomqtt.Client, payload: bytes) -> None:
        """One command (a batch of one)."""
        await self.handle_batch(client, [payload])

    async def handle_batch(self, client: aiomqtt.Client, payloads: list[bytes],
                           health: Health | None = None, stored: Callable[[], None] | None = None) -> None:
        """Answer what does not parse, store the rest in one transaction
        (retrying while the database is unavailable), answer repeats;
        ``stored`` is called once the commands are committed, before the
        replies are published."""
        replies = await self.store_batch(payloads, health)
        if stored is not None:
            stored()
        await _publish_all(client, replies)

    async def store_batch(self, payloads: list[bytes],
                          health: Health | None = None) -> list[tuple[str, str]]:
        """``handle_batch`` up to the replies, which it returns (topic,
        payload) for the caller to publish: when it returns, the batch's
        commands are committed to the inbox."""
        replies: list[tuple[str, str]] = []
        queueing: list[_Queueing] = []
        for payload in payloads:
            self.received += 1
            try:
                entry = self._parse(payload, replies)
            except Exception as exc:       # a bug, not the desk's: answered, kept in the log, not retried
                entry = None
                self._internal_error(None, None, payload, exc, replies)
            if entry is not None:
                queueing.append(entry)
        if queueing:
            for entry, queued in zip(queueing, await self._store(queueing, replies, health), strict=True):
                if queued is None:
                    continue
                if not queued.new:
                    self._repeated(entry.command, entry.kind, entry.payload, queued, replies)
                    continue
                command = entry.command
                log.info("command_received", **command.log_fields(), request_id=command.request_id,
                         inbox=queued.inbox_id)
            if self.wake is not None:
                self.wake()
        return replies

    def _parse(self, payload: bytes, replies: list[tuple[str, str]]) -> _Queueing | None:
        try:
            command = parse_command(payload)
        except CommandError as exc:
            exc.reply_to = exc.reply_to if self._reply_ok(exc.reply_to) else None
            self.refused += 1
            log.warning("command_refused", code=exc.code, error=exc.message, request_id=exc.request_id,
                        payload=payload[:200].decode("utf-8", "replace"))
            reply = command_reply(exc.request_id, reply_topic(self.prefix, exc.reply_to), False,
                                  datetime.now(UTC), reply_id=uuid.uuid4().hex, error=exc.code,
                                  message=exc.message)
            replies.append((reply.topic, reply.payload))
            return None
        if not self._reply_ok(command.reply_to):
            self.refused += 1
            reply = command_reply(command.request_id, reply_topic(self.prefix, None), False,
                                  datetime.now(UTC), reply_id=uuid.uuid4().hex, error="invalid_command",
                                  message=f"reply_to must be under {self.prefix}/replies/")
            replies.append((reply.topic, reply.payload))
            return None
        return _Queueing(command, command.inbox_kind, command.inbox_payload())

    def _internal_error(self, request_id: str | None, reply_to: str | None, payload: bytes | None,
                        exc: BaseException, replies: list[tuple[str, str]]) -> None:
        self.refused += 1
        log.error("command_failed", error=repr(exc)[:300], request_id=request_id,
                  payload=None if payload is None else payload[:200].decode("utf-8", "replace"))
        reply = command_reply(request_id, reply_topic(self.prefix, reply_to), False, datetime.now(UTC),
                              reply_id=uuid.uuid4().hex, error="internal_error",
                              message=f"the engine could not handle this command: {type(exc).__name__}")
        replies.append((reply.topic, reply.payload))

    async def _store(self, queueing: list[_Queueing], replies: list[tuple[str, str]],
                     health: Health | None) -> list[inbox.Queued | None]:
        """Store the batch in one transaction, trying again with backoff while
        the database is unavailable.  A batch it refuses for its content is
        stored one by one: the command it refuses alone is answered
        ``internal_error`` (None in the result)."""
        rows = [(e.kind, e.payload, e.command.request_id) for e in queueing]
        try:
            return list(await self._store_retrying(rows, health))
        except Exception as exc:           # not unavailability: _store_retrying waits that out
            if len(rows) > 1:
                log.warning("command_batch_refused", commands=len(rows), error=repr(exc)[:300])
            else:
                self._internal_error(queueing[0].command.request_id, queueing[0].command.reply_to, None,
                                     exc, replies)
                return [None]
        out: list[inbox.Queued | None] = []
        for entry, row in zip(queueing, rows, strict=True):
            try:
                out.extend(await self._store_retrying([row], health))
            except Exception as exc:
                self._internal_error(entry.command.request_id, entry.command.reply_to, None, exc, replies)
                out.append(None)
        return out

    async def _store_retrying(self, rows: list[tuple[str, dict[str, Any], str | None]],
                              health: Health | None) -> list[inbox.Queued]:
        backoff = Backoff(self.retry_initial, self.retry_max)
        while True:
            try:
                queued = await inbox.enqueue_batch(self.db, rows)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                delay = backoff.next()
                reason = f"cannot store commands: {exc!r}"[:300]
                log.warning("commands_not_stored", commands=len(rows), error=reason, retry_in_s=delay)
                if self.down is None and health is not None:
                    self.down = reason
                    await health(reason)
                self.down = reason
                await asyncio.sleep(delay)
                continue
            self.batches += 1
            if self.down is not None:
                self.down = None
                log.info("commands_stored_again", commands=len(rows))
                if health is not None:
                    await health(None)
            return queued

    def _repeated(self, command: BreakCommand | AllocateCommand, kind: str, payload: dict[str, Any],
                  first: inbox.Queued, replies: list[tuple[str, str]]) -> None:
        """A request id the inbox holds already: the same command again gets
        the first one's reply (nothing is applied twice); another command
        under that id is refused."""
        topic = reply_topic(self.prefix, command.reply_to)
        if (first.kind, first.payload) != (kind, payload):
            self.refused += 1
            message = (f"request_id {command.request_id!r} was already used for another command "
                       f"(inbox {first.inbox_id}); use a new request_id for a new command")
            log.warning("command_refused", code="request_id_reused", error=message,
                        request_id=command.request_id, inbox=first.inbox_id)
            reply = command_reply(command.request_id, topic, False, datetime.now(UTC),
                                  reply_id=uuid.uuid4().hex, error="request_id_reused", message=message)
            replies.append((reply.topic, reply.payload))
            return
        self.repeated += 1
        log.info("command_repeated", **command.log_fields(), request_id=command.request_id,
                 inbox=first.inbox_id, applied=first.applied)
        if first.reply is not None:
            replies.append((topic, first.reply))
        elif first.applied:
            log.warning("command_repeated_without_reply", request_id=command.request_id,
                        inbox=first.inbox_id)
        # not applied yet: its reply answers this one too


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()


async def _publish_all(client: aiomqtt.Client, replies: list[tuple[str, str]], chunk: int = 50) -> None:
    """Publish the replies (QoS 1), up to ``chunk`` awaiting their PUBACK at once."""
    for i in range(0, len(replies), chunk):
        await asyncio.gather(*(client.publish(topic, payload, qos=1, timeout=10)
                               for topic, payload in replies[i:i + chunk]))
