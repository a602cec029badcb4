"""The pre-logon guard in front of quickfix's acceptor (in the gateway process).

Why: quickfix 1.16's acceptor reads a new connection's first message with no
bound on its size or time.  ``SocketConnection::read`` buffers whatever
arrives until a message parses, rescanning the whole buffer on every read, in
the acceptor's single thread: a client sending ``8=FIX.4.4`` and bytes
without SOH grew the gateway from 75 to 414 MB (300 MB sent) and kept every
other platform from logging on until it stopped.  And quickfix resets both
sequence numbers on a Logon with ResetSeqNumFlag=Y *before* the application's
``fromAdmin`` can refuse its credentials (``Session::nextLogon``), so a wrong
password could reset a protected session.  quickfix has no setting for
either, so the project puts its own guard in front of it.

The guard listens on every configured ``[[platform]]`` port.  Per connection
it reads the first message with a bound on bytes (``LOGON_MAX_BYTES``) and
time (``LOGON_TIMEOUT_S``), in one selector thread for all connections not yet
logged on (at most ``PENDING_MAX`` at once; the oldest is dropped for a new
one, so a flood of connections cannot lock a platform out).  The message must
be a well-formed Logon (BodyLength and CheckSum exact) for the CompID pair and
FIX version configured on that port, with the configured Username (553) and
Password (554).  Anything else is closed without an answer (a FIX Logout
would need a MsgSeqNum of the session the client has not proved it belongs
to; sending one would move that session's numbers) and logged
(``fix_guard_refused``, with the reason; at most ``REFUSAL_LOG_BURST`` lines
per 10 s, the rest counted in ``fix_guard_refusals_suppressed``).

A Logon that passes is handed to quickfix's acceptor without its password
fields (re-framed: BodyLength and CheckSum recomputed), so quickfix's message
log, store and the journal never see them; the rest of the connection is
relayed both ways by two threads doing blocking ``recv_into``/``sendall``
(the GIL is released while they wait; bench/guard_relay.py measures the CPU
this adds per message).

quickfix's acceptor binds every interface and has no setting for the
address (``socket_createAcceptor``: ``INADDR_ANY``).  Its listening socket is
replaced, by ``dup2`` on the same descriptor, with one bound to 127.0.0.1 on
a port of its own (``confine_to_loopback``): quickfix accepts by descriptor
and finds the sessions by the port it recorded when it bound, so it goes on
working, and nothing off this host can reach it past the guard.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from adapters.config import SessionSpec
from adapters.secure import PASSWORD_TAGS
from stp.fixwire import Framer, GarbledMessage, finish, join_fields, parse_frame

log = structlog.get_logger("engine.guard")

LOGON_MAX_BYTES = 4096        # a Logon is a few hundred bytes
LOGON_TIMEOUT_S = 10.0        # from accept to a complete Logon
PENDING_MAX = 64              # connections waiting for their Logon, all ports together
REFUSAL_LOG_BURST = 20        # refusal log lines per 10 s window
RELAY_BUFFER = 256 * 1024
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Passed:
    """A Logon that passed: the spec it logs on to, the Logon to hand on
    (without passwords), and any bytes that came after it."""

    spec: SessionSpec
    logon: bytes
    rest: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    spec: SessionSpec | None = None     # the session a Logon with wrong credentials was for


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                     expected.encode("utf-8", "surrogateescape"))


def check_logon(data: bytes, specs: Sequence[SessionSpec],
                max_bytes: int = LOGON_MAX_BYTES) -> Passed | Refused | None:
    """The verdict on the first bytes of a connection: ``None`` while the
    Logon may still be arriving (fewer than ``max_bytes`` and no complete
    message yet)."""
    if data[:5] != b"8=FIX"[:len(data[:5])]:
        return Refused("does not start with 8=FIX")
    framer = Framer(max_message_size=max_bytes)
    framer.feed(data[:max_bytes + 64])
    for frame, error in framer.frames():
        if error is not None or framer.stats.garbled or not data.startswith(frame):
            return Refused(f"garbled first message: {error or 'no frame at the start'}")
        try:
            msg = parse_frame(frame)
        except GarbledMessage as exc:
            return Refused(f"garbled first message: {exc}")
        if msg.msg_type != "A":
            return Refused(f"first message is not a Logon (35={msg.msg_type[:8]})")
        begin, sender, target = msg.fields[0][1], msg.get(49), msg.get(56)
        spec = next((s for s in specs if s.begin_string == begin and s.target_comp_id == sender
                     and s.sender_comp_id == target), None)
        if spec is None:
            return Refused(f"no session {begin[:10]} {str(sender)[:20]}->{str(target)[:20]} on this port")
        if spec.username is not None and not _same(msg.get(553), spec.username):
            return Refused("invalid username or password", spec)
        if spec.password is not None and not _same(msg.get(554), spec.password):
            return Refused("invalid username or password", spec)
        body = [(t, v) for t, v in msg.fields[2:-1] if t not in PASSWORD_TAGS]
        return Passed(spec, finish(begin, join_fields(body)), data[len(frame):])
    if framer.stats.garbled:
        return Refused("garbled first message: no frame at the start")
    if len(data) >= max_bytes:
        return Refused(f"no complete Logon within {max_bytes} bytes")
    return None


def confine_to_loopback(port: int) -> int:
    """Replace this process's listening socket on ``0.0.0.0:port`` (quickfix's
    acceptor) with one listening on 127.0.0.1 (a port of its own, returned),
    on the same descriptor."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with probe:
            try:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                address = probe.getsockname()
            except OSError:
                continue
            if probe.family != socket.AF_INET or not listening or address != ("0.0.0.0", port):
                continue
        replacement = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        replacement.bind(("127.0.0.1", 0))
        replacement.listen(128)
        replacement.setblocking(False)     # a wake-up left from the old socket must not block quickfix
        new_port = int(replacement.getsockname()[1])
        os.dup2(replacement.fileno(), fd)
        replacement.close()
        return new_port
    raise RuntimeError(f"no listening socket on 0.0.0.0:{port} in this process")


