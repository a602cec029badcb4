#!/usr/bin/env python3
"""The CPU the pre-logon guard's relay adds per message (adapters/fix/guard.py).

A ``LogonGuard`` runs alone in a child process, in front of a counting sink
in this process (standing in for quickfix's acceptor).  A client logs on
through it and sends ``--count`` ExecutionReports (about 300 bytes each,
encoded beforehand), either at full speed (500 messages a write: TCP and the
relay's 256 KiB reads take many messages at a time) or paced (one message a
write, ``--paced-rate`` a second: about one read and one write per message,
the relay's worst case).  Figures: the child's CPU (user + system, from
/proc) per message, and messages/s.

    python bench/guard_relay.py --count 200000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.config import SessionSpec  # noqa: E402
from bench.crash_test import free_port  # noqa: E402
from bench.intake import START  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import Scenario  # noqa: E402
from stp.fixwire import finish, format_utc_timestamp  # noqa: E402

SPEC = SessionSpec("platform", "PLATFORM", 0, "STP", "PLATFORM", username="desk", password="s3cret")


def serve(port: int, upstream: int) -> None:
    """The child: the guard alone, until stdin closes."""
    from adapters import logs
    from adapters.fix.guard import LogonGuard

    logs.configure("error", stream=sys.stderr)
    guard = LogonGuard([("127.0.0.1", port, [SPEC], ("127.0.0.1", upstream))])
    guard.start()
    print("ready", flush=True)
    sys.stdin.read()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def frames(count: int) -> list[bytes]:
    fills = [e.platform or e.lp for e in Scenario(seed=5, count=min(count, 5000), start=START).events()]
    bodies = [er_body(f) for f in fills if f is not None]
    sent = format_utc_timestamp(time.time())
    return [finish("FIX.4.4", f"35=8\x0134={i + 2}\x0149=PLATFORM\x0152={sent}\x0156=STP\x01"
                   + bodies[i % len(bodies)]) for i in range(count)]


def run(count: int, paced_rate: float | None) -> dict[str, object]:
    sink = socket.create_server(("127.0.0.1", 0))
    upstream = sink.getsockname()[1]
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(upstream)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child.stdout.readline()
    messages = frames(count)
    total = sum(len(m) for m in messages)
    received = 0
    done = threading.Event()

    def count_bytes() -> None:
        nonlocal received
        conn, _ = sink.accept()
        with conn:
            first = b""
            while not first.endswith(b"\x01") or b"\x0110=" not in first:   # the Logon
                first += conn.recv(4096)
            while received < total:
                data = conn.recv(1 << 20)
                if not data:
                    break
                received += len(data)
        done.set()

    threading.Thread(target=count_bytes, daemon=True).start()
    logon = finish("FIX.4.4", f"35=A\x0134=1\x0149=PLATFORM\x0152={format_utc_timestamp(time.time())}"
                   "\x0156=STP\x0198=0\x01108=30\x01553=desk\x01554=s3cret\x01")
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.sendall(logon)
    time.sleep(0.3)
    cpu0, t0 = cpu_seconds(child.pid), time.perf_counter()
    if paced_rate is None:
        for i in range(0, count, 500):
            client.sendall(b"".join(messages[i:i + 500]))
    else:
        interval = 1.0 / paced_rate
        next_at = time.perf_counter()
        for m in messages:
            client.sendall(m)
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    done.wait(300)
    t1, cpu1 = time.perf_counter(), cpu_seconds(child.pid)
    client.close()
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)
    sink.close()
    return {"mode": "full speed" if paced_rate is None else f"paced {paced_rate:g}/s, one message a write",
            "messages": count, "relayed_bytes": received, "complete": received == total,
            "per_s": round(count / (t1 - t0), 1),
            "guard_cpu_us_per_message": round((sum(cpu1) - sum(cpu0)) / count * 1e6, 2),
            "of_which_kernel_us": round((cpu1[1] - cpu0[1]) / count * 1e6, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--paced-count", type=int, default=20_000)
    ap.add_argument("--paced-rate", type=float, default=5_000)
    ap.add_argument("--serve", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(*args.serve)
        return 0
    runs = [run(args.count, None), run(args.paced_count, args.paced_rate)]
    print(json.dumps({"runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
