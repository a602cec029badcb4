"""The engine's FIX sessions, run by quickfix.

quickfix calls back on its own threads.  The callbacks here do the least
possible and never raise into quickfix (an uncaught Python exception there
kills the process; only quickfix's own exception types are rethrown, on
purpose): ``fromApp`` takes the message's string form and the receive time
and appends them to an ``InboundQueue``; the asyncio side is woken only when
the queue goes from empty to non-empty, so a burst costs one wake-up.

Exactly once: quickfix moves its inbound sequence number on when ``fromApp``
returns and its file store never fsyncs, so the engine does not trust it.
The database holds the last inbound MsgSeqNum committed per session; when
quickfix creates a session (``onCreate``, before any logon) its expected
inbound sequence number is set to that + 1, and the counterparty resends the
rest.  Duplicates are then recognised by their business key.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from adapters.config import EngineConfig, SessionSpec
from adapters.fix.dictionary import standard_dictionary_dir

log = structlog.get_logger("engine.fix")

# ExecutionReport, TradeCaptureReport, MarketDataSnapshotFullRefresh
SUPPORTED_APP_TYPES = frozenset({"8", "AE", "W"})
LOGOUT_WAIT_S = 3.0       # LogoutTimeout (2 s) and a heartbeat of quickfix's timer


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message handed from quickfix to the intake."""

    session: str                  # configured session name
    raw: str                      # the message as quickfix received it
    received: float               # time.time() in the callback
    kind: str                     # "app", "unsupported", "session_reject", "reset"


