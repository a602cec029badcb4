"""The command topic: break lifecycle commands and allocations from the desk over MQTT.

The relay's connection subscribes to ``<prefix>/commands/breaks`` (QoS 1).
A command that parses (``stp.commands``) goes into the inbox, where the
post-trade pipeline applies it like ``breaks ack|resolve`` from the CLI: in
one transaction with the state change, the published change and the reply
(through the outbox, so the reply is as reliable as the change).  A command
that does not parse is answered at once with an error reply and changes
nothing.  Replies go to the command's ``reply_to`` (under
``<prefix>/replies/``) or ``<prefix>/replies/breaks``.

The broker's message is acknowledged (PUBACK, paho's manual acks) only once
the command is in the inbox or has been answered: a command the engine had
not stored when it crashed or lost its connection is delivered again (the
engine's session is persistent).

So a command can arrive twice (QoS 1 is at-least-once, and a desk may send
it again when its reply is late).  A command with a ``request_id`` is stored
once (the inbox's unique index on request_id): the same request id with the
same command again changes nothing and is answered with the reply the first
got (the same event, once the first is applied; while it waits in the inbox,
its own reply answers both); the same request id with another command is
refused (``request_id_reused``).  Commands without a request id are queued
every time they arrive (a repeat is then an illegal transition).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog

from adapters import reports
from adapters.db.repository import Database
from stp.commands import AllocateCommand, BreakCommand, CommandError, parse_command
from stp.events import command_reply

log = structlog.get_logger("engine.commands")


def reply_topic(prefix: str, reply_to: str | None) -> str:
    return reply_to or f"{prefix}/replies/breaks"


def paho_of(client: aiomqtt.Client) -> Any:
    """The paho client under aiomqtt's (not exposed: its ``_client``), for
    what aiomqtt does not offer (manual acks, the socket); None if gone."""
    return getattr(client, "_client", None)


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """PUBACK a QoS 1 message now that it is handled (manual acks are on)."""
    paho = paho_of(client)
    if paho is not None and message.qos > 0:
        paho.ack(message.mid, message.qos)


def enable_manual_acks(client: aiomqtt.Client) -> None:
    paho = paho_of(client)
    if paho is not None:
        paho.manual_ack_set(True)


class CommandListener:
    def __init__(self, db: Database, prefix: str, wake: Callable[[], None] | None = None) -> None:
        self.db = db
        self.prefix = prefix
        self.topic = f"{prefix}/commands/breaks"
        self.wake = wake
        self.received = 0
        self.refused = 0
        self.repeated = 0

    def _reply_ok(self, reply_to: str | None) -> bool:
        """A reply goes under <prefix>/replies/: a desk client cannot make the
        engine publish onto its own topics."""
        return reply_to is None or reply_to.startswith(f"{self.prefix}/replies/")

    async def listen(self, client: aiomqtt.Client) -> None:
        """Handle commands until cancelled (the relay's connection ends).  A
        command that could not be stored (database down) is not acknowledged:
        the error ends the connection and the broker delivers it again."""
        async for message in client.messages:
            if message.topic.matches(self.topic):
                await self.handle(client, bytes(message.payload)
                                  if isinstance(message.payload, bytes | bytearray)
                                  else str(message.payload).encode())
            _ack(client, message)

    async def handle(self, client: aiomqtt.Client, payload: bytes) -> None:
        self.received += 1
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
            await client.publish(reply.topic, reply.payload, qos=1, timeout=10)
            return
        if not self._reply_ok(command.reply_to):
            self.refused += 1
            reply = command_reply(command.request_id, reply_topic(self.prefix, None), False,
                                  datetime.now(UTC), reply_id=uuid.uuid4().hex, error="invalid_command",
                                  message=f"reply_to must be under {self.prefix}/replies/")
            await client.publish(reply.topic, reply.payload, qos=1, timeout=10)
            return
        kind = command.inbox_kind
        stored = command.inbox_payload()
        if command.request_id is None:
            inbox_id = await reports.enqueue(self.db, kind, stored)
        else:
            queued = await reports.enqueue_once(self.db, kind, stored, command.request_id)
            inbox_id = queued.inbox_id
            if not queued.new:
                await self._repeated(client, command, kind, stored, queued)
                return
        log.info("command_received", **command.log_fields(), request_id=command.request_id, inbox=inbox_id)
        if self.wake is not None:
            self.wake()

    async def _repeated(self, client: aiomqtt.Client, command: BreakCommand | AllocateCommand, kind: str,
                        payload: dict[str, Any], first: reports.Queued) -> None:
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
            await client.publish(reply.topic, reply.payload, qos=1, timeout=10)
            return
        self.repeated += 1
        log.info("command_repeated", **command.log_fields(), request_id=command.request_id,
                 inbox=first.inbox_id, applied=first.applied)
        if first.reply is not None:
            await client.publish(topic, first.reply, qos=1, timeout=10)
        elif first.applied:
            log.warning("command_repeated_without_reply", request_id=command.request_id,
                        inbox=first.inbox_id)
        elif self.wake is not None:
            self.wake()         # not applied yet: its reply answers this one too
