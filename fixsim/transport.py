"""asyncio transport for the session layer: TCP acceptor and initiator.

A connection owns a ``Framer`` and, once a Logon has named it, one
``Session``.  Each chunk read from the socket is framed and fed to the
session in one go; what the session queued is written once per chunk, so a
burst of messages costs one ``write``.  A timer ticks every connected
session (heartbeats, test requests, logon and logout timeouts).

Acceptor rules, as a FIX engine applies them: the first message must be a
well-formed Logon for a configured (BeginString, SenderCompID, TargetCompID);
anything else, or a Logon for a session that already has a connection,
closes the connection without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import structlog

from fixsim.session import Session
from stp.fixwire import DEFAULT_MAX_MESSAGE_SIZE, Framer, GarbledMessage, parse_frame

log = structlog.get_logger("fix.transport")

TICK_SECONDS = 0.2


class FixConnection(asyncio.Protocol):
    def __init__(self, resolve: Callable[[str, str, str], Session | None] | None,
                 session: Session | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 on_lost: Callable[[FixConnection], None] | None = None) -> None:
        self._resolve = resolve
        self.session = session
        self.framer = Framer(max_message_size)
        self.transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.peer: str = "?"
        self.opened_at = time.monotonic()

    # asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.session is not None:
            self.session.on_connect(time.time())
            self.flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.framer.feed(data)
        for frame, error in self.framer.frames():
            session = self.session
            if session is None:
                session = self._bind(frame, error)
                if session is None:
                    self.close()
                    return
            if error is not None:
                session.on_garbled(frame, error)
            else:
                session.on_bytes_frame(frame, now)
            if session.disconnect_requested:
                self.flush()
                self.close()
                return
        self.flush()

    def _bind(self, frame: bytes, error: str | None) -> Session | None:
        if error is not None or self._resolve is None:
            log.warning("fix_connection_refused", peer=self.peer, reason=error or "no session")
            return None
        try:
            msg = parse_frame(frame)
        except GarbledMessage as exc:
            log.warning("fix_connection_refused", peer=self.peer, reason=str(exc))
            return None
        if msg.msg_type != "A":
            log.warning("fix_connection_refused", peer=self.peer, reason="first message is not a Logon")
            return None
        begin, sender, target = msg.get(8, ""), msg.get(49, ""), msg.get(56, "")
        session = self._resolve(begin or "", target or "", sender or "")
        if session is None:
            log.warning("fix_connection_refused", peer=self.peer, reason="unknown session",
                        begin_string=begin, sender_comp_id=sender, target_comp_id=target)
            return None
        if session.connected:
            log.warning("fix_connection_refused", peer=self.peer, session=session.config.key,
                        reason="session already connected")
            return None
        self.session = session
        session.on_connect(time.time())
        return session

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None:
            session.on_disconnect()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # ------------------------------------------------------------------
    def flush(self) -> None:
        session = self.session
        if session is None or self.transport is None or self.transport.is_closing():
            return
        data = session.take_output()
        if data:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self._paused or self.transport is None or self.transport.is_closing():
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def tick(self, now: float) -> None:
        session = self.session
        if session is None:
            return
        session.on_timer(now)
        self.flush()
        if session.disconnect_requested:
            self.close()


class FixAcceptor:
    """Serves the given sessions on one port (any mix of BeginStrings)."""

    def __init__(self, sessions: Iterable[Session], host: str = "127.0.0.1", port: int = 0,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, logon_timeout: float = 10.0) -> None:
        self.sessions = {(s.config.begin_string, s.config.sender_comp_id, s.config.target_comp_id): s
                         for s in sessions}
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.logon_timeout = logon_timeout     # a connection that names no session by then is closed
        self._server: asyncio.Server | None = None
        self._connections: set[FixConnection] = set()
        self._ticker: asyncio.Task[None] | None = None

    def _resolve(self, begin: str, ours: str, theirs: str) -> Session | None:
        return self.sessions.get((begin, ours, theirs))

    def _new_connection(self) -> FixConnection:
        conn = FixConnection(self._resolve, max_message_size=self.max_message_size,
                             on_lost=self._connections.discard)
        self._connections.add(conn)
        return conn

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, self.port,
                                                reuse_address=True)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())
        log.info("fix_acceptor_listening", host=self.host, port=self.port,
                 sessions=[s.config.key for s in self.sessions.values()])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.time()
            opened_before = time.monotonic() - self.logon_timeout
            for conn in list(self._connections):
                if conn.session is None:
                    if conn.opened_at < opened_before:
                        log.warning("fix_connection_refused", peer=conn.peer,
                                    reason="no logon within the logon timeout")
                        conn.close()
                    continue
                conn.tick(now)

    def connection(self, session: Session) -> FixConnection | None:
        for conn in self._connections:
            if conn.session is session:
                return conn
        return None

    async def stop(self, logout_wait: float = 2.0) -> None:
        for conn in list(self._connections):
            if conn.session is not None and conn.session.logged_on:
                conn.session.logout()
                conn.flush()
        if self._connections:
            deadline = time.monotonic() + logout_wait
            while self._connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for conn in list(self._connections):
            conn.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for session in self.sessions.values():
            session.store.close()


class FixInitiator:
    """Connects one session to a counterparty and reconnects when it drops."""

    def __init__(self, session: Session, host: str, port: int, reconnect_interval: float = 1.0,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.session = session
        self.host = host
        self.port = port
        self.reconnect_interval = reconnect_interval
        self.max_message_size = max_message_size
        self.connection: FixConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.logged_on = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                _, conn = await loop.create_connection(
                    lambda: FixConnection(None, self.session, self.max_message_size),
                    self.host, self.port)
            except OSError as exc:
                log.info("fix_connect_failed", session=self.session.config.key,
                         host=self.host, port=self.port, error=str(exc))
                await asyncio.sleep(self.reconnect_interval)
                continue
            self.connection = conn
            ticker = asyncio.create_task(self._tick(conn))
            try:
                await conn.closed
            finally:
                ticker.cancel()
                self.logged_on.clear()
                self.connection = None
            if not self._stopping:
                await asyncio.sleep(self.reconnect_interval)

    async def _tick(self, conn: FixConnection) -> None:
        while True:
            if self.session.logged_on:
                self.logged_on.set()
            else:
                self.logged_on.clear()
            conn.tick(time.time())
            await asyncio.sleep(TICK_SECONDS)

    async def wait_logged_on(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.logged_on.wait(), timeout)

    async def stop(self, logout_wait: float = 2.0) -> None:
        self._stopping = True
        conn = self.connection
        if conn is not None:
            if self.session.logged_on:
                self.session.logout()
                conn.flush()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.closed), logout_wait)
            conn.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.session.store.close()
