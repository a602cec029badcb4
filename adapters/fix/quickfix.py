"""The FIX sessions, run by quickfix inside the gateway process
(adapters/fix/gateway.py).

quickfix calls back on its own threads.  The callbacks here do the least
possible and never raise into quickfix (an uncaught Python exception there
kills the process; only quickfix's own exception types are rethrown, on
purpose): ``fromApp`` takes the message's string form and the receive time
and puts one frame on the gateway's ``GatewayOutbox``, whose writer thread
sends it to the engine.

Exactly once: quickfix moves its inbound sequence number on when ``fromApp``
returns and its file store never fsyncs, so the engine does not trust it.
The database holds the last inbound MsgSeqNum committed per session; when
quickfix creates a session (``onCreate``, before any logon) its expected
inbound sequence number is set to that + 1, and the counterparty resends the
rest.  Duplicates are then recognised by their business key.
"""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from adapters.config import EngineConfig, SessionSpec, gateway_time_zone, session_schedule
from adapters.fix.guard import LogonGuard, confine_to_loopback
from adapters.fix.oversize import largest_field_tag
from adapters.fix.pipe import event_frame, message_bytes_frame, message_frame
from adapters.fix.poison import SUPPORTED_APP_TYPES, session_file_prefix
from adapters.secure import redact
from stp.inbound import MessageKind
from stp.sessions import DAY_NAMES, UTC_ZONES, SessionSchedule, session_day

log = structlog.get_logger("engine.fix")

LOGOUT_WAIT_S = 3.0       # LogoutTimeout (2 s) and a heartbeat of quickfix's timer
# A test aid, never set in production: the gateway process exits at once
# (status 86, as if it had crashed) on an inbound application message whose
# text contains this string (tests/integration/test_gateway_input.py drives
# the poison-message quarantine with it).  Read once when the callbacks are
# built: without it the callbacks have no test branch at all.
CRASH_ON_ENV = "STP_TEST_GATEWAY_CRASH_ON"
CRASH_STATUS = 86


class FrameSink(Protocol):
    def put(self, frame: bytes) -> None: ...


def msg_type_of(raw: str) -> str:
    """MsgType (35) of a message quickfix has parsed: always the third field."""
    start = raw.find("\x0135=")
    if start < 0:
        return ""
    end = raw.find("\x01", start + 4)
    return raw[start + 4:end if end >= 0 else len(raw)]



def standard_dictionary_dir() -> Path:
    """Where the quickfix package installs FIX4x.xml (``share/quickfix``), or
    ``$STP_FIX_SPEC_DIR``."""
    env = os.environ.get("STP_FIX_SPEC_DIR")
    if env:
        return Path(env)
    for prefix in (sys.prefix, sysconfig.get_path("data"), sys.base_prefix):
        candidate = Path(prefix) / "share" / "quickfix"
        if (candidate / "FIX44.xml").exists():
            return candidate
    raise FileNotFoundError("FIX data dictionaries not found: install the quickfix package (it ships "
                            "share/quickfix/FIX44.xml) or set STP_FIX_SPEC_DIR")

def _import_quickfix() -> Any:
    import quickfix

    return quickfix


def session_settings_text(cfg: EngineConfig, role: str, accept_ports: dict[str, int] | None = None) -> str:
    """quickfix settings for the configured LP (initiator) or platform (acceptor) sessions.

    ``accept_ports``: the loopback port quickfix's acceptor takes for each
    platform session behind the pre-logon guard (adapters/fix/guard.py); the
    configured port is the guard's."""
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
    local_zone = gateway_time_zone(cfg)
    for s in sessions:
        dictionary = spec_dir / f"{s.begin_string.replace('.', '')}.xml"
        lines += [
            "[SESSION]",
            f"BeginString={s.begin_string}",
            f"SenderCompID={s.sender_comp_id}",
            f"TargetCompID={s.target_comp_id}",
            *schedule_settings(session_schedule(s), local_zone),
            f"HeartBtInt={s.heartbeat_interval}",
            f"DataDictionary={dictionary}",
        ]
        if role == "lp":
            lines += [f"SocketConnectHost={s.host}", f"SocketConnectPort={s.port}",
                      f"ReconnectInterval={s.reconnect_interval}"]
        else:
            lines += [f"SocketAcceptPort={(accept_ports or {}).get(s.name, s.port)}"]
        lines.append("")
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def schedule_settings(schedule: SessionSchedule, local_zone: str = "UTC") -> list[str]:
    """quickfix's lines for a session's schedule (README: Session schedules).
    The gateway runs with TZ = ``local_zone`` (``gateway_time_zone``): a
    session in that zone uses quickfix's local time (UseLocalTime=Y, read in
    whole seconds: the day changes exactly at start_time); a UTC session
    beside sessions in another zone uses quickfix's UTC clock (sub-second:
    out of session, and reset, from end_time, the second before start_time)."""
    if schedule.non_stop:
        return ["NonStopSession=Y"]
    lines = [f"StartTime={schedule.start:%H:%M:%S}", f"EndTime={schedule.end:%H:%M:%S}"]
    if schedule.start_day is not None and schedule.end_day is not None:
        lines += [f"StartDay={DAY_NAMES[schedule.start_day - 1].title()}",
                  f"EndDay={DAY_NAMES[schedule.end_day - 1].title()}"]
    local = schedule.zone == local_zone or (schedule.utc and local_zone in UTC_ZONES)
    lines.append(f"UseLocalTime={'Y' if local else 'N'}")
    return lines


