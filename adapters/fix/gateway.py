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
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

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


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, gateway: FixGateway) -> None:
        self.gateway = gateway
        self.reader = FrameReader()
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        # the process has exited and everything it wrote has been read
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # subprocess_exec gives a SubprocessTransport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except WireError as exc:
            log.error("fix_gateway_wire_error", error=str(exc)[:300])
            if self.transport is not None:
                self.transport.kill()
            return
        self.gateway._frames(frames)

    def process_exited(self) -> None:
        if not self.exited.done() and self.transport is not None:
            self.exited.set_result(self.transport.get_returncode() or 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


class FixGateway:
    """The engine's side: start the gateway, take its messages into the
    ``InboundQueue``, send it DontKnowTrades and BusinessMessageRejects,
    restart it if it dies, stop it.

    ``resume`` gives each session's last committed inbound MsgSeqNum; on a
    restart it is asked again, after the intake has committed everything the
    dead gateway delivered."""

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
        self.restarts = 0
        self.send_failures = 0
        self.quarantined = 0
        self.poison = PoisonWatch(cfg)
        # messages to send that found no gateway (it was being restarted): sent
        # by the next one, in order (their reports are committed: nothing
        # would make the counterparty ask again)
        self._unsent: list[bytes] = []
        self.max_unsent = 10_000
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _Protocol | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        queue.on_full = self._pause
        queue.on_space = self._resume

    def command(self) -> list[str]:
        return engine_subcommand("gateway", self.cfg, self.log_level)

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    async def start(self, attempts: int = 5, ready_timeout: float = 60.0) -> dict[str, Any]:
        """Start the gateway and wait until its sessions exist (the acceptor
        listens); tried a few times (a gateway of a killed engine may still
        hold the acceptor's port for a moment)."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                ready = await self._start_once(ready_timeout)
            except GatewayExited as exc:
                if attempt == attempts:
                    raise
                log.warning("fix_gateway_start_failed", attempt=attempt, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._watch = asyncio.create_task(self._watch_exit(), name="fix-gateway-watch")
            return ready
        raise AssertionError("unreachable")

    async def _start_once(self, ready_timeout: float = 60.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.poison.started()
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(self), *self.command(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=None,
            env={**os.environ, "STP_GATEWAY_PARENT": str(os.getpid())})
        self._transport, self._protocol = transport, protocol
        # every session: one with nothing committed yet starts from 1, not from
        # quickfix's store (which moved past messages whose frames a dead
        # gateway never delivered)
        committed = self.resume()
        resume = {name: committed.get(name) or 0 for name in self.sessions}
        self._write(event_frame("start", resume=resume,
                                days={k: v for k, v in self.days().items() if k in self.sessions},
                                outbound={k: v for k, v in self.outbound().items() if k in self.sessions}))
        waiting = asyncio.ensure_future(asyncio.shield(self._ready))
        done, _ = await asyncio.wait({waiting, protocol.exited}, timeout=ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            waiting.cancel()
            if not protocol.exited.done():
                transport.kill()
                raise GatewayExited(f"the gateway did not create its sessions within {ready_timeout} s")
            raise GatewayExited(f"the gateway exited with status {protocol.exited.result()} before its "
                                "sessions were created")
        ready: dict[str, Any] = waiting.result()
        if tuple(ready.get("sessions", ())) != self.sessions:
            transport.kill()
            raise RuntimeError(f"the gateway runs sessions {ready.get('sessions')}, the engine expects "
                               f"{list(self.sessions)}")
        log.info("fix_gateway_started", pid=transport.get_pid(), resume=resume)
        unsent, self._unsent = self._unsent, []
        for frame in unsent:
            self._write(frame)
        if unsent:
            log.info("fix_gateway_sent_held", messages=len(unsent))
        return ready

    async def _watch_exit(self) -> None:
        """A gateway that dies is started again once the intake has committed
        what it delivered, resuming after the committed sequence numbers."""
        while True:
            protocol = self._protocol
            assert protocol is not None
            # shielded: cancelling the watcher must not cancel the futures stop() waits on;
            # finished: what the gateway wrote before it died has been read too
            await asyncio.shield(protocol.finished)
            code = protocol.exited.result() if protocol.exited.done() else None
            if self._stopping:
                return
            self.restarts += 1
            log.error("fix_gateway_died", returncode=code, restarts=self.restarts)
            backoff = Backoff(1.0, 30.0)     # 1 s doubling to 30 s between failed restarts
            delay = backoff.next()
            while not self._stopping:
                # what the dead gateway delivered is committed first; then the
                # message it died on twice, if any, is quarantined (a gateway
                # that died before it was ready counts as a death too)
                await self._drain()
                if self._stopping:
                    return
                if await self._quarantine():
                    await self._drain()
                if self._stopping:
                    return                      # stopped while the logs were scanned
                try:
                    await self._start_once()
                    break
                except Exception as exc:
                    log.error("fix_gateway_restart_failed", error=str(exc)[:300], retry_in_s=delay)
                    await asyncio.sleep(delay)
                    delay = backoff.next()
                    failed = self._protocol
                    if failed is not None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(failed.finished), 5.0)

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
        transport = self._transport
        if transport is None or transport.get_returncode() is not None:
            return False
        stdin = transport.get_pipe_transport(0)
        if stdin is None or stdin.is_closing():
            return False
        stdin.write(frame)  # type: ignore[attr-defined]  # pipe 0 (stdin) is a WriteTransport
        return True

    def _pause(self) -> None:
        if self._transport is not None:
            stdout = self._transport.get_pipe_transport(1)
            if stdout is not None:
                stdout.pause_reading()  # type: ignore[attr-defined]  # pipe 1 (stdout) is a ReadTransport

    def _resume(self) -> None:
        if self._transport is not None:
            stdout = self._transport.get_pipe_transport(1)
            if stdout is not None:
                stdout.resume_reading()  # type: ignore[attr-defined]  # pipe 1 (stdout) is a ReadTransport

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

    async def stop(self, timeout: float = 15.0) -> int | None:
        """Log every session out and wait for the gateway to exit."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        protocol, transport = self._protocol, self._transport
        if protocol is None or transport is None:
            return None
        if self._write(event_frame("stop")):
            stdin = transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()
        try:
            code = await asyncio.wait_for(asyncio.shield(protocol.exited), timeout)
        except TimeoutError:
            log.error("fix_gateway_stop_timeout", pid=transport.get_pid(), timeout_s=timeout)
            transport.kill()
            code = await protocol.exited
        transport.close()
        return code
