#!/usr/bin/env python3
"""Whole-pipeline benchmark: LP simulator -> quickfix -> intake -> confirm, book,
net, settle, margin, all committed.

For each ``--counts`` value, one run on a fresh database: the LP simulator (its
own process) streams the fills as fast as it can; the figure is fills per
second from the first receipt to the post-trade commit of the last fill
(journal ``received_us`` and the pipeline cursor's ``updated_us``), the CPU
the engine process used per fill, and its peak resident memory (VmHWM).
Beside it, in the same run, the in-process parse rate.  Compare the cost per
fill across counts: flat means the pipeline does not slow down as the books
grow.

    python bench/pipeline.py --counts 100000 300000
    python bench/pipeline.py --counts 100000 1000000 --rate 2500   # cost per fill without a backlog
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.crash_test import free_port, reset_postgres, write_config  # noqa: E402
from bench.intake import START, children_cpu, proc_stat, raw_parse_rate  # noqa: E402


async def span(db_url: str) -> tuple[int, float]:
    from adapters.db.repository import Database

    async with Database(db_url) as db, db.engine.connect() as conn:
        # AsyncConnection.exec_driver_sql says CursorResult[Any]: mypy reads its rows as 1-tuples
        first: tuple[Any, ...] = (
            await conn.exec_driver_sql("SELECT MIN(received_us), COUNT(*) FROM journal")).one()
        last: tuple[Any, ...] = (
            await conn.exec_driver_sql("SELECT updated_us, last_fill_id FROM pipeline_cursor")).one()
    return int(last[1]), (int(last[0]) - int(first[0])) / 1e6


def run(count: int, db_url: str | None, tmp: Path, rate: float | None = None) -> dict[str, object]:
    tmp.mkdir(parents=True, exist_ok=True)
    url = db_url or f"sqlite+aiosqlite:///{tmp / 'stp.db'}"
    if db_url:
        reset_postgres(db_url)
    lp_port = free_port()
    cfg = tmp / "engine.toml"
    write_config(cfg, url, lp_port, None)     # LP only: fills confirm on validation alone
    engine = subprocess.Popen([sys.executable, str(ROOT / "run_engine.py"), "run", "--config", str(cfg)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    cpu0, _ = proc_stat(engine.pid)
    lp_cpu0 = children_cpu()
    lp = subprocess.run([sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error", "simulate",
                         "lp", "--port", str(lp_port), "--count", str(count), "--seed", "9",
                         "--start", START.isoformat(), "--state-dir", str(tmp / "sim"), "--reset",
                         "--linger", "1", "--no-progress", *(["--rate", str(rate)] if rate else [])],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=7200)
    lp_cpu = children_cpu() - lp_cpu0
    deadline = time.monotonic() + 600
    done = 0
    while time.monotonic() < deadline:
        try:
            done, _ = asyncio.run(span(url))
        except Exception:
            done = 0
        if done >= count:
            break
        time.sleep(1.0)
    cpu1, hwm = proc_stat(engine.pid)
    engine.send_signal(signal.SIGTERM)
    engine.wait(timeout=120)
    processed, seconds = asyncio.run(span(url))
    lp_summary = json.loads(lp.stdout.strip().splitlines()[-1])
    return {"fills": processed, "lp_sent_per_s": lp_summary["rate_per_s"],
            "end_to_end_fills_per_s": round(processed / seconds, 1) if seconds > 0 else None,
            "engine_cpu_us_per_fill": round((cpu1 - cpu0) / max(processed, 1) * 1e6, 1),
            "lp_sim_cpu_us_per_fill": round(lp_cpu / max(count, 1) * 1e6, 1),
            # CPU the target rate would take on this machine at these costs (it has os.cpu_count())
            "cores_for_25000_per_s": round((cpu1 - cpu0 + lp_cpu) / max(processed, 1) * 25_000, 2),
            "engine_peak_rss_mib": round(hwm / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--rate", type=float, default=None,
                    help="LP fills/s offered (default: as fast as it can); below the pipeline's speed, "
                         "every fill takes the in-memory hand-off and the cost per fill is comparable "
                         "across counts")
    args = ap.parse_args()
    result: dict[str, object] = {"database": "postgresql" if args.database_url else "sqlite",
                                 "cpu_count": os.cpu_count(),
                                 "raw_parse_per_s": round(raw_parse_rate(), 1), "runs": []}
    for count in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            runs = result["runs"]
            assert isinstance(runs, list)
            runs.append({"count": count, "offered_per_s": args.rate,
                         **run(count, args.database_url, Path(tmp), args.rate)})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
