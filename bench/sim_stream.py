#!/usr/bin/env python3
"""How fast the LP simulator streams ExecutionReports to a peer over loopback.

Runs, in one go on the same machine:

1. a bare pure-Python encode loop (fixed ER body, header + BodyLength +
   CheckSum per message): the ceiling for any Python FIX sender here;
2. the LP simulator as its own process (``run_engine.py simulate lp``),
   streaming ``--count`` fills as fast as it can to a lean counting peer in
   this process: the peer logs on through the project's session layer, then
   frames every message (BodyLength and CheckSum verified), checks that the
   MsgSeqNums are contiguous and counts ExecutionReports;
3. with ``--full-peer``, the same against the project's full sink (session
   layer, every message parsed and deduplicated by ExecID).

Prints one JSON object.  Figures are throughput, not pass/fail: compare the
simulator's rate with the encode loop measured in the same run.

    python bench/sim_stream.py --count 300000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters import logs  # noqa: E402
from fixsim.session import Session, SessionConfig  # noqa: E402
from stp.fixwire import Framer, finish  # noqa: E402

BODY = ("37=LP1-O1-0000001\x0111=C1-0000001\x011=ACC007\x0155=EUR/USD\x01460=4\x0154=1\x01"
        "38=1000000\x0115=EUR\x0117=LP1-E1-{n:08d}\x01150=F\x0139=2\x0132=1000000\x0131=1.08512\x01"
        "151=0\x0114=1000000\x016=1.0851200\x0175=20261123\x0160=20261121-08:00:00.050\x0163=0\x01"
        "64=20261125\x01")


def bare_encode_rate(n: int) -> float:
    prefix = "35=8\x0134="
    suffix = "\x0149=LP1\x0152=20261121-08:00:00.050\x0156=STP\x01"
    t0 = time.perf_counter()
    for i in range(n):
        finish("FIX.4.4", f"{prefix}{i}{suffix}{BODY.format(n=i)}")
    return n / (time.perf_counter() - t0)


_SEQ = re.compile(rb"\x0134=(\d+)\x01")


class CountingPeer(asyncio.Protocol):
    """Logs on with the session layer, then only frames and counts."""

    def __init__(self, expect: int, sender_pid: int | None = None) -> None:
        self.sender_pid = sender_pid
        self.cpu_first = self.cpu_last = 0.0     # the sender's CPU seconds at the first and last report
        self.session = Session(SessionConfig("FIX.4.4", "STP", "LP1", initiator=True,
                                             heartbeat_interval=30))
        self.framer = Framer()
        self.expect = expect
        self.count = 0
        self.next_seq = 0
        self.gaps = 0
        self.garbled = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.session.on_connect()
        transport.write(self.session.take_output())

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        for frame, error in self.framer.frames():
            if error is not None:
                self.garbled += 1
                continue
            if not self.session.logged_on:
                self.session.on_bytes_frame(frame)
                self.next_seq = self.session.next_target_seq
                continue
            seq = int(_SEQ.search(frame, 0, 40)[1])  # type: ignore[index]  # a session's frame has MsgSeqNum (34) there
            if seq != self.next_seq:
                self.gaps += 1
            self.next_seq = seq + 1
            if frame.find(b"\x0135=8\x01", 0, 30) > 0:
                if not self.count:
                    self.first = time.perf_counter()
                    self.cpu_first = _cpu_of(self.sender_pid)
                self.count += 1
                if self.count >= self.expect:
                    self.last = time.perf_counter()
                    self.cpu_last = _cpu_of(self.sender_pid)
                    if not self.done.done():
                        self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of a live process."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def lean_run(port: int, count: int, sender_pid: int | None = None) -> dict[str, float | int]:
    loop = asyncio.get_running_loop()
    for _ in range(100):
        try:
            _, peer = await loop.create_connection(lambda: CountingPeer(count, sender_pid), "127.0.0.1",
                                                   port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("LP simulator did not start")
    await asyncio.wait_for(peer.done, timeout=600)
    assert peer.transport is not None
    peer.transport.close()
    elapsed = peer.last - peer.first if peer.last else float("nan")
    out: dict[str, float | int] = {"received": peer.count, "gaps": peer.gaps, "garbled": peer.garbled,
                                   "elapsed_s": round(elapsed, 3),
                                   "rate_per_s": round(peer.count / elapsed, 1)}
    if sender_pid is not None and peer.count > 1:
        # the simulator's CPU while it streamed (its start-up and linger left out)
        out["sender_cpu_us_per_er"] = round((peer.cpu_last - peer.cpu_first) / (peer.count - 1) * 1e6, 1)
    return out


def start_lp(port: int, count: int, state: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "warning", "simulate", "lp",
         "--port", str(port), "--count", str(count), "--reset", "--linger", "0.5",
         "--state-dir", state, "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300_000)
    ap.add_argument("--full-peer", action="store_true", help="also stream to the full session-layer sink")
    args = ap.parse_args()
    logs.configure("warning")
    result: dict[str, object] = {"count": args.count, "cpus": os.cpu_count(),
                                 "python": sys.version.split()[0]}
    result["bare_encode_per_s"] = bare_per_s = round(bare_encode_rate(min(args.count, 200_000)), 1)
    with tempfile.TemporaryDirectory() as state:
        port = free_port()
        lp = start_lp(port, args.count, state)
        try:
            result["lean_peer"] = asyncio.run(lean_run(port, args.count, lp.pid))
        finally:
            out, _ = lp.communicate(timeout=60)
        lp_summary = json.loads(out.strip().splitlines()[-1])
        result["lp_simulator_rate_per_s"] = lp_summary["rate_per_s"]
        if args.full_peer:
            port = free_port()
            lp = start_lp(port, args.count, state)
            sink = subprocess.run(
                [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "warning", "simulate",
                 "sink", "--connect", f"127.0.0.1:{port}", "--expect", str(args.count),
                 "--no-validate"], cwd=ROOT, capture_output=True, text=True, timeout=600)
            lp.communicate(timeout=60)
            result["full_sink"] = json.loads(sink.stdout.strip().splitlines()[-1])
    lean = result["lean_peer"]
    assert isinstance(lean, dict)
    result["sim_vs_bare_encode"] = round(float(lean["rate_per_s"]) / bare_per_s, 3)
    print(json.dumps(result, indent=2))
    return 0 if lean["received"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
