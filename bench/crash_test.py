#!/usr/bin/env python3
"""Crash test: no fill lost, none booked twice, whatever kills the engine.

The LP simulator and the engine run as separate processes. The simulator
streams ``--count`` fills at ``--rate`` per second; the engine is SIGKILLed
at random moments (``--kills`` times, 0.3 to ``--max-interval`` seconds apart)
and restarted each time.  With ``--target gateway`` the engine's FIX gateway
process is killed instead (the engine restarts it itself), with ``both``
either, at random. At the end the engine runs until the simulator has
nothing more to send, and the database must hold every ExecID of the
scenario exactly once (compared against the scenario computed here, from the
same seed), and the post-trade pipeline must have processed every committed
fill once: its cursor at the last fill, no fill with two trade bookings, no
booking reversed twice, every currency's postings summing to zero.

    python bench/crash_test.py --count 12000 --rate 1500 --kills 12
    python bench/crash_test.py --count 12000 --rate 1500 --kills 12 --target both
    python bench/crash_test.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Prints one JSON object; exits 0 when the check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixsim.scenario import FaultRates, Scenario  # noqa: E402

# far ahead: no settlement cut-off passes, so the fills do not all break as after_cut_off
START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, db_url: str, lp_port: int, platform_port: int | None) -> None:
    platform = "" if platform_port is None else f"""
[[platform]]
name = "PLATFORM"
port = {platform_port}
sender_comp_id = "STP"
target_comp_id = "PLATFORM"
"""
    path.write_text(f"""
