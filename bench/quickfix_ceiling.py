#!/usr/bin/env python3
"""The ceiling quickfix's Python binding sets on this machine.

How many ExecutionReports per second a quickfix initiator in a Python
process can hand to Python at all, before the engine does anything with
them.  The counterparty is a blaster in its own process: it answers the
Logon, then writes ``--count`` ExecutionReports encoded before the session
started (so the sender costs almost nothing), and waits.  The receiving
process runs quickfix with the engine's session settings
(``session_settings_text``) and one of these applications:

- ``count``: a ``fromApp`` that only counts (the binding's own cost:
  quickfix parses and validates in C++, then SWIG wraps the message and the
  session id and calls Python), with quickfix's message log on (the
  engine's default, a file line per message) and off, and with the
  redacting Python log below (``redacting_log_factory``: what keeping our
  LP password out of quickfix's log with a Python Log would cost);
- ``callback``: the gateway's own application (``build_quickfix_application``:
  ``toString()``, receive time, one frame), its frames kept in a list;
- ``gateway``: the whole hand-off as the engine runs it: the gateway process
  (``run_engine.py gateway``) and, in this process, the engine's side
  (``FixGateway``) decoding its frames into the ``InboundQueue``, which
  nobody takes from.  Figures: from the first receipt in the gateway to the
  last message in the queue, and the CPU of the gateway process.

Figures: messages/s from the first to the last ``fromApp`` (``gateway``: to
the last message in the engine's queue).  Beside them, the in-process parse
rate measured in the same run (bench/intake.py's ``raw_parse_per_s``).

    python bench/quickfix_ceiling.py --count 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters import logs  # noqa: E402
from adapters.config import EngineConfig, SessionSpec  # noqa: E402
from adapters.fix.gateway import FixGateway, InboundQueue  # noqa: E402
from adapters.fix.quickfix import (  # noqa: E402
    EngineApplication,
    build_quickfix_application,
    session_settings_text,
)
from adapters.secure import redact  # noqa: E402
from bench.crash_test import free_port  # noqa: E402
from bench.intake import START, raw_parse_rate  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import Scenario, SimFill  # noqa: E402
from stp.fixwire import finish, format_utc_timestamp  # noqa: E402
from stp.inbound import SESSION_EVENTS  # noqa: E402


def blast(port: int, count: int) -> None:
    """The counterparty: accept, answer the Logon, write ``count`` reports."""
    fills: list[SimFill] = [e.lp for e in Scenario(seed=3, count=min(count, 5000), start=START).events()]  # type: ignore[misc]  # no faults: no side is missing
    bodies = [er_body(f) for f in fills]
    sent = format_utc_timestamp(time.time())     # within the engine's MaxLatency of the receipt
    frames = [finish("FIX.4.4", f"35=8\x0134={i + 2}\x0149=LP1\x0152={sent}\x0156=STP\x01"
                     + bodies[i % len(bodies)]) for i in range(count)]
    chunks = [b"".join(frames[i:i + 500]) for i in range(0, count, 500)]
    with socket.create_server(("127.0.0.1", port)) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
        with conn:
            received = b""
            while b"\x0135=A\x01" not in received or not received.endswith(b"\x01"):
                data = conn.recv(65536)
                if not data:
                    return
                received += data
            conn.sendall(finish("FIX.4.4", f"35=A\x0134=1\x0149=LP1\x0152={sent}\x0156=STP\x01"
                                "98=0\x01108=30\x01"))
            for chunk in chunks:
                conn.sendall(chunk)
            conn.settimeout(120)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def redacting_log_factory(fix: Any, directory: Path) -> Any:
    """A quickfix LogFactory in Python: quickfix's FileLog's files and line
    format, with password fields redacted (the Logon we send an LP carries
    our password).  Measured here, not used by the engine: it costs 11-15 us
    a message (the director call takes the GIL on quickfix's thread for
    every message), so the engine keeps quickfix's FileLog and overwrites
    the password in place instead (``scrub_session_files``).  The binding's
    director classes work when ``create`` returns its Log ``__disown__()``-ed:
    without it a SocketAcceptor's constructor hung in
    ``SwigDirector_LogFactory::create`` (``swig_acquire_ownership_obj``)."""
    from stp.fixwire import SendingTimeClock

    class _Log(fix.Log):  # type: ignore[misc]  # quickfix's classes are untyped
        def __init__(self, prefix: str) -> None:
            super().__init__()
            self._prefix = prefix
            self._clock = SendingTimeClock()
            self._open()

        def _open(self) -> None:
            self._messages = open(directory / f"{self._prefix}.messages.current.log", "a",  # noqa: SIM115
                                  encoding="latin-1", newline="\n")
            self._events = open(directory / f"{self._prefix}.event.current.log", "a",  # noqa: SIM115
                                encoding="latin-1", newline="\n")

        def _line(self, file: Any, text: str) -> None:
            try:
                file.write(f"{self._clock.format(time.time())} : {text}\n")
                file.flush()
            except Exception:
                print(f"log write failed: {self._prefix}", file=sys.stderr)

        def clear(self) -> None:
            for f in (self._messages, self._events):
                with contextlib.suppress(Exception):
                    f.truncate(0)

        def backup(self) -> None:
            pass

        def onIncoming(self, text: str) -> None:
            self._line(self._messages, redact(text) if "\x0135=A\x01" in text else text)

        def onOutgoing(self, text: str) -> None:
            self._line(self._messages, redact(text) if "\x0135=A\x01" in text else text)

        def onEvent(self, text: str) -> None:
            self._line(self._events, text)

    class _Factory(fix.LogFactory):  # type: ignore[misc]  # quickfix's classes are untyped
        def __init__(self) -> None:
            super().__init__()
            self.logs: list[Any] = []

        def create(self, *args: Any) -> Any:
            prefix = "GLOBAL"
            if args:
                sid = args[0]
                prefix = (f"{sid.getBeginString().getString()}-{sid.getSenderCompID().getString()}-"
                          f"{sid.getTargetCompID().getString()}")
            entry = _Log(prefix)
            self.logs.append(entry)
            return entry.__disown__()

        def destroy(self, entry: Any) -> None:
            pass

    return _Factory()


def receive(count: int, mode: str, message_log: bool | str) -> dict[str, object]:
    import quickfix as fix

    port = free_port()
    sender = subprocess.Popen([sys.executable, __file__, "--blast", str(port), "--count", str(count)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    sender.stdout.readline()                        # "ready": the frames are encoded
    done = threading.Event()
    times: list[float] = []
    n = 0

    class Counting(fix.Application):  # type: ignore[misc]  # quickfix's classes are untyped
        def onCreate(self, session_id: Any) -> None: pass
        def onLogon(self, session_id: Any) -> None: pass
        def onLogout(self, session_id: Any) -> None: pass
        def toAdmin(self, message: Any, session_id: Any) -> None: pass
        def fromAdmin(self, message: Any, session_id: Any) -> None: pass
        def toApp(self, message: Any, session_id: Any) -> None: pass

        def fromApp(self, message: Any, session_id: Any) -> None:
            nonlocal n
            n += 1
            if n == 1 or n == count:
                times.append(time.perf_counter())
            if n == count:
                done.set()

    with tempfile.TemporaryDirectory() as tmp_name:
        cfg = EngineConfig(path=None, database_url="sqlite://", state_dir=Path(tmp_name),
                           lps=(SessionSpec("lp", "LP1", port, "STP", "LP1", reconnect_interval=1),))
        for sub in ("store", "log"):
            (cfg.quickfix_dir / sub).mkdir(parents=True)
        path = cfg.quickfix_dir / "lp.cfg"
        path.write_text(session_settings_text(cfg, "lp"))
        settings = fix.SessionSettings(str(path))
        store = fix.FileStoreFactory(settings)
        logs = (redacting_log_factory(fix, cfg.quickfix_dir / "log") if message_log == "redacting"
                else fix.FileLogFactory(settings) if message_log
                else fix.ScreenLogFactory(False, False, False))
        frames: list[bytes] = []
        app = build_quickfix_application(EngineApplication(cfg, _ListSink(frames), {})) \
            if mode == "callback" else Counting()
        initiator = fix.SocketInitiator(app, store, settings, logs)
        cpu0 = time.process_time()
        initiator.start()
        deadline = time.monotonic() + max(60.0, count / 2000)
        while time.monotonic() < deadline and not done.is_set() and len(frames) < count:
            time.sleep(0.01)
        cpu1 = time.process_time()
        initiator.stop()
        del initiator
        if mode == "callback":
            n = len(frames)
            if n == count:
                times = [_received(frames[0]), _received(frames[-1])]
    sender.kill()
    sender.wait()
    if n < count or len(times) < 2:
        return {"mode": mode, "message_log": message_log, "received": n, "error": "timed out"}
    seconds = times[1] - times[0]
    return {"mode": mode, "message_log": message_log, "received": n,
            "per_s": round((count - 1) / seconds, 1),
            "process_cpu_us_per_message": round((cpu1 - cpu0) / count * 1e6, 1)}


class _ListSink:
    """The gateway's outbox without its writer: message frames kept in a list."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def put(self, frame: bytes) -> None:
        if frame[:1] == b"M":
            self.frames.append(frame)


