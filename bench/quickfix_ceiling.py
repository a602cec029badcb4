#!/usr/bin/env python3
"""The ceiling quickfix's Python binding sets on this machine.

How many ExecutionReports per second a quickfix initiator in a Python
process can hand to Python at all, before the engine does anything with
them.  The counterparty is a blaster in its own process: it answers the
Logon, then writes ``--count`` ExecutionReports encoded before the session
started (so the sender costs almost nothing), and waits.  The receiving
process runs quickfix with the engine's session settings and one of these
``fromApp`` callbacks:

- ``count``: only counts (the binding's own cost: quickfix parses and
  validates in C++, then SWIG wraps the message and the session id and
  calls Python);
- ``handoff``: what the engine's callback does (MsgType, ``toString()``,
  receive time, append to a deque);

each with quickfix's message log on (the engine's default, a file line per
message) and off.  Figures: messages/s from the first to the last
``fromApp``.  Beside them, the in-process parse rate measured in the same
run (bench/intake.py's ``raw_parse_per_s``).

    python bench/quickfix_ceiling.py --count 100000
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.fix.codec import finish  # noqa: E402
from adapters.fix.dictionary import standard_dictionary_dir  # noqa: E402
from adapters.sim.fixmsg import er_body  # noqa: E402
from adapters.sim.scenario import Scenario  # noqa: E402
from bench.crash_test import free_port  # noqa: E402
from bench.intake import START, raw_parse_rate  # noqa: E402

SENDING_TIME = "20300107-09:00:00.000"


def blast(port: int, count: int) -> None:
    """The counterparty: accept, answer the Logon, write ``count`` reports."""
    fills = [e.lp for e in Scenario(seed=3, count=min(count, 5000), start=START).events()]
    bodies = [er_body(f) for f in fills]
    frames = [finish("FIX.4.4", f"35=8\x0134={i + 2}\x0149=LP1\x0152={SENDING_TIME}\x0156=STP\x01"
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
            conn.sendall(finish("FIX.4.4", f"35=A\x0134=1\x0149=LP1\x0152={SENDING_TIME}\x0156=STP\x01"
                                "98=0\x01108=30\x01"))
            for chunk in chunks:
                conn.sendall(chunk)
            conn.settimeout(120)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def settings_text(tmp: Path, port: int) -> str:
    return "\n".join([
        "[DEFAULT]", "ConnectionType=initiator", f"FileStorePath={tmp / 'store'}",
        f"FileLogPath={tmp / 'log'}", "UseDataDictionary=Y", "ValidateUserDefinedFields=N",
        "PersistMessages=Y", "ResetOnLogon=N", "SocketNodelay=Y", "CheckLatency=N",
        "StartTime=00:00:00", "EndTime=00:00:00", "HeartBtInt=30", "ReconnectInterval=1", "",
        "[SESSION]", "BeginString=FIX.4.4", "SenderCompID=STP", "TargetCompID=LP1",
        f"DataDictionary={standard_dictionary_dir() / 'FIX44.xml'}",
        "SocketConnectHost=127.0.0.1", f"SocketConnectPort={port}", "",
    ])


def receive(count: int, mode: str, message_log: bool) -> dict[str, object]:
    import quickfix as fix

    port = free_port()
    sender = subprocess.Popen([sys.executable, __file__, "--blast", str(port), "--count", str(count)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    sender.stdout.readline()                        # "ready": the frames are encoded
    done = threading.Event()
    times: list[float] = []
    handed: deque[tuple[str, str, float]] = deque()
    n = 0

    class App(fix.Application):  # type: ignore[misc,name-defined]
        def onCreate(self, session_id: Any) -> None: pass
        def onLogon(self, session_id: Any) -> None: pass
        def onLogout(self, session_id: Any) -> None: pass
        def toAdmin(self, message: Any, session_id: Any) -> None: pass
        def fromAdmin(self, message: Any, session_id: Any) -> None: pass
        def toApp(self, message: Any, session_id: Any) -> None: pass

        def fromApp(self, message: Any, session_id: Any) -> None:
            nonlocal n
            if mode == "handoff":
                received = time.time()
                msg_type = message.getHeader().getField(35)
                handed.append((msg_type, message.toString(), received))
            n += 1
            if n == 1:
                times.append(time.perf_counter())
            if n == count:
                times.append(time.perf_counter())
                done.set()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = tmp / "qf.cfg"
        cfg.write_text(settings_text(tmp, port))
        settings = fix.SessionSettings(str(cfg))
        store = fix.FileStoreFactory(settings)
        logs = fix.FileLogFactory(settings) if message_log else fix.ScreenLogFactory(False, False, False)
        app = App()
        initiator = fix.SocketInitiator(app, store, settings, logs)
        cpu0 = time.process_time()
        initiator.start()
        ok = done.wait(timeout=max(60.0, count / 2000))
        cpu1 = time.process_time()
        initiator.stop()
        del initiator
    sender.kill()
    sender.wait()
    if not ok or len(times) < 2:
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