[engine]
state_dir = "{path.parent / 'engine'}"
[database]
url = "{db_url}"
[logging]
level = "warning"
[[lp]]
name = "LP1"
host = "127.0.0.1"
port = {lp_port}
sender_comp_id = "STP"
target_comp_id = "LP1"
reconnect_interval = 1
{platform}""")


def engine(cfg: Path) -> subprocess.Popen[bytes]:
    """The engine, its log (every start's, and its children's) appended to engine.log beside cfg."""
    with (cfg.parent / "engine.log").open("ab") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "run_engine.py"), "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)


def gateway_of(engine_pid: int) -> int | None:
    """The pid of an engine's FIX gateway process (None while it has none)."""
    try:
        children = Path(f"/proc/{engine_pid}/task/{engine_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if b"gateway" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return int(child)
        except OSError:
            continue
    return None


def status(cfg: Path, attempts: int = 3) -> dict[str, Any]:
    """The engine's status command (retried: it may find the database busy
    while an engine is being killed and restarted)."""
    for attempt in range(attempts):
        done = subprocess.run([sys.executable, str(ROOT / "run_engine.py"), "status", "--config", str(cfg),
                               "--json"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            return json.loads(done.stdout)  # type: ignore[no-any-return]  # status --json prints an object
        print(f"status failed (attempt {attempt + 1}): {done.stderr.strip()[-500:]}", file=sys.stderr)
        time.sleep(1.0)
    raise RuntimeError("the status command kept failing")


async def posttrade_check(db_url: str) -> dict[str, object]:
    """After the engine stopped: did the post-trade pipeline process every
    committed fill once?  No fill with two trade bookings, no booking reversed
    twice, every currency's postings summing to zero."""
    from decimal import Decimal

    from adapters.db.repository import Database

    async with Database(db_url) as db, db.engine.connect() as conn:
        async def q(sql: str) -> list[tuple[object, ...]]:
            return [tuple(r) for r in (await conn.exec_driver_sql(sql)).all()]

        last_fill = (await q("SELECT COALESCE(MAX(id), 0) FROM fills"))[0][0]
        cursor = await q("SELECT last_fill_id FROM pipeline_cursor WHERE stage = 'posttrade'")
        doubled = await q("SELECT fill_id FROM bookings WHERE kind = 'trade' AND fill_id IS NOT NULL "
                          "GROUP BY fill_id HAVING COUNT(*) > 1")
        reversed_twice = await q("SELECT reverses FROM bookings WHERE reverses IS NOT NULL "
                                 "GROUP BY reverses HAVING COUNT(*) > 1")
        sums: dict[str, Decimal] = {}
        for ledger, amount in await q("SELECT ledger, amount FROM postings"):
            sums[str(ledger)] = sums.get(str(ledger), Decimal(0)) + Decimal(str(amount))
        bookings = (await q("SELECT COUNT(*) FROM bookings"))[0][0]
    return {"posttrade_cursor": cursor[0][0] if cursor else 0, "last_fill_id": last_fill,
            "bookings": bookings, "fills_booked_twice": len(doubled),
            "bookings_reversed_twice": len(reversed_twice),
            "ledgers_unbalanced": sorted(c for c, v in sums.items() if v != 0)}


async def fill_ids(db_url: str) -> list[str]:
    from adapters.db.repository import Database

    async with Database(db_url) as db:
        return [r["exec_id"] for r in await db.fills_rows("LP1")]


def reset_postgres(db_url: str) -> None:
    from adapters.db.repository import Database

    async def drop() -> None:
        async with Database(db_url) as db:
            await db.drop_all()

    asyncio.run(drop())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=12_000)
    ap.add_argument("--rate", type=float, default=1500)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--max-interval", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--faults", default="", help="LP simulator faults, e.g. duplicate=0.01,seq_gap=0.005")
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--target", choices=["engine", "gateway", "both"], default="engine",
                    help="what each kill hits: the engine, its FIX gateway process, or either")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db_url = args.database_url or f"sqlite+aiosqlite:///{tmp / 'stp.db'}"
        if args.database_url:
            reset_postgres(db_url)
        lp_port = free_port()
        cfg = tmp / "engine.toml"
        write_config(cfg, db_url, lp_port, free_port())
        lp = subprocess.Popen(
            [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error", "simulate", "lp",
             "--port", str(lp_port), "--count", str(args.count), "--rate", str(args.rate),
             "--seed", str(args.seed), "--start", START.isoformat(), "--faults", args.faults,
             "--state-dir", str(tmp / "sim"), "--reset", "--linger", "-1", "--no-progress"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        kills = gateway_kills = 0
        try:
            proc = engine(cfg)
            for _ in range(args.kills):
                time.sleep(rng.uniform(0.3, args.max_interval))
                target = args.target if args.target != "both" else rng.choice(["engine", "gateway"])
                gateway = None
                waited = time.monotonic()
                while target == "gateway" and gateway is None and time.monotonic() - waited < 10:
                    gateway = gateway_of(proc.pid)       # a just restarted engine starts it soon
                    if gateway is None:
                        time.sleep(0.05)
                if gateway is not None:
                    os.kill(gateway, signal.SIGKILL)      # the engine starts another
                    gateway_kills += 1
                else:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    proc = engine(cfg)
                kills += 1
            expected = {ev.lp.exec_id for ev in Scenario(seed=args.seed, count=args.count, start=START,
                                                          faults=FaultRates.parse(args.faults)).events()
                        if ev.lp is not None}
            deadline = time.monotonic() + args.timeout
            last = None
            while time.monotonic() < deadline:
                time.sleep(1.0)
                last = status(cfg)
                if last["executions"] >= len(expected):
                    time.sleep(2.0)      # let late resends arrive: they must be duplicates
                    last = status(cfg)
                    # and let the post-trade pipeline catch up with the intake
                    # (a stop does not wait for fills it left to the database)
                    while time.monotonic() < deadline:
                        booked = asyncio.run(posttrade_check(db_url))
                        if booked["posttrade_cursor"] == booked["last_fill_id"]:
                            break
                        time.sleep(1.0)
                    break
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                tail = (tmp / "engine.log").read_text(errors="replace").splitlines()[-30:]
                print("the engine did not stop within 60 s; its log ends:\n" + "\n".join(tail),
                      file=sys.stderr)
                raise
        finally:
            lp.send_signal(signal.SIGTERM)
            lp_out, _ = lp.communicate(timeout=30)
        ids = asyncio.run(fill_ids(db_url))
        final = status(cfg)
        lp_summary = json.loads(lp_out.decode().strip().splitlines()[-1]) if lp_out.strip() else {}
        result = {
            "count": args.count, "rate": args.rate, "kills": kills, "gateway_kills": gateway_kills,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "database": "postgresql" if args.database_url else "sqlite",
            "expected_executions": len(expected), "executions": final["executions"],
            "distinct_exec_ids": len(set(ids)), "rows": len(ids),
            "missing": len(expected - set(ids)), "unexpected": len(set(ids) - expected),
            "duplicates_ignored": final["duplicates_ignored"], "conflicts": final["conflicts"],
            "lp_resend_requests": lp_summary.get("resend_requests_received"),
            "lp_messages_resent": lp_summary.get("messages_resent"),
            "lp_logons": lp_summary.get("logons"),
        }
        booked = asyncio.run(posttrade_check(db_url))
        result.update(booked)
        ok = (result["missing"] == 0 and result["unexpected"] == 0 and len(ids) == len(set(ids))
              == len(expected) and final["conflicts"] == 0
              and booked["posttrade_cursor"] == booked["last_fill_id"] and booked["fills_booked_twice"] == 0
              and booked["bookings_reversed_twice"] == 0 and not booked["ledgers_unbalanced"])
        result["ok"] = ok
        print(json.dumps(result, indent=2))
        return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("STP_LOG_LEVEL", "warning")
    sys.exit(main())
