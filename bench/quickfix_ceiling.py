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
  session id and calls Python);
- ``handoff``: the engine's own application (``build_quickfix_application``:
  MsgType, ``toString()``, receive time, onto the ``InboundQueue``), with
  nobody taking from the queue;

each with quickfix's message log on (the engine's default, a file line per
message) and off.  Figures: messages/s from the first to the last
``fromApp``.  Beside them, the in-process parse rate measured in the same
run (bench/intake.py's ``raw_parse_per_s``).

    python bench/quickfix_ceiling.py --count 100000
"""

from __future__ import annotations

import argparse
import asyncio
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
from adapters.fix.codec import finish, format_utc_timestamp  # noqa: E402
from adapters.quickfix_sessions import (  # noqa: E402
    EngineApplication,
    InboundQueue,
    build_quickfix_application,
    session_settings_text,
)
from adapters.sim.fixmsg import er_body  # noqa: E402
from adapters.sim.scenario import Scenario  # noqa: E402
from bench.crash_test import free_port  # noqa: E402
from bench.intake import START, raw_parse_rate  # noqa: E402


def blast(port: int, count: int) -> None:
    """The counterparty: accept, answer the Logon, write ``count`` reports."""
    fills = [e.lp for e in Scenario(seed=3, count=min(count, 5000), start=START).events()]
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


def receive(count: int, mode: str, message_log: bool) -> dict[str, object]:
    import quickfix as fix

    port = free_port()
    sender = subprocess.Popen([sys.executable, __file__, "--blast", str(port), "--count", str(count)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    sender.stdout.readline()                        # "ready": the frames are encoded
    done = threading.Event()
    times: list[float] = []
    n = 0

    class Counting(fix.Application):  # type: ignore[misc,name-defined]
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
        logs = fix.FileLogFactory(settings) if message_log else fix.ScreenLogFactory(False, False, False)
        loop = asyncio.new_event_loop()          # the queue wakes it; nothing runs it here
        queue = InboundQueue(loop, maximum=count + 1)
        app = build_quickfix_application(EngineApplication(cfg, queue, {})) if mode == "handoff" \
            else Counting()
        initiator = fix.SocketInitiator(app, store, settings, logs)
        cpu0 = time.process_time()
        initiator.start()
        deadline = time.monotonic() + max(60.0, count / 2000)
        while time.monotonic() < deadline and not done.is_set() and len(queue) < count:
            time.sleep(0.01)
        cpu1 = time.process_time()
        initiator.stop()
        del initiator
        loop.close()
        if mode == "handoff":
            handed = queue.take(count)
            n = len(handed)
            if n == count:
                times = [handed[0].received, handed[-1].received]
    sender.kill()
    sender.wait()
    if n < count or len(times) < 2:
        return {"mode": mode, "message_log": message_log, "received": n, "error": "timed out"}
    seconds = times[1] - times[0]
    return {"mode": mode, "message_log": message_log, "received": n,
            "per_s": round((count - 1) / seconds, 1),
            "process_cpu_us_per_message": round((cpu1 - cpu0) / count * 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--blast", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.blast is not None:
        blast(args.blast, args.count)
        return 0
    logs.configure("error", stream=sys.stderr)      # the figures alone on stdout
    result: dict[str, object] = {"count": args.count, "raw_parse_per_s": round(raw_parse_rate(), 1),
                                 "runs": []}
    for mode in ("count", "handoff"):
        for message_log in (True, False):
            runs = result["runs"]
            assert isinstance(runs, list)
            runs.append(receive(args.count, mode, message_log))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
