#!/usr/bin/env python3
"""Post-trade catching up on fills already journaled, and a restart after them.

Journals ``--count`` fills through the engine's intake in this process (no
post-trade), then starts a post-trade pipeline on the same database and
times it booking all of them from its cursor (``PostTrade.catch_up``: the
fills read back by cursor, 2,000 a batch, as the post-trade process does
after an outage or a replay); then starts another one and times its
``load()`` (the restart after that many fills).  It prints one JSON line:
the catch-up's fills per second (wall) and CPU per fill (process CPU: the
database driver's thread included), the restart time, and the bare split of
the same messages as the baseline measured in the same run.  Issue 13's
targets: 20,000 fills/s per post-trade process; a restart after 1,000,000
fills under 5 s.

    python bench/catch_up.py --count 200000
    python bench/catch_up.py --count 200000 --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/dump
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
from bench.inprocess import bare_split_us  # noqa: E402
from bench.intake import START  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import Scenario  # noqa: E402
from handlers.intake import Intake  # noqa: E402
from handlers.posttrade import PostTrade  # noqa: E402
from stp.fixwire import finish  # noqa: E402
from stp.inbound import Inbound  # noqa: E402


async def run(count: int, url: str) -> dict[str, object]:
    reference = load_reference(PROJECT_ROOT / "config" / "reference")
    async with Database(url) as db:
        await db.migrate()
        intake = Intake(InboundQueue(), db, await db.load_intake_state(), known_symbols=reference.symbols)
        header = "35=8\x0134={}\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
        sample: list[str] = []
        seq = 2
        journal0 = time.perf_counter()
        items: list[Inbound] = []
        for event in Scenario(seed=9, count=count, start=START).events():
            assert event.lp is not None                  # no faults: no side is missing
            raw = finish("FIX.4.4", header.format(seq) + er_body(event.lp)).decode()
            items.append(Inbound("LP1", raw, time.time(), "app"))
            if len(sample) < 20_000:
                sample.append(raw)
            seq += 1
            if len(items) == 2000:
                await intake.process(items)
                items = []
        if items:
            await intake.process(items)
        journal_s = time.perf_counter() - journal0

        def pipeline() -> PostTrade:
            return PostTrade(PostTradeStore(db), reference, frozenset({"LP1"}), {}, {})

        first = pipeline()
        await first.load()
        gc.collect()
        gc.freeze()
        c0, w0 = time.process_time(), time.perf_counter()
        await first.catch_up()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert first.processed == count, (first.processed, count)
        restarted = pipeline()
        r0 = time.perf_counter()
        await restarted.load()
        restart_s = time.perf_counter() - r0
        assert restarted.cursor == first.cursor
    return {"fills": count, "database": "postgresql" if url.startswith("postgresql") else "sqlite",
            "journaled_in_s": round(journal_s, 1),
            "catch_up_per_s": round(count / wall), "catch_up_cpu_us_per_fill": round(cpu / count * 1e6, 1),
            "restart_load_s": round(restart_s, 2), "baseline_split_us": round(bare_split_us(sample), 2),
            "targets": {"catch_up_per_s_at_least": 20_000, "restart_s_under_at_1m": 5.0}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    logs.configure("error", stream=sys.stderr)      # the figures alone on stdout
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'stp.db'}"
        if args.database_url:
            reset_postgres(args.database_url)
        print(json.dumps(asyncio.run(run(args.count, url))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
