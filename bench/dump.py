#!/usr/bin/env python3
"""Dump every post-trade table, the outbox and the breaks, row for row, after
three fault-laden simulator scenarios: the proof that a change of the code's
shape leaves behaviour unchanged.

Each scenario runs in this process on a fresh database, wired as the engine
wires the intake and post-trade: the LP simulator's and the platform
simulator's ExecutionReports (with their content faults: price, quantity,
side and value-date mismatches, a side missing, ExecID reuse, late reports),
PossResend duplicates of some of them, and a timer tick at the end that
expires what never matched.  The messages are fed in fixed batches with
fixed receive times, and string hashing fixed (``PYTHONHASHSEED=0``: the
script runs itself again with it), so two runs of the same code give the
same rows.

Columns that hold the wall clock (``*_us``) are masked, and so are the keys
of JSON payloads that do (``*_us``, the envelope's ``time``); everything else is written as it is, ordered by
each table's primary key.  Run it before and after a change and compare:

    python bench/dump.py --out /tmp/before            # SQLite
    python bench/dump.py --out /tmp/before-pg --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    ... change the code ...
    python bench/dump.py --out /tmp/after
    diff -r /tmp/before /tmp/after && echo identical

Compare runs of the same day: the final tick's settlement cut-offs follow the
date.  The PostgreSQL database given is emptied first.  It prints one JSON
line per scenario: rows per table and the sha256 of the dump.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters import logs  # noqa: E402
from adapters.config import PROJECT_ROOT  # noqa: E402
from adapters.db.posttrade import PostTradeStore  # noqa: E402
from adapters.db.repository import Database  # noqa: E402
from adapters.fix.gateway import InboundQueue  # noqa: E402
from adapters.reference import load_reference  # noqa: E402
from bench.crash_test import reset_postgres  # noqa: E402
from fixsim.fixmsg import er_body  # noqa: E402
from fixsim.scenario import FaultRates, Scenario  # noqa: E402
from handlers.intake import Intake  # noqa: E402
from handlers.posttrade import PostTrade  # noqa: E402
from stp.fixwire import finish  # noqa: E402
from stp.inbound import Inbound  # noqa: E402

START = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)

# (name, seed, fills, faults): every content fault, at rates that make each
# appear many times in a few thousand fills
SCENARIOS = (
    ("mismatches", 11, 3000, "price=0.02,quantity=0.02,side=0.01,value_date=0.02"),
    ("missing_and_reuse", 12, 3000, "missing_lp=0.02,missing_platform=0.02,execid_reuse=0.01,late=0.02"),
    ("everything", 13, 3000, "all=0.01"),
)
DUPLICATE_EVERY = 41          # every 41st message is sent again with PossResend=Y
BATCH = 250
NOT_DUMPED = {"alembic_version"}
TIME_SUFFIXES = ("_us",)
TIME_KEYS = {"time", "minutes_to_cut_off"}   # the envelope's time; an escalation's distance to now


def _masked(value: Any) -> Any:
    """A JSON payload with the wall-clock keys masked."""
    if isinstance(value, dict):
        return {k: ("<time>" if k.endswith(TIME_SUFFIXES) or k in TIME_KEYS else _masked(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


_STAMP = re.compile(r"-1[0-9]{15}\b")       # a microsecond clock reading inside an id


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "NULL"
    if column.endswith(TIME_SUFFIXES):
        return "<time>"
    if isinstance(value, (bytes, memoryview)):
        return "0x" + bytes(value).hex()
    text = _STAMP.sub("-<time>", str(value))
    if text[:1] in "{[":
        try:
            return json.dumps(_masked(json.loads(text)), sort_keys=True)
        except ValueError:
            pass
    return text


async def dump(db: Database) -> dict[str, list[str]]:
    def tables(sync_conn: Any) -> list[tuple[str, list[str], list[str]]]:
        from sqlalchemy import inspect
        insp = inspect(sync_conn)
        out = []
        for name in sorted(insp.get_table_names()):
            if name in NOT_DUMPED:
                continue
            columns = [c["name"] for c in insp.get_columns(name)]
            key = insp.get_pk_constraint(name).get("constrained_columns") or columns
            out.append((name, columns, list(key)))
        return out

    result: dict[str, list[str]] = {}
    async with db.engine.connect() as conn:
        for name, columns, key in await conn.run_sync(tables):
            order = ", ".join(f'"{k}"' for k in key)
            rows = (await conn.exec_driver_sql(f'SELECT * FROM "{name}" ORDER BY {order}')).all()
            result[name] = ["\t".join(_cell(c, v) for c, v in zip(columns, row, strict=True)) for row in rows]
            result[name].insert(0, "\t".join(columns))
    return result


def _message(session: str, seq: int, body: str, resend: bool = False) -> str:
    header = (f"35=8\x0134={seq}\x0149={session}\x0152=20261118-09:00:00.000\x0156=STP\x01"
              + ("97=Y\x01" if resend else ""))
    return finish("FIX.4.4", header + body).decode()


async def run_scenario(url: str, seed: int, count: int, faults: str) -> dict[str, list[str]]:
    reference = load_reference(PROJECT_ROOT / "config" / "reference")
    async with Database(url) as db:
        await db.migrate()
        pipeline = PostTrade(PostTradeStore(db), reference, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                             {"PLATFORM": "LP1"})
        intake = Intake(InboundQueue(), db, await db.load_intake_state(), known_symbols=reference.symbols)
        await pipeline.load()
        intake.on_committed = pipeline.submit
        seq = {"LP1": 2, "PLATFORM": 2}
        received = START.timestamp()
        items: list[Inbound] = []
        sent = 0

        async def flush() -> None:
            await intake.process(items)
            items.clear()
            while not pipeline.queue.empty():
                await pipeline.process(pipeline.queue.get_nowait())

        for event in Scenario(seed=seed, count=count, start=START, faults=FaultRates.parse(faults)).events():
            for session, fill in (("LP1", event.lp), ("PLATFORM", event.platform)):
                if fill is None:
                    continue
                body = er_body(fill)
                received += 0.001
                items.append(Inbound(session, _message(session, seq[session], body), received, "app"))
                seq[session] += 1
                sent += 1
                if sent % DUPLICATE_EVERY == 0:
                    items.append(Inbound(session, _message(session, seq[session], body, resend=True),
                                         received, "app"))
                    seq[session] += 1
                if len(items) >= BATCH:
                    await flush()
        await flush()
        # two hours on: the match window of every unmatched fill has passed and
        # every open break is due for escalation (what the clock decides, decided alike)
        await pipeline.tick(datetime.now(UTC) + timedelta(hours=2))
        return await dump(db)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="a directory: one file per scenario and table")
    ap.add_argument("--database-url", default=None, help="PostgreSQL (reset per scenario); default SQLite")
    args = ap.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # the order of a set of strings (accounts touched in a batch) is the
        # order their events are written in: the same order in every run
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    logs.configure("error", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, seed, count, faults in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'stp.db'}"
            if args.database_url:
                reset_postgres(args.database_url)
            tables = asyncio.run(run_scenario(url, seed, count, faults))
        digest = hashlib.sha256()
        for table, lines in tables.items():
            text = "\n".join(lines) + "\n"
            (args.out / f"{name}.{table}.tsv").write_text(text)
            digest.update(f"{table}\n{text}".encode())
        print(json.dumps({"scenario": name, "sha256": digest.hexdigest(),
                          "rows": {t: len(lines) - 1 for t, lines in tables.items() if len(lines) > 1}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