class InboundQueue:
    """Thread-safe hand-off from quickfix threads to the asyncio loop.

    ``put`` never does Python work beyond an append.  When more than
    ``maximum`` messages wait, ``put`` waits (up to ``block_timeout`` per
    call) so quickfix stops reading the socket: TCP pushes back on the
    counterparty instead of the engine growing without bound.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maximum: int = 200_000,
                 block_timeout: float = 1.0) -> None:
        self._loop = loop
        self._items: deque[Inbound] = deque()
        self.maximum = maximum
        self.block_timeout = block_timeout
        self.wakeup = asyncio.Event()
        self._space = threading.Condition()
        self.high_water = 0
        # set when the engine stops: what quickfix delivers after that is not
        # committed, so the next start asks the counterparty to resend it
        self.closed = False

    def put(self, item: Inbound) -> None:
        if self.closed:
            return
        items = self._items
        if len(items) >= self.maximum:
            with self._space:
                self._space.wait_for(lambda: len(items) < self.maximum, self.block_timeout)
        was_empty = not items
        items.append(item)
        if was_empty:
            self._loop.call_soon_threadsafe(self.wakeup.set)

    def take(self, limit: int) -> list[Inbound]:
        items = self._items
        n = min(limit, len(items))
        self.high_water = max(self.high_water, len(items))
        batch = [items.popleft() for _ in range(n)]
        if n and len(items) < self.maximum:
            with self._space:
                self._space.notify_all()
        return batch

    def __len__(self) -> int:
        return len(self._items)


def _import_quickfix() -> Any:
    import quickfix

    return quickfix


def session_settings_text(cfg: EngineConfig, role: str) -> str:
    """quickfix settings for the configured LP (initiator) or platform (acceptor) sessions."""
    spec_dir = standard_dictionary_dir()
    qf = cfg.quickfix_dir
    lines = [
        "[DEFAULT]",
        f"ConnectionType={'initiator' if role == 'lp' else 'acceptor'}",
        f"FileStorePath={qf / 'store'}",
        f"FileLogPath={qf / 'log'}",
        "UseDataDictionary=Y",
        "ValidateUserDefinedFields=N",
        "PersistMessages=Y",
        "ResetOnLogon=N",
        "ResetOnLogout=N",
        "ResetOnDisconnect=N",
        "SocketNodelay=Y",
        "CheckLatency=Y",
        "MaxLatency=120",
        "LogoutTimeout=2",
        "",
    ]
    sessions = cfg.lps if role == "lp" else cfg.platforms
    for s in sessions:
        dictionary = spec_dir / f"{s.begin_string.replace('.', '')}.xml"
        lines += [
            "[SESSION]",
            f"BeginString={s.begin_string}",
            f"SenderCompID={s.sender_comp_id}",
            f"TargetCompID={s.target_comp_id}",
            f"StartTime={s.start_time}",
            f"EndTime={s.end_time}",
            f"HeartBtInt={s.heartbeat_interval}",
            f"DataDictionary={dictionary}",
        ]
        if role == "lp":
            lines += [f"SocketConnectHost={s.host}", f"SocketConnectPort={s.port}",
                      f"ReconnectInterval={s.reconnect_interval}"]
        else:
            lines += [f"SocketAcceptPort={s.port}"]
        lines.append("")
    return "\n".join(lines)


def session_id_key(begin: str, sender: str, target: str) -> str:
    return f"{begin}:{sender}->{target}"


class EngineApplication:
    """quickfix.Application for the engine's sessions (built lazily: importing
    quickfix resets SIGINT, so it is imported only when the engine starts)."""

    def __init__(self, cfg: EngineConfig, queue: InboundQueue, resume: dict[str, int]) -> None:
        self.cfg = cfg
        self.queue = queue
        self.resume = resume                       # session name -> last committed seq
        self.by_id: dict[str, SessionSpec] = {
            session_id_key(s.begin_string, s.sender_comp_id, s.target_comp_id): s
            for s in cfg.sessions}
        self.session_ids: dict[str, Any] = {}     # name -> quickfix.SessionID
        self.logged_on: set[str] = set()
        self.on_state_change: Callable[[str, bool], None] | None = None


def build_quickfix_application(app: EngineApplication) -> Any:
    fix = _import_quickfix()
    queue = app.queue
    by_id = app.by_id

    by_pointer: dict[int, SessionSpec | None] = {}

    def spec_of(session_id: Any) -> SessionSpec | None:
        # quickfix hands every callback of a session the same C++ SessionID
        # object: its address (no call into quickfix, so no GIL hand-off)
        # finds the spec after the first time.
        pointer = int(session_id.this)
        if pointer not in by_pointer:
            by_pointer[pointer] = by_id.get(session_id.toString())
        return by_pointer[pointer]

    class _App(fix.Application):  # type: ignore[misc,name-defined]
        def onCreate(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is None:
                    return
                app.session_ids[spec.name] = session_id
                last = app.resume.get(spec.name)
                session = fix.Session.lookupSession(session_id)
                if last is not None and session is not None:
                    session.setNextTargetMsgSeqNum(last + 1)
                log.info("fix_session_created", session=spec.name, role=spec.role,
                         next_target_seq=session.getExpectedTargetNum() if session else None,
                         next_sender_seq=session.getExpectedSenderNum() if session else None,
                         resumed_from=last)
            except Exception:
                log.exception("fix_callback_error", callback="onCreate")

        def onLogon(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is not None:
                    app.logged_on.add(spec.name)
                    log.info("fix_logon", session=spec.name)
                    if app.on_state_change is not None:
                        app.on_state_change(spec.name, True)
            except Exception:
                log.exception("fix_callback_error", callback="onLogon")

        def onLogout(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is not None and spec.name in app.logged_on:
                    app.logged_on.discard(spec.name)
                    log.info("fix_logout", session=spec.name)
                    if app.on_state_change is not None:
                        app.on_state_change(spec.name, False)
            except Exception:
                log.exception("fix_callback_error", callback="onLogout")

        def toAdmin(self, message: Any, session_id: Any) -> None:
            try:
                header = message.getHeader()
                msg_type = header.getField(35)
                spec = spec_of(session_id)
                if spec is None:
                    return
                if msg_type == "A" and spec.role == "lp":
                    if spec.username:
                        message.setField(553, spec.username)
                    if spec.password:
                        message.setField(554, spec.password)
                elif msg_type == "3":
                    # a session-level Reject we send: journal it (the message it
                    # answers never reaches the application)
                    queue.put(Inbound(spec.name, message.toString(), time.time(), "session_reject"))
            except Exception:
                log.exception("fix_callback_error", callback="toAdmin")

        def fromAdmin(self, message: Any, session_id: Any) -> None:
            reject: str | None = None
            try:
                header = message.getHeader()
                if header.getField(35) != "A":
                    return
                spec = spec_of(session_id)
                if spec is None:
                    return
                if spec.role == "platform" and (spec.username or spec.password):
                    user = message.getField(553) if message.isSetField(553) else None
                    password = message.getField(554) if message.isSetField(554) else None
                    if user != spec.username or password != spec.password:
                        reject = "invalid username or password"
                        log.warning("fix_logon_rejected", session=spec.name, reason=reject)
                if reject is None and message.isSetField(141) and message.getField(141) == "Y":
                    queue.put(Inbound(spec.name, message.toString(), time.time(), "reset"))
            except Exception:
                log.exception("fix_callback_error", callback="fromAdmin")
            if reject is not None:
                raise fix.RejectLogon(reject)

        def toApp(self, message: Any, session_id: Any) -> None:
            pass

        def fromApp(self, message: Any, session_id: Any) -> None:
            unsupported = False
            try:
                received = time.time()
                spec = spec_of(session_id)
                if spec is None:
                    return
                msg_type = message.getHeader().getField(35)
                unsupported = msg_type not in SUPPORTED_APP_TYPES
                queue.put(Inbound(spec.name, message.toString(), received,
                                  "unsupported" if unsupported else "app"))
            except Exception:
                log.exception("fix_callback_error", callback="fromApp")
            if unsupported:
                raise fix.UnsupportedMessageType()

    return _App()


class QuickfixSessions:
    """Starts and stops the initiator (LPs) and acceptor (platforms)."""

    def __init__(self, cfg: EngineConfig, app: EngineApplication) -> None:
        self.cfg = cfg
        self.app = app
        self._initiator: Any = None
        self._acceptor: Any = None
        self._qf_app: Any = None
        self._keep: list[Any] = []

    def start(self) -> None:
        fix = _import_quickfix()
        qf = self.cfg.quickfix_dir
        (qf / "store").mkdir(parents=True, exist_ok=True)
        (qf / "log").mkdir(parents=True, exist_ok=True)
        self._qf_app = build_quickfix_application(self.app)
        # quickfix keeps raw pointers to the settings and factories: their
        # Python proxies must outlive the initiator/acceptor, or stopping it
        # frees sessions through deleted factories (a segmentation fault)
        if self.cfg.lps:
            settings = self._settings(fix, "lp")
            store, logs = fix.FileStoreFactory(settings), fix.FileLogFactory(settings)
            self._keep += [settings, store, logs]
            self._initiator = fix.SocketInitiator(self._qf_app, store, settings, logs)
            self._initiator.start()
        if self.cfg.platforms:
            settings = self._settings(fix, "platform")
            store, logs = fix.FileStoreFactory(settings), fix.FileLogFactory(settings)
            self._keep += [settings, store, logs]
            self._acceptor = fix.SocketAcceptor(self._qf_app, store, settings, logs)
            self._acceptor.start()

    def _settings(self, fix: Any, role: str) -> Any:
        path: Path = self.cfg.quickfix_dir / f"{role}.cfg"
        path.write_text(session_settings_text(self.cfg, role))
        return fix.SessionSettings(str(path))

    def stop(self) -> None:
        """Log out every session (blocks up to the logout timeout).

        The initiator is stopped by quickfix.  The acceptor is not: its
        ``stop()`` closes the socket server while the acceptor's own thread
        may be closing it too.  A core dump shows the crash
        (``FIX::SocketServer::close`` from ``Acceptor::stop``, iterating the
        socket map), in about half of the stops just after a start.  Its
        sessions are logged out here instead, and its threads end with the
        process, which exits without running destructors (adapters/cli.py)."""
        fix = _import_quickfix()
        if self._initiator is not None:
            self._initiator.stop()
            self._initiator = None
        if self._acceptor is not None:
            names = [s.name for s in self.cfg.platforms]
            for name in names:
                session_id = self.app.session_ids.get(name)
                session = fix.Session.lookupSession(session_id) if session_id is not None else None
                if session is not None and session.isLoggedOn():
                    session.logout("engine stopping")
            deadline = time.monotonic() + LOGOUT_WAIT_S
            while time.monotonic() < deadline and any(n in self.app.logged_on for n in names):
                time.sleep(0.05)
            # the acceptor stays referenced (with the settings and factories it
            # points to) until the process exits
        else:
            self._keep.clear()

    def send_dont_know(self, session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        """DontKnowTrade (35=Q) for a report the engine cannot process."""
        body = [(tag, fields.get(tag) or ("NONE" if tag in (37, 17, 55) else "0"))
                for tag in (37, 17, 55, 54, 38, 32, 31)]
        return self._send(session, "Q", [*body, (127, reason), (58, text[:120])])

    def send_business_reject(self, session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        """BusinessMessageReject (35=j) for an application message the engine
        cannot use (a quote for an unknown pair, without a price, crossed)."""
        return self._send(session, "j", [(45, fields.get(34, "0")), (372, fields.get(35, "?")),
                                         (380, reason), (58, text[:120])])

    def _send(self, session: str, msg_type: str, body: list[tuple[int, str]]) -> bool:
        fix = _import_quickfix()
        session_id = self.app.session_ids.get(session)
        if session_id is None:
            return False
        msg = fix.Message()
        msg.getHeader().setField(fix.MsgType(msg_type))
        for tag, value in body:
            msg.setField(tag, value)
        try:
            return bool(fix.Session.sendToTarget(msg, session_id))
        except fix.SessionNotFound:
            return False
