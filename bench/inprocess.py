#!/usr/bin/env python3
"""The engine's own work per fill, without FIX sessions, as the books grow.

Runs the engine's intake and post-trade pipeline in this process, on a fresh
database, exactly as the engine wires them (intake commits the journal and
the fills, hands them to post-trade, which confirms, books, nets, settles,
updates margin and commits).  The ExecutionReports come from the LP
simulator's scenario, encoded as quickfix hands them over, in batches of
``--batch`` messages; encoding is outside the timed sections.

Every ``--every`` fills it prints one JSON line: fills so far, CPU µs per fill
of the intake and of post-trade over the last interval (process CPU, so the
database driver's thread is included), and the resident memory after a
collection.  Flat CPU and memory from the first lines to the last mean the
cost per fill does not grow with the books and memory is bounded.  The first
line is the in-process parse rate measured in the same run.

    python bench/inprocess.py --count 1000000
    python bench/inprocess.py --count 200000 --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters import logs  # noqa: E402
from adapters.config import PROJECT_ROOT  # noqa: E402
from adapters.db.posttrade import PostTradeStore  # noqa: E402
from adapters.db.repository import Database  # noqa: E402
from adapters.fix.gateway import InboundQueue  # noqa: E402
from adapters.reference import load_reference  # noqa: E402
from bench.crash_test import reset_postgres  # noqa: E402
from bench.intake import START, raw_parse_rate  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import Scenario  # noqa: E402
from handlers.intake import Intake  # noqa: E402
from handlers.posttrade import PostTrade  # noqa: E402
from stp.fills import Fill  # noqa: E402
from stp.fixwire import finish  # noqa: E402
from stp.inbound import Inbound  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def run(count: int, batch: int, every: int, url: str) -> None:
    reference = load_reference(PROJECT_ROOT / "config" / "reference")
    async with Database(url) as db:
        await db.migrate()
        state = await db.load_intake_state()
        intake = Intake(InboundQueue(), db, state,
                        known_symbols=reference.symbols)
        pipeline = PostTrade(PostTradeStore(db), reference, frozenset({"LP1"}), {}, {})
        await pipeline.load()
        committed: list[tuple[int, Fill]] = []
        intake.on_committed = committed.extend      # what PostTrade.run takes from its queue
        gc.collect()
        gc.freeze()          # as the engine does after start-up
        header = "35=8\x0134={}\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
        events = iter(Scenario(seed=9, count=count, start=START).events())
        seq, done, since = 2, 0, 0
        intake_cpu = posttrade_cpu = 0.0
        sample: list[str] = []          # the first messages, for the bare split over the same input
        wall0 = time.perf_counter()
        while done < count:
            items = []
            for event in events:
                raw = finish("FIX.4.4", header.format(seq) + er_body(event.lp)).decode()  # type: ignore[arg-type]  # no faults: no side is missing
                items.append(Inbound("LP1", raw, time.time(), "app"))
                if len(sample) < SAMPLE:
                    sample.append(raw)
                seq += 1
                if len(items) == batch:
                    break
            if not items:
                break
            c0 = time.process_time()
            await intake.process(items)
            c1 = time.process_time()
            await pipeline.process(committed)
            committed.clear()
            c2 = time.process_time()
            intake_cpu += c1 - c0
            posttrade_cpu += c2 - c1
            done += len(items)
            since += len(items)
            if since >= every or done >= count:
                n, since = since, 0
                gc.collect()
                print(json.dumps({"fills": done,
                                  "intake_cpu_us_per_fill": round(intake_cpu / n * 1e6, 1),
                                  "posttrade_cpu_us_per_fill": round(posttrade_cpu / n * 1e6, 1),
                                  "rss_mib": rss_mib(),
                                  "elapsed_s": round(time.perf_counter() - wall0, 1)}), flush=True)
                intake_cpu = posttrade_cpu = 0.0
        assert pipeline.processed == done, (pipeline.processed, done)
        print(json.dumps({"baseline_split_us": round(bare_split_us(sample), 2),
                          "split_messages": len(sample)}), flush=True)


SAMPLE = 20_000


def bare_split_us(messages: list[str], passes: int = 5) -> float:
    """CPU per message of the bare split of the same ExecutionReports into a
    dict (issue 13's baseline: ``dict(f.split("=", 1) for f in msg.split("\x01") if f)``),
    the median of ``passes`` passes over them."""
    per_message = []
    for _ in range(passes):
        c0 = time.process_time()
        for msg in messages:
            dict(f.split("=", 1) for f in msg.split("\x01") if f)
        per_message.append((time.process_time() - c0) / len(messages) * 1e6)
    return sorted(per_message)[len(per_message) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000, help="messages per intake batch")
    ap.add_argument("--every", type=int, default=100_000, help="fills between two lines")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    logs.configure("error", stream=sys.stderr)      # the figures alone on stdout
    print(json.dumps({"raw_parse_per_s": round(raw_parse_rate(), 1),
                      "database": "postgresql" if args.database_url else "sqlite"}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'stp.db'}"
        if args.database_url:
            reset_postgres(args.database_url)
        asyncio.run(run(args.count, args.batch, args.every, url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