@dataclass(slots=True)
class _Pending:
    sock: socket.socket
    peer: str
    port: int
    accepted: float
    specs: list[SessionSpec]
    upstream: tuple[str, int]
    data: bytes = b""


class LogonGuard:
    """Listens on the platform ports; see the module's docstring."""

    def __init__(self, routes: Sequence[tuple[str, int, Sequence[SessionSpec], tuple[str, int]]],
                 max_bytes: int = LOGON_MAX_BYTES, timeout_s: float = LOGON_TIMEOUT_S,
                 pending_max: int = PENDING_MAX,
                 on_passed: Callable[[SessionSpec], None] | None = None,
                 on_refused: Callable[[SessionSpec, str], None] | None = None) -> None:
        # routes: (host, port, the sessions configured on it, quickfix's loopback address)
        self.routes = list(routes)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.pending_max = pending_max
        self.on_passed = on_passed
        # a Logon for a configured session refused for its credentials: the
        # session's status and session_down (the engine) hear of it
        self.on_refused = on_refused
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self._pending: dict[int, _Pending] = {}
        self._stopped = threading.Event()
        self.refused = 0
        self.passed = 0
        self._window_start = time.monotonic()
        self._window_logged = 0
        self._window_suppressed = 0

    def start(self) -> None:
        """Bind every port (an error if one is taken), then serve in a thread."""
        for host, port, specs, upstream in self.routes:
            server = socket.create_server((host, port), backlog=128, reuse_port=False)
            server.setblocking(False)
            self._listeners.append(server)
            self._selector.register(server, selectors.EVENT_READ, (port, list(specs), upstream))
        threading.Thread(target=self._serve, name="fix-guard", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting (within the selector's 0.5 s); relayed connections go on."""
        self._stopped.set()

    # -- the selector thread ------------------------------------------------
    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                events = self._selector.select(timeout=0.5)
                for key, _ in events:
                    if key.data is None:
                        self._read(key.fileobj)  # type: ignore[arg-type]  # the selector holds sockets only
                    else:
                        self._accept(key.fileobj, *key.data)  # type: ignore[arg-type]  # the selector holds sockets only
                self._expire()
            except Exception:
                log.exception("fix_guard_error")
                time.sleep(0.1)
        for entry in list(self._pending.values()):
            self._drop(entry)
        for server in self._listeners:
            self._selector.unregister(server)
            server.close()

    def _accept(self, server: socket.socket, port: int, specs: list[SessionSpec],
                upstream: tuple[str, int]) -> None:
        for _ in range(64):
            try:
                sock, addr = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:            # out of descriptors: try again later
                log.warning("fix_guard_accept_failed", port=port, error=str(exc))
                return
            if len(self._pending) >= self.pending_max:
                oldest = min(self._pending.values(), key=lambda p: p.accepted)
                self._refuse(oldest, "too many connections waiting for their Logon (oldest dropped)")
            sock.setblocking(False)
            entry = _Pending(sock, f"{addr[0]}:{addr[1]}", port, time.monotonic(), specs, upstream)
            self._pending[sock.fileno()] = entry
            self._selector.register(sock, selectors.EVENT_READ, None)

    def _read(self, sock: socket.socket) -> None:
        entry = self._pending.get(sock.fileno())
        if entry is None:
            return
        try:
            data = sock.recv(self.max_bytes + 1 - len(entry.data))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(entry)
            log.info("fix_guard_connection_lost", peer=entry.peer, port=entry.port, error=str(exc))
            return
        if not data:
            self._refuse(entry, "closed before a complete Logon")
            return
        entry.data += data
        verdict = check_logon(entry.data, entry.specs, self.max_bytes)
        if verdict is None:
            return
        if isinstance(verdict, Refused):
            self._refuse(entry, verdict.reason)
            if verdict.spec is not None and self.on_refused is not None:
                self.on_refused(verdict.spec, verdict.reason)
            return
        self._drop(entry, close=False)
        sock.setblocking(True)
        self.passed += 1
        log.info("fix_guard_logon_passed", session=verdict.spec.name, peer=entry.peer, port=entry.port)
        if self.on_passed is not None:
            self.on_passed(verdict.spec)
        threading.Thread(target=_relay, args=(sock, entry.upstream, verdict.logon + verdict.rest,
                                              verdict.spec.name, entry.peer),
                         name=f"fix-guard-relay-{verdict.spec.name}", daemon=True).start()

    def _expire(self) -> None:
        deadline = time.monotonic() - self.timeout_s
        for entry in [p for p in self._pending.values() if p.accepted < deadline]:
            self._refuse(entry, f"no complete Logon within {self.timeout_s:g} s")
        now = time.monotonic()
        if now - self._window_start >= 10.0:
            if self._window_suppressed:
                log.warning("fix_guard_refusals_suppressed", refusals=self._window_suppressed,
                            window_s=round(now - self._window_start, 1), refused_total=self.refused)
            self._window_start, self._window_logged, self._window_suppressed = now, 0, 0

    def _drop(self, entry: _Pending, close: bool = True) -> None:
        fd = entry.sock.fileno()
        self._pending.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(entry.sock)
        if close:
            entry.sock.close()

    def _refuse(self, entry: _Pending, reason: str) -> None:
        received = len(entry.data)
        self._drop(entry)
        self.refused += 1
        if self._window_logged < REFUSAL_LOG_BURST:
            self._window_logged += 1
            log.warning("fix_guard_refused", peer=entry.peer, port=entry.port, reason=reason,
                        bytes_received=received)
        else:
            self._window_suppressed += 1


def _relay(client: socket.socket, upstream: tuple[str, int], first: bytes, session: str, peer: str) -> None:
    """Hand the Logon to quickfix, then copy both ways until either side closes."""
    try:
        server = socket.create_connection(upstream, timeout=CONNECT_TIMEOUT_S)
        server.settimeout(None)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.sendall(first)
    except OSError as exc:
        log.error("fix_guard_upstream_failed", session=session, peer=peer, upstream=upstream, error=str(exc))
        client.close()
        return
    pair = _Pair(client, server)
    threading.Thread(target=pair.copy, args=(server, client), name=f"fix-guard-out-{session}",
                     daemon=True).start()
    pair.copy(client, server)


class _Pair:
    """Two sockets relayed both ways; the first direction to end shuts both."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.sockets = (a, b)
        self._lock = threading.Lock()
        self._ended = 0

    def copy(self, src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(RELAY_BUFFER)
        view = memoryview(buf)
        recv_into, sendall = src.recv_into, dst.sendall
        try:
            while True:
                n = recv_into(buf)
                if not n:
                    break
                sendall(view[:n])
        except OSError:
            pass
        finally:
            self._end()

    def _end(self) -> None:
        with self._lock:
            self._ended += 1
            last = self._ended == 2
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if last:
            for sock in self.sockets:
                sock.close()