def session_id_key(begin: str, sender: str, target: str) -> str:
    return f"{begin}:{sender}->{target}"


def scrub_passwords(paths: list[Path], passwords: list[str], tail: int | None = None) -> int:
    """Overwrite, in place and with as many characters, every Password (554)
    field holding one of ``passwords`` in the files under ``paths``
    (quickfix's store and message logs; ``tail``: only their last bytes).
    The same length keeps the store's offsets valid, and quickfix appends
    to both (its writes go to the end); the Logons in the store are never
    resent (admin messages are gap-filled).  Returns how many were
    overwritten."""
    needles = [(b"\x01554=" + p.encode() + b"\x01", b"\x01554=" + b"*" * len(p.encode()) + b"\x01")
               for p in passwords if p]
    if not needles:
        return 0
    longest = max(len(n) for n, _ in needles)
    count = 0
    files = [f for path in paths for f in ([path] if path.is_file() else sorted(path.glob("*")))
             if f.is_file()]
    for file in files:
        try:
            with open(file, "r+b") as fh:
                size = fh.seek(0, os.SEEK_END)
                pos = max(0, size - tail) if tail is not None else 0
                while pos < size:
                    fh.seek(pos)
                    chunk = fh.read(1 << 20)
                    for needle, stars in needles:
                        at = chunk.find(needle)
                        while at >= 0:
                            fh.seek(pos + at)
                            fh.write(stars)
                            count += 1
                            at = chunk.find(needle, at + len(needle))
                    if len(chunk) < longest:
                        break
                    pos += len(chunk) - longest + 1
        except OSError as exc:
            log.warning("fix_scrub_failed", file=str(file), error=str(exc))
    return count


def scrub_session_files(cfg: EngineConfig, spec: SessionSpec) -> None:
    """Our password out of an LP session's store and message log: quickfix
    persists and logs the Logon it sends us, password included (a Python
    Log that redacts it works, but costs 11-15 us a message: measured in
    bench/quickfix_ceiling.py).  Called just after the Logon is sent and when
    its answer arrives; only the files' last 256 KiB are read."""
    prefix = session_file_prefix(spec)
    qf = cfg.quickfix_dir
    found = scrub_passwords([qf / "store" / f"{prefix}.body", qf / "log" / f"{prefix}.messages.current.log"],
                            [spec.password or ""], tail=256 * 1024)
    if found:
        log.info("fix_password_scrubbed", session=spec.name, fields=found)


