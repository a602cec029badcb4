"""quickfix in a process of its own: the FIX gateway.

quickfix calls the application back on its own threads, and each callback
needs the GIL.  In the engine's process the callbacks competed with the
intake's event loop for it: a callback waiting for the GIL waited a switch
interval (5 ms) behind the busy loop, and quickfix delivered a few thousand
messages a second instead of tens of thousands (bench/quickfix_ceiling.py).
In a process of its own nothing else holds the GIL for long: the callbacks
append the message to a list and return, a writer thread sends the batch
down a pipe, and the main thread blocks on the engine's commands.

The engine starts ``run_engine.py gateway --config FILE`` as its child.

- engine -> gateway (the child's stdin): ``start`` (each session's last
  committed inbound MsgSeqNum: quickfix expects the one after it, so the
  counterparty resends what was not committed), ``send`` (a DontKnowTrade or
  BusinessMessageReject), ``stop`` (log every session out and exit).
- gateway -> engine (the child's stdout): every application message as
  quickfix received it (its bytes exactly, UTF-8 or not; over ``[engine]
  max_message_bytes`` its first 64 KiB and its true size; session, receive
  time, kind), and events: ``ready`` (the sessions exist; the acceptor
  listens) and ``send_failed``.  A frame is never longer than the size cap
  allows, so a longer length can only be corruption.

A message that kills the gateway twice is quarantined (adapters/fix/poison.py).

Exactly once does not depend on the pipe: the engine commits a message's
fill and the session's sequence number in one transaction, and a gateway
(re)started by the engine resumes after the committed sequence number.  A
message lost with a dying gateway, or read after the engine closed its
hand-off, is resent by the counterparty.

The gateway exits when its stdin closes (the engine stopped or died: Linux
also kills it with its parent, ``PR_SET_PDEATHSIG``), and ignores SIGINT
(Ctrl-C reaches the whole process group; the engine decides).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from adapters.child import ChildProtocol, ChildSupervisor
from adapters.config import EngineConfig, engine_subcommand
from adapters.fix.pipe import (
    MESSAGE,
    TRUNCATED_KEEP,
    FrameReader,
    WireError,
    _cut,
    decode_event,
    decode_message,
    decode_text,
    event_frame,
)
from adapters.fix.poison import Logged, PoisonWatch
from stp.backoff import Backoff
from stp.inbound import SESSION_EVENTS, Inbound, MessageKind

log = structlog.get_logger("engine.gateway")
# -- the engine's side ----------------------------------------------------------
class InboundQueue:
    """The gateway's messages waiting for the intake (the engine's event loop
    only).  When ``maximum`` wait, the engine stops reading the gateway's pipe
    (``on_full``) until the intake has taken half of them (``on_space``): the
    pipe fills, the gateway's callbacks wait, quickfix stops reading the
    socket, and TCP pushes back on the counterparty."""

    def __init__(self, maximum: int = 200_000) -> None:
        self._items: deque[Inbound] = deque()
        self.maximum = maximum
        self.wakeup = asyncio.Event()
        self.high_water = 0
        # set when the engine stops: what arrives after that is not committed,
        # so the next start asks the counterparty to resend it
        self.closed = False
        self.on_full: Callable[[], None] | None = None
        self.on_space: Callable[[], None] | None = None
        self._full = False

    def put(self, item: Inbound) -> None:
        if self.closed:
            return
        items = self._items
        if not items:
            self.wakeup.set()
        items.append(item)
        if len(items) >= self.maximum and not self._full:
            self._full = True
            if self.on_full is not None:
                self.on_full()

    def take(self, limit: int) -> list[Inbound]:
        items = self._items
        n = min(limit, len(items))
        self.high_water = max(self.high_water, len(items))
        batch = [items.popleft() for _ in range(n)]
        if self._full and len(items) <= self.maximum // 2:
            self._full = False
            if self.on_space is not None:
                self.on_space()
        return batch

    def __len__(self) -> int:
        return len(self._items)


class GatewayExited(RuntimeError):
    pass


class _Protocol(ChildProtocol):
    """The gateway's stdout: frames into the engine's queue."""

    def __init__(self, gateway: FixGateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.reader = FrameReader()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except WireError as exc:
            log.error("fix_gateway_wire_error", error=str(exc)[:300])
            if self.transport is not None:
                self.transport.kill()
            return
        self.gateway._frames(frames)


class FixGateway:
    """The engine's side: start the gateway, take its messages into the
    ``InboundQueue``, send it DontKnowTrades and BusinessMessageRejects,
    restart it if it dies, stop it.  ``async with gateway`` starts it
    (``gateway.ready``: its ready event) and stops it however the block ends.

    ``resume`` gives each session's last committed inbound MsgSeqNum; on a
    restart it is asked again, after the intake has committed everything the
    dead gateway delivered.

    The process itself (spawn, restart, stop with a grace period, exit logs)
    is an ``adapters.child.ChildSupervisor``'s: a gateway that dies is
    started again at once (after the intake has drained and the poison check),
    a restart that fails waits 1 s doubling to 30 s, from nothing again once a
    gateway is ready."""

    def __init__(self, cfg: EngineConfig, queue: InboundQueue, resume: Callable[[], dict[str, int]],
                 log_level: str | None = None, drained: Callable[[], bool] | None = None,
                 days: Callable[[], dict[str, str | None]] | None = None,
                 outbound: Callable[[], dict[str, int]] | None = None) -> None:
        self.cfg = cfg
        self.queue = queue
        self.resume = resume
        # the session day each committed number belongs to (the gateway resumes
        # a number only within its day) and outbound numbers ops set while no
        # engine ran (applied when quickfix creates the session)
        self.days = days or (lambda: {})
        self.outbound = outbound or (lambda: {})
        self.drained = drained or (lambda: not len(queue))
        self.log_level = log_level
        self.sessions: tuple[str, ...] = tuple(s.name for s in cfg.sessions)
        self.send_failures = 0
        self.quarantined = 0
        self.poison = PoisonWatch(cfg)
        self.ready_timeout = 60.0
        self.ready: dict[str, Any] | None = None      # the running gateway's ready event
        # messages to send that found no gateway (it was being restarted): sent
        # by the next one, in order (their reports are committed: nothing
        # would make the counterparty ask again)
        self._unsent: list[bytes] = []
        self.max_unsent = 10_000
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._child = ChildSupervisor(
            "fix_gateway", lambda: self.command(), restart=Backoff(1.0, 30.0, immediate=1), stop_grace=15.0,
            protocol=lambda: _Protocol(self), read_stdout=True,
            env={"STP_GATEWAY_PARENT": str(os.getpid())}, launch=self._start_once,
            before_restart=self._between, ask_to_stop=self._ask_to_stop, logger=log)
        queue.on_full = self._pause
        queue.on_space = self._resume

    def command(self) -> list[str]:
        return engine_subcommand("gateway", self.cfg, self.log_level)

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def restarts(self) -> int:
        return self._child.restarts

    @property
    def exit_code(self) -> int | None:
        return self._child.exit_code

    @property
    def _stopping(self) -> bool:
        return self._child.stopping

    async def start(self, attempts: int = 5, ready_timeout: float = 60.0) -> dict[str, Any]:
        """Start the gateway and wait until its sessions exist (the acceptor
        listens); tried a few times, 0.5 s doubling to 5 s apart (a gateway
        of a killed engine may still hold the acceptor's port for a moment)."""
        self.ready_timeout = ready_timeout
        ready: dict[str, Any] = await self._child.start(attempts, Backoff(0.5, 5.0),
                                                        retry_on=(GatewayExited,))
        return ready

    async def __aenter__(self) -> FixGateway:
        self.ready = await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

    async def _start_once(self) -> dict[str, Any]:
        """One gateway: spawned, told where each session resumes, ready (its
        sessions exist).  If it exits or hangs first, GatewayExited (the
        supervisor kills and discards it)."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.poison.started()
        protocol = await self._child.spawn()
        # every session: one with nothing committed yet starts from 1, not from
        # quickfix's store (which moved past messages whose frames a dead
        # gateway never delivered)
        committed = self.resume()
        resume = {name: committed.get(name) or 0 for name in self.sessions}
        self._write(event_frame("start", resume=resume,
                                days={k: v for k, v in self.days().items() if k in self.sessions},
                                outbound={k: v for k, v in self.outbound().items() if k in self.sessions}))
        waiting = asyncio.ensure_future(asyncio.shield(self._ready))
        try:
            done, _ = await asyncio.wait({waiting, protocol.exited}, timeout=self.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting not in done:
            if not protocol.exited.done():
                raise GatewayExited(f"the gateway did not create its sessions within {self.ready_timeout} s")
            raise GatewayExited(f"the gateway exited with status {protocol.exited.result()} before its "
                                "sessions were created")
        ready: dict[str, Any] = waiting.result()
        if tuple(ready.get("sessions", ())) != self.sessions:
            raise RuntimeError(f"the gateway runs sessions {ready.get('sessions')}, the engine expects "
                               f"{list(self.sessions)}")
        log.info("fix_gateway_started", pid=self.pid, resume=resume)
        self.ready = ready
        unsent, self._unsent = self._unsent, []
        for frame in unsent:
            self._write(frame)
        if unsent:
            log.info("fix_gateway_sent_held", messages=len(unsent))
        return ready

    async def _between(self) -> None:
        """Before a gateway that died is started again: what it delivered is
        committed first; then the message it died on twice, if any, is
        quarantined (a gateway that died before it was ready counts as a
        death too), and committed."""
        await self._drain()
        if not self._stopping and await self._quarantine():
            await self._drain()

    async def _drain(self) -> None:
        while not self.drained() and not self._stopping:
            await asyncio.sleep(0.05)

    async def _quarantine(self) -> int:
        """A message the gateway died on twice (``PoisonWatch``) goes to the
        intake as ``poison``: journaled, its MsgSeqNum committed, a break.
        What quickfix processed before it in the same run and the engine never
        received (its frames died with the gateway) goes first, from the
        same log, as the gateway would have handed it over.

        The logs are read and scanned on a worker thread (up to TAIL_MIN and
        SEGMENT_MAX of them per session): the loop that runs the intake goes
        on meanwhile.  The restart still waits for it (no gateway starts, so
        nothing new is queued and no log offset moves, before it is done)."""
        try:
            suspects = await asyncio.to_thread(self.poison.died, self.resume())
        except Exception as exc:          # never let the restart wait on this
            log.error("fix_poison_check_failed", error=repr(exc)[:300])
            return 0
        for session, seq in self.poison.unrecoverable:
            log.error("fix_poison_not_quarantined", session=session, seq=seq,
                      reason="a MsgSeqNum before it is not in quickfix's message log")
        self.poison.unrecoverable.clear()
        for suspect in suspects:
            for kind, message in suspect.before:
                self._put_logged(suspect.session, kind, message)
            self._put_logged(suspect.session, "poison", suspect.message)
            self.quarantined += 1
            log.error("fix_poison_quarantined", session=suspect.session, seq=suspect.seq,
                      msg_type=suspect.message.msg_type, size=len(suspect.message.raw),
                      recovered_before=len(suspect.before),
                      note="the gateway died twice on it: journaled as poison, its MsgSeqNum committed")
        return len(suspects)

    def _put_logged(self, session: str, kind: MessageKind, message: Logged) -> None:
        cap = self.cfg.max_message_bytes
        data = message.raw
        size = len(data)
        if size > cap:
            data = _cut(data, min(TRUNCATED_KEEP, cap))
            if kind in ("app", "unsupported"):
                kind = "oversized"
        text, binary = decode_text(data)
        self.queue.put(Inbound(session, text, message.logged_at or time.time(), kind, binary, size,
                               size != len(data)))

    def _frames(self, frames: list[tuple[bytes, bytes]]) -> None:
        put = self.queue.put
        sessions = self.sessions
        for kind, payload in frames:
            if kind == MESSAGE:
                try:
                    put(decode_message(payload, sessions))
                except WireError as exc:
                    # never silently: the counterparty resends it after the next restart
                    log.error("fix_gateway_bad_message_frame", error=str(exc)[:300])
            else:
                self._event(decode_event(payload))

    def _event(self, event: dict[str, Any]) -> None:
        name = event["event"]
        if name == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(event)
        elif name == "send_failed":
            self.send_failures += 1
        elif name in SESSION_EVENTS and event.get("session") in self.sessions:
            # in order with the messages around it: the intake commits what
            # it means for the session's sequence state and status
            self.queue.put(Inbound(event["session"], json.dumps(event), int(event.get("at_us") or 0) / 1e6,
                                   name))

    def _write(self, frame: bytes) -> bool:
        return self._child.write(frame)

    def _pause(self) -> None:
        self._reading(False)

    def _resume(self) -> None:
        self._reading(True)

    def _reading(self, on: bool) -> None:
        transport = self._child.transport
        stdout = transport.get_pipe_transport(1) if transport is not None else None
        if stdout is not None:
            if on:
                stdout.resume_reading()  # type: ignore[attr-defined]  # pipe 1 (stdout) is a ReadTransport
            else:
                stdout.pause_reading()  # type: ignore[attr-defined]  # pipe 1 (stdout) is a ReadTransport

    def send_dont_know(self, session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        """DontKnowTrade (35=Q) for a report the engine cannot process."""
        body = [(tag, fields.get(tag) or ("NONE" if tag in (37, 17, 55) else "0"))
                for tag in (37, 17, 55, 54, 38, 32, 31)]
        return self.send(session, "Q", [*body, (127, reason), (58, text[:120])])

    def send_business_reject(self, session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        """BusinessMessageReject (35=j) for an application message the engine
        cannot use (a quote for an unknown pair, without a price, crossed)."""
        return self.send(session, "j", [(45, fields.get(34, "0")), (372, fields.get(35, "?")),
                                        (380, reason), (58, text[:120])])

    def set_sequence(self, session: str, request: int, next_target: int | None, next_sender: int | None,
                     reason: str) -> bool:
        """Ops' ``session reset``: the gateway sets quickfix's numbers and
        answers ``seq_set``, which the intake commits with the audit row."""
        if session not in self.sessions:
            return False
        return self._write(event_frame("set_seq", session=session, request=request,
                                       next_target=next_target, next_sender=next_sender, reason=reason))

    def send(self, session: str, msg_type: str, body: list[tuple[int, str]]) -> bool:
        """Hand a message to the gateway (quickfix numbers, stores and sends
        it; a failure there is logged by the gateway and counted here)."""
        if session not in self.sessions:
            return False
        frame = event_frame("send", session=session, msg_type=msg_type,
                            body=[[tag, value] for tag, value in body])
        if self._write(frame):
            return True
        if self._stopping or len(self._unsent) >= self.max_unsent:
            log.error("fix_gateway_send_dropped", session=session, msg_type=msg_type,
                      reason="stopping" if self._stopping else "too many held")
            return False
        self._unsent.append(frame)       # the gateway is being restarted
        return True

    def _ask_to_stop(self) -> None:
        """Log every session out and exit: the stop frame, then end of file."""
        if self._write(event_frame("stop")):
            self._child.close_stdin()

    async def stop(self, timeout: float = 15.0) -> int | None:
        """Log every session out and wait for the gateway to exit (killed
        after ``timeout`` seconds)."""
        return await self._child.stop(timeout)
