#!/usr/bin/env python3
"""Intake benchmark: LP simulator -> quickfix -> committed journal and fills.

Three figures from one run on this machine:

1. ``raw_parse_per_s``: the in-process parse of an ExecutionReport string
   into fields and a typed fill (what intake does per message, without
   quickfix or the database);
2. ``max``: the LP simulator (its own process) streams ``--count`` fills as
   fast as it can to the engine (its own process, SQLite by default);
   fills/s = fills committed / (last commit - first receipt), read back from
   the journal;
3. ``offered``: the same at ``--rate`` fills/s offered, with the engine's
   receipt-to-commit latency (p50/p99 of every message, measured after the
   commit returned).

``--posttrade external`` measures the intake alone: the engine starts no
post-trade (``[engine] posttrade = "external"``) and none runs meanwhile, as
when post-trade has a host of its own; the default runs it beside the intake
in the engine's child process, on the same cores.

    python bench/intake.py --count 100000 --rate 10000
    python bench/intake.py --count 100000 --rate 10000 --posttrade external
    python bench/intake.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.crash_test import free_port, reset_postgres, status, write_config  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import Scenario, SimFill  # noqa: E402
from stp.fills import normalise  # noqa: E402
from stp.fixwire import finish, parse_text  # noqa: E402

# far ahead: no settlement cut-off has passed, so the fills do not all break
# as after_cut_off (a flood of breaks is another benchmark: bench/relay.py)
START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def raw_parse_rate(n: int = 50_000) -> float:
    fills: list[SimFill] = [e.lp for e in Scenario(seed=3, count=2000, start=START).events()]  # type: ignore[misc]  # no faults: no side is missing
    texts = [finish("FIX.4.4", f"35=8\x0134={i + 2}\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
                    + er_body(f)).decode() for i, f in enumerate(fills)]
    received = datetime.now(UTC)
    t0 = time.perf_counter()
    for i in range(n):
        normalise(parse_text(texts[i % len(texts)]).index(), "LP1", received)
    return n / (time.perf_counter() - t0)


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) of a process and of its live descendants (the
    engine's post-trade process), and the peak RSS in KiB of the largest."""
    cpu, hwm = 0.0, 0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue                        # gone meanwhile
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in status:
            if line.startswith("VmHWM:"):
                hwm = max(hwm, int(line.split()[1]))
    return cpu, hwm


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += [child, *_descendants(child)]
    return out


def children_cpu() -> float:
    """CPU seconds of the waited-for child processes so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def engine_log_summary(stderr: str) -> dict[str, object]:
    for line in reversed(stderr.strip().splitlines()):
        if '"engine_stopped"' in line:
            return json.loads(line)  # type: ignore[no-any-return]  # engine_stopped is logged as a JSON object
    return {}


async def journal_span(db_url: str) -> tuple[int, float]:
    from sqlalchemy import func, select

    from adapters.db.repository import Database
    from adapters.db.schema import journal

    async with Database(db_url) as db, db.engine.connect() as conn:
        row = (await conn.execute(select(func.count(), func.min(journal.c.received_us),
                                         func.max(journal.c.committed_us)))).one()
    return int(row[0]), (row[2] - row[1]) / 1e6


def run_once(count: int, rate: float | None, db_url: str | None, tmp: Path,
             posttrade: str = "process") -> dict[str, object]:
    tmp.mkdir(parents=True, exist_ok=True)
    url = db_url or f"sqlite+aiosqlite:///{tmp / 'stp.db'}"
    if db_url:
        reset_postgres(db_url)
    lp_port = free_port()
    cfg = tmp / "engine.toml"
    write_config(cfg, url, lp_port, free_port())
    cfg.write_text(cfg.read_text().replace("[engine]\n", f'[engine]\nposttrade = "{posttrade}"\n', 1))
    log_path = tmp / "engine.log"       # a file: a pipe nobody reads would block the engine's logging
    engine = subprocess.Popen([sys.executable, str(ROOT / "run_engine.py"), "--log-level", "info", "run",
                               "--config", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=log_path.open("w"), text=True)
    lp_cmd = [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error", "simulate", "lp",
              "--port", str(lp_port), "--count", str(count), "--seed", "9", "--start", START.isoformat(),
              "--state-dir", str(tmp / "sim"), "--reset", "--linger", "1", "--no-progress"]
    if rate:
        lp_cmd += ["--rate", str(rate)]
    time.sleep(2.0)                    # started: its start-up is not counted
    cpu0, _ = proc_stat(engine.pid)
    lp_cpu0 = children_cpu()
    lp = subprocess.run(lp_cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    lp_cpu = children_cpu() - lp_cpu0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and status(cfg)["executions"] < count:
        time.sleep(0.5)
    cpu1, _ = proc_stat(engine.pid)
    engine.send_signal(signal.SIGTERM)
    engine.wait(timeout=60)
    err = log_path.read_text()
    committed, span = asyncio.run(journal_span(url))
    summary = engine_log_summary(err)
    lp_summary = json.loads(lp.stdout.strip().splitlines()[-1])
    return {"offered_per_s": rate or "max", "lp_sent_per_s": lp_summary["rate_per_s"],
            "committed": committed, "fills_per_s": round(committed / span, 1) if span > 0 else None,
            "latency_p50_ms": summary.get("latency_p50_ms"), "latency_p99_ms": summary.get("latency_p99_ms"),
            "batches": summary.get("batches"), "queue_high_water": summary.get("queue_high_water"),
            "engine_cpu_us_per_fill": round((cpu1 - cpu0) / max(committed, 1) * 1e6, 1),
            "lp_sim_cpu_us_per_fill": round(lp_cpu / max(count, 1) * 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--posttrade", choices=["process", "external"], default="process",
                    help="external: no post-trade runs (the intake alone)")
    args = ap.parse_args()
    result: dict[str, object] = {"count": args.count, "cpu_count": os.cpu_count(),
                                 "posttrade": args.posttrade,
                                 "database": "postgresql" if args.database_url else "sqlite",
                                 "raw_parse_per_s": round(raw_parse_rate(), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        result["max"] = run_once(args.count, None, args.database_url, Path(tmp) / "max", args.posttrade)
    with tempfile.TemporaryDirectory() as tmp:
        result["offered"] = run_once(args.count, args.rate, args.database_url, Path(tmp) / "offered",
                                     args.posttrade)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
