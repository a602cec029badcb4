"""The FIX gateway process's main: quickfix's sessions, fed and drained over
the pipe to the engine (``adapters.fix.gateway`` is the engine's side)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque

import structlog

from adapters.config import EngineConfig, gateway_time_zone
from adapters.fix.oversize import ChecksumOverflowWatch
from adapters.fix.pipe import Frame, FrameReader, GatewayOutbox, decode_event, event_frame, read_frame
from adapters.fix.quickfix import EngineApplication, QuickfixSessions

log = structlog.get_logger("engine.gateway")


def _die_with_parent() -> None:
    """Linux: SIGKILL when the engine dies, even if this process is busy."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)          # PR_SET_PDEATHSIG
    parent = os.environ.get("STP_GATEWAY_PARENT")
    if parent is not None and os.getppid() != int(parent):
        os._exit(0)                                      # it died before prctl took effect


def run_gateway(cfg: EngineConfig) -> int:
    """The child's main: quickfix sessions until ``stop`` or end of stdin."""
    _die_with_parent()
    out_fd = os.dup(1)          # the engine's pipe; anything printed goes to stderr instead
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader, pending = FrameReader(), deque[Frame]()
    first = read_frame(0, reader, pending)
    if first is None:
        return 0
    start = decode_event(first[1])
    if start.get("event") != "start":
        log.error("fix_gateway_protocol_error", expected="start", got=start.get("event"))
        return 2
    outbox = GatewayOutbox(out_fd)
    threading.Thread(target=outbox.run, name="gateway-writer", daemon=True).start()
    # quickfix's UseLocalTime=Y reads the process's local time zone
    os.environ["TZ"] = gateway_time_zone(cfg)
    time.tzset()
    app = EngineApplication(cfg, outbox, {k: int(v) for k, v in start.get("resume", {}).items()},
                            days=dict(start.get("days", {})),
                            outbound={k: int(v) for k, v in start.get("outbound", {}).items()})
    sessions = QuickfixSessions(cfg, app)
    # quickfix drops a message whose CheckSum sum overflows before fromApp: answered from its logs
    overflow = ChecksumOverflowWatch(cfg, app.session_ids, outbox.put)
    try:
        sessions.start()
    except Exception as exc:       # quickfix's own errors (a port in use, a bad setting)
        log.error("fix_gateway_start_error", error=str(exc)[:300])
        return 3
    # quickfix puts SIGINT back to the default when its sessions start
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    overflow.start()
    outbox.put(event_frame("ready", sessions=[s.name for s in cfg.sessions], pid=os.getpid()))
    while True:
        frame = read_frame(0, reader, pending)
        if frame is None:
            # the engine is gone: it resumes from its committed sequence numbers
            log.warning("fix_gateway_orphaned")
            return _exit(0)
        command = decode_event(frame[1])
        name = command.get("event")
        if name == "send":
            try:
                ok = sessions.send(command["session"], command["msg_type"],
                                   [(int(t), str(v)) for t, v in command["body"]])
            except Exception as exc:          # a value quickfix's binding refuses: not a reason to die
                log.error("fix_send_error", session=command["session"], error=repr(exc)[:300])
                ok = False
            if not ok:
                log.warning("fix_send_failed", session=command["session"], msg_type=command["msg_type"])
                outbox.put(event_frame("send_failed", session=command["session"]))
        elif name == "set_seq":
            result = sessions.set_sequence(command["session"], command.get("next_target"),
                                           command.get("next_sender"), str(command.get("reason") or ""))
            outbox.put(event_frame("seq_set", session=command["session"], request=command.get("request"),
                                   at_us=int(time.time() * 1_000_000), **result))
        elif name == "stop":
            sessions.stop()
            outbox.flush()
            return _exit(0)
        else:
            log.error("fix_gateway_protocol_error", got=name)


def _exit(code: int) -> int:
    """quickfix's threads are still running: leave without the destructors
    that would stop them (an acceptor's stop races its own thread and
    crashes: see QuickfixSessions.stop)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