class EngineApplication:
    """quickfix.Application for the engine's sessions (built lazily: importing
    quickfix resets SIGINT, so it is imported only in the gateway)."""

    def __init__(self, cfg: EngineConfig, sink: FrameSink, resume: dict[str, int],
                 days: dict[str, str | None] | None = None,
                 outbound: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.resume = resume                       # session name -> last committed seq
        self.days = days or {}                     # session name -> the session day it was committed in
        self.outbound = outbound or {}             # session name -> next outbound seq set by ops
        self.reasons: dict[str, str] = {}          # session name -> why it was last logged out
        self.attempting: set[str] = set()          # Logon sent, no logout reported since
        # a session's index in cfg.sessions names it on the wire
        self.by_id: dict[str, tuple[SessionSpec, int]] = {
            session_id_key(s.begin_string, s.sender_comp_id, s.target_comp_id): (s, i)
            for i, s in enumerate(cfg.sessions)}
        self.session_ids: dict[str, Any] = {}     # name -> quickfix.SessionID
        self.logged_on: set[str] = set()
        self.max_message_bytes = cfg.max_message_bytes


def build_quickfix_application(app: EngineApplication) -> Any:
    fix = _import_quickfix()
    put = app.sink.put
    by_id = app.by_id

    by_pointer: dict[int, tuple[SessionSpec, int] | None] = {}

    def known(session_id: Any) -> tuple[SessionSpec, int] | None:
        # quickfix hands every callback of a session the same C++ SessionID
        # object: its address (no call into quickfix) finds the spec after
        # the first time.
        pointer = int(session_id.this)
        if pointer not in by_pointer:
            by_pointer[pointer] = by_id.get(session_id.toString())
        return by_pointer[pointer]

    def spec_of(session_id: Any) -> SessionSpec | None:
        found = known(session_id)
        return None if found is None else found[0]

    cap = app.max_message_bytes

    def frame(kind: MessageKind, session_id: Any, message: Any, received: float) -> None:
        # admin messages only (a Logon with ResetSeqNumFlag, a Reject): never
        # a password in the journal
        found = known(session_id)
        if found is not None:
            put(message_frame(kind, found[1], int(received * 1_000_000), redact(message.toString()), cap))

    class _App(fix.Application):  # type: ignore[misc,name-defined]  # fix: quickfix, imported at run time (Any)
        def onCreate(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is None:
                    return
                app.session_ids[spec.name] = session_id
                last = app.resume.get(spec.name)
                session = fix.Session.lookupSession(session_id)
                committed_day = app.days.get(spec.name)
                today = session_day(session_schedule(spec), datetime.now(UTC))
                if last is not None and spec.name in app.days and committed_day != today:
                    # the session day changed since the engine looked: both sides count
                    # from 1 again (quickfix has reset, or resets at its next tick)
                    log.info("fix_session_new_day", session=spec.name, committed_day=committed_day,
                             session_day=today, committed_seq=last)
                    last = 0
                if last is not None and session is not None:
                    session.setNextTargetMsgSeqNum(last + 1)
                outbound = app.outbound.get(spec.name)
                if outbound is not None and session is not None:
                    session.setNextSenderMsgSeqNum(outbound)
                log.info("fix_session_created", session=spec.name, role=spec.role,
                         next_target_seq=session.getExpectedTargetNum() if session else None,
                         next_sender_seq=session.getExpectedSenderNum() if session else None,
                         resumed_from=last, session_day=today, outbound_set=outbound)
            except Exception:
                log.exception("fix_callback_error", callback="onCreate")

        def onLogon(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is not None:
                    app.logged_on.add(spec.name)
                    app.reasons.pop(spec.name, None)
                    session = fix.Session.lookupSession(session_id)
                    # quickfix's numbers now, before any application message of
                    # this logon: the engine sees a reset when they went back
                    next_target = session.getExpectedTargetNum() if session is not None else None
                    next_sender = session.getExpectedSenderNum() if session is not None else None
                    put(event_frame("session_logon", session=spec.name, next_target=next_target,
                                    next_sender=next_sender, at_us=int(time.time() * 1_000_000)))
                    log.info("fix_logon", session=spec.name, next_target=next_target,
                             next_sender=next_sender)
            except Exception:
                log.exception("fix_callback_error", callback="onLogon")

        def onLogout(self, session_id: Any) -> None:
            try:
                spec = spec_of(session_id)
                if spec is not None:
                    was_logged_on = spec.name in app.logged_on
                    attempted = spec.name in app.attempting
                    app.logged_on.discard(spec.name)
                    app.attempting.discard(spec.name)
                    # the last reason given stays until the next logon: an attempt
                    # that ends without one (the connection dropped) is most likely
                    # refused for the same reason
                    reason = app.reasons.get(spec.name) or (
                        "disconnected" if was_logged_on else "logon not answered (disconnected)")
                    if was_logged_on or attempted:
                        put(event_frame("session_logout", session=spec.name, reason=reason,
                                        was_logged_on=was_logged_on, at_us=int(time.time() * 1_000_000)))
                        log.info("fix_logout", session=spec.name, reason=reason, was_logged_on=was_logged_on)
            except Exception:
                log.exception("fix_callback_error", callback="onLogout")

        def toAdmin(self, message: Any, session_id: Any) -> None:
            try:
                header = message.getHeader()
                msg_type = header.getField(35)
                spec = spec_of(session_id)
                if spec is None:
                    return
                if msg_type == "A":
                    app.attempting.add(spec.name)
                if msg_type == "A" and spec.role == "lp":
                    if spec.username:
                        message.setField(553, spec.username)
                    if spec.password:
                        message.setField(554, spec.password)
                        # quickfix stores and logs it once this returns
                        threading.Timer(0.05, scrub_session_files, (app.cfg, spec)).start()
                elif msg_type == "3":
                    # a session-level Reject we send: journal it (the message it
                    # answers never reaches the application)
                    frame("session_reject", session_id, message, time.time())
                elif msg_type == "5":
                    text = message.getField(58) if message.isSetField(58) else ""
                    reason = f"we logged out: {text}" if text else "we logged out"
                    app.reasons[spec.name] = reason
                    if spec.role == "platform" and spec.name not in app.logged_on:
                        # a platform's Logon refused (sequence number, password): quickfix
                        # calls no onLogout for a session it never logged on
                        put(event_frame("session_logout", session=spec.name, reason=reason,
                                        was_logged_on=False, at_us=int(time.time() * 1_000_000)))
            except Exception:
                log.exception("fix_callback_error", callback="toAdmin")

        def fromAdmin(self, message: Any, session_id: Any) -> None:
            # a platform's credentials are checked by the pre-logon guard
            # (adapters/fix/guard.py) before quickfix sees the Logon: quickfix
            # resets sequence numbers on ResetSeqNumFlag=Y before calling this
            try:
                header = message.getHeader()
                msg_type = header.getField(35)
                spec = spec_of(session_id)
                if spec is None:
                    return
                if msg_type == "5":
                    text = message.getField(58) if message.isSetField(58) else ""
                    app.reasons[spec.name] = (f"counterparty logged out: {text}" if text
                                              else "counterparty logged out")
                if msg_type != "A":
                    return
                if spec.role == "lp" and spec.password:
                    scrub_session_files(app.cfg, spec)    # our Logon is stored and logged by now
                if message.isSetField(141) and message.getField(141) == "Y":
                    frame("reset", session_id, message, time.time())
            except Exception:
                log.exception("fix_callback_error", callback="fromAdmin")

        def toApp(self, message: Any, session_id: Any) -> None:
            pass

        def fromApp(self, message: Any, session_id: Any) -> None:
            unsupported = False
            oversized = 0
            try:
                received = time.time()
                found = known(session_id)
                if found is None:
                    return
                raw = message.toString()
                # quickfix's binding hands invalid UTF-8 over as surrogate
                # escapes: encoded back the same way, the bytes are exact
                data = raw.encode("utf-8", "surrogateescape")
                if len(data) > cap:
                    # journaled truncated with its true size; answered with a
                    # session Reject (quickfix moves the sequence number on)
                    oversized = largest_field_tag(data) or 58
                    put(message_bytes_frame("oversized", found[1], int(received * 1_000_000), data, cap))
                    log.warning("fix_message_oversized", session=found[0].name, size=len(data),
                                max_message_bytes=cap, ref_tag=oversized)
                else:
                    unsupported = msg_type_of(raw) not in SUPPORTED_APP_TYPES
                    put(message_bytes_frame("unsupported" if unsupported else "app", found[1],
                                            int(received * 1_000_000), data, cap))
            except Exception:
                log.exception("fix_callback_error", callback="fromApp")
            if oversized:
                raise fix.IncorrectTagValue(oversized)
            if unsupported:
                raise fix.UnsupportedMessageType()

    crash_on = os.environ.get(CRASH_ON_ENV)
    if crash_on:
        log.warning("fix_gateway_test_crash_hook", pattern=crash_on, note="a test aid: never in production")

        class _CrashingApp(_App):
            def fromApp(self, message: Any, session_id: Any) -> None:
                if crash_on in message.toString():
                    os._exit(CRASH_STATUS)
                super().fromApp(message, session_id)

        return _CrashingApp()
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
        self.guard: LogonGuard | None = None
        self.loopback_ports: dict[str, int] = {}     # platform -> quickfix's loopback port

    def start(self) -> None:
        fix = _import_quickfix()
        qf = self.cfg.quickfix_dir
        (qf / "store").mkdir(parents=True, exist_ok=True)
        (qf / "log").mkdir(parents=True, exist_ok=True)
        self._qf_app = build_quickfix_application(self.app)
        # quickfix keeps raw pointers to the settings and factories: their
        # Python proxies must outlive the initiator/acceptor, or stopping it
        # frees sessions through deleted factories (a segmentation fault)
        # passwords a store or log of an older version kept in clear (in the
        # background: the logs may be large)
        threading.Thread(target=scrub_passwords, name="fix-scrub", daemon=True,
                         args=([qf / "store", qf / "log"], [s.password for s in self.cfg.sessions
                                                           if s.password])).start()
        if self.cfg.lps:
            settings = self._settings(fix, "lp")
            store, logs = fix.FileStoreFactory(settings), fix.FileLogFactory(settings)
            self._keep += [settings, store, logs]
            self._initiator = fix.SocketInitiator(self._qf_app, store, settings, logs)
            self._initiator.start()
        if self.cfg.platforms:
            # quickfix's acceptor behind the pre-logon guard (adapters/fix/guard.py)
            internal = {s.name: _free_port() for s in self.cfg.platforms}
            settings = self._settings(fix, "platform", internal)
            store, logs = fix.FileStoreFactory(settings), fix.FileLogFactory(settings)
            self._keep += [settings, store, logs]
            self._acceptor = fix.SocketAcceptor(self._qf_app, store, settings, logs)
            self._acceptor.start()
            self.loopback_ports = {name: confine_to_loopback(port) for name, port in internal.items()}
            self.guard = LogonGuard([("", s.port, [s], ("127.0.0.1", self.loopback_ports[s.name]))
                                     for s in self.cfg.platforms], on_refused=self._logon_refused)
            self.guard.start()
            log.info("fix_guard_listening", ports={s.name: s.port for s in self.cfg.platforms},
                     quickfix_loopback_ports=self.loopback_ports)

    def _logon_refused(self, spec: SessionSpec, reason: str) -> None:
        """The guard refused a platform's Logon (its credentials): quickfix
        never saw it, so the engine hears of it here, as of a logon refused."""
        reason = f"we refused the logon: {reason}"
        self.app.reasons[spec.name] = reason
        self.app.sink.put(event_frame("session_logout", session=spec.name, reason=reason,
                                      was_logged_on=False, at_us=int(time.time() * 1_000_000)))

    def _settings(self, fix: Any, role: str, accept_ports: dict[str, int] | None = None) -> Any:
        path: Path = self.cfg.quickfix_dir / f"{role}.cfg"
        path.write_text(session_settings_text(self.cfg, role, accept_ports))
        return fix.SessionSettings(str(path))

    def stop(self) -> None:
        """Log out every session (blocks up to the logout timeout).

        The initiator is stopped by quickfix.  The acceptor is not: its
        ``stop()`` closes the socket server while the acceptor's own thread
        may be closing it too.  A core dump shows the crash
        (``FIX::SocketServer::close`` from ``Acceptor::stop``, iterating the
        socket map), in about half of the stops just after a start.  Its
        sessions are logged out here instead, and its threads end with the
        process, which exits without running destructors (app/cli.py)."""
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

    def set_sequence(self, session: str, next_target: int | None, next_sender: int | None,
                     reason: str) -> dict[str, Any]:
        """Ops' ``session reset``: log the session out if it is logged on (its
        counterparty, or our initiator, logs on again with the new numbers),
        then set quickfix's next inbound (target) and outbound (sender)
        MsgSeqNum.  Returns the numbers before and after."""
        fix = _import_quickfix()
        session_id = self.app.session_ids.get(session)
        found = fix.Session.lookupSession(session_id) if session_id is not None else None
        if found is None:
            return {"ok": False, "error": f"no quickfix session {session}"}
        if found.isLoggedOn():
            found.logout(reason[:100])            # quickfix's logout also disables the session
            deadline = time.monotonic() + LOGOUT_WAIT_S
            while time.monotonic() < deadline and found.isLoggedOn():
                time.sleep(0.05)
        before = {"next_target": found.getExpectedTargetNum(), "next_sender": found.getExpectedSenderNum()}
        if next_target is not None:
            found.setNextTargetMsgSeqNum(next_target)
        if next_sender is not None:
            found.setNextSenderMsgSeqNum(next_sender)
        found.logon()                             # enabled again: it logs on with the new numbers
        after = {"next_target": found.getExpectedTargetNum(), "next_sender": found.getExpectedSenderNum()}
        log.warning("fix_sequence_set", session=session, before=before, after=after, reason=reason)
        return {"ok": True, "before": before, "after": after}

    def send(self, session: str, msg_type: str, body: list[tuple[int, str]]) -> bool:
        """An application message to a session's counterparty (a
        DontKnowTrade, a BusinessMessageReject): quickfix numbers, stores and
        sends it."""
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