def _received(frame: bytes) -> float:
    from adapters.fix.pipe import FrameReader, decode_message

    [(_, payload)] = FrameReader().feed(frame)
    return decode_message(payload, ("LP1",)).received


def through_gateway(count: int) -> dict[str, object]:
    """The gateway process and the engine's side of the pipe."""
    from bench.intake import proc_stat

    port = free_port()
    sender = subprocess.Popen([sys.executable, __file__, "--blast", str(port), "--count", str(count)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    sender.stdout.readline()

    async def run(tmp: Path) -> dict[str, object]:
        cfg_path = tmp / "engine.toml"
        cfg_path.write_text(f'[engine]\nstate_dir = "{tmp}"\n[database]\nurl = "sqlite://"\n'
                            f'[[lp]]\nname = "LP1"\nhost = "127.0.0.1"\nport = {port}\n'
                            'sender_comp_id = "STP"\ntarget_comp_id = "LP1"\nreconnect_interval = 1\n')
        from adapters import config

        cfg = config.load(str(cfg_path))
        queue = InboundQueue(maximum=count + 1)
        gateway = FixGateway(cfg, queue, resume=dict, log_level="error")
        async with gateway:
            assert gateway.pid is not None
            cpu0, own0 = proc_stat(gateway.pid)[0], time.process_time()
            deadline = time.monotonic() + max(60.0, count / 2000)
            while time.monotonic() < deadline and len(queue) < count + 1:     # + the session_logon event
                await asyncio.sleep(0.001)
            last = time.time()
            cpu1, own1 = proc_stat(gateway.pid)[0], time.process_time()
        items = [i for i in queue.take(len(queue)) if i.kind not in SESSION_EVENTS][:count]
        if len(items) < count:
            return {"mode": "gateway", "received": len(items), "error": "timed out"}
        return {"mode": "gateway", "message_log": True, "received": len(items),
                "per_s": round((count - 1) / (last - items[0].received), 1),
                "gateway_cpu_us_per_message": round((cpu1 - cpu0) / count * 1e6, 1),
                "engine_side_cpu_us_per_message": round((own1 - own0) / count * 1e6, 1)}

    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            return asyncio.run(run(Path(tmp_name)))
    finally:
        sender.kill()
        sender.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--blast", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", default=None,
                    help="runs to do, e.g. count:True,count:redacting,callback:True,gateway (default: all)")
    args = ap.parse_args()
    if args.blast is not None:
        blast(args.blast, args.count)
        return 0
    logs.configure("error", stream=sys.stderr)      # the figures alone on stdout
    result: dict[str, object] = {"count": args.count, "raw_parse_per_s": round(raw_parse_rate(), 1),
                                 "runs": []}
    runs = result["runs"]
    assert isinstance(runs, list)
    only = args.only.split(",") if args.only else None
    for mode, message_log in (("count", True), ("count", False), ("count", "redacting"), ("callback", True)):
        if only is not None and f"{mode}:{message_log}" not in only:
            continue
        runs.append(receive(args.count, mode, message_log))
    if only is None or "gateway" in only:
        runs.append(through_gateway(args.count))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
