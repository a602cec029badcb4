"""Command line of the FX STP engine: ``run_engine.py COMMAND``.

  run                   the engine (default: config/engine.toml) until SIGINT/SIGTERM
  status                what the database holds: executions, duplicates, conflicts, rejects
  db upgrade            bring the database schema to the newest migration
  report settlements    net per counterparty and currency for a value date, with instructions
  report positions      positions per account and pair, with margin
  settlement status     report a settlement as settled or failed (the desk's input)
  cash deposit|withdraw a client's cash movement
  breaks list|show|watch the breaks: from the database, or live from the bus
  breaks ack|resolve    the break lifecycle (who, why), applied by the engine
  allocate              move an unallocated LP fill from its house account to a client account
  recon statement       end of day: the LP's trade statement (CSV) against the engine's fills
  recon positions       end of day: the LP's position report (CSV) against the engine's nets
  session reset         set a FIX session's sequence numbers (audited; through the running engine)
  simulate ...          the simulators and the conformance acceptor (fixsim/cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters import logs


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_engine.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error "
                        "(default: $STP_LOG_LEVEL or info)")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the engine until SIGINT/SIGTERM")
    run.add_argument("--config", default=None, help="TOML file (default: config/engine.toml)")
    pt = sub.add_parser("posttrade", help="the post-trade process (the engine starts it itself and it "
                        "runs until its stdin closes; with --standalone, for [engine] posttrade = "
                        "\"external\", until SIGINT/SIGTERM)")
    pt.add_argument("--config", default=None)
    pt.add_argument("--standalone", action="store_true",
                    help="run on its own: poll the database for what the intake committed")
    gw = sub.add_parser("gateway", help="the FIX gateway process: quickfix's sessions (the engine starts "
                        "it itself and talks to it over its stdin and stdout)")
    gw.add_argument("--config", default=None)
    st = sub.add_parser("status", help="executions, duplicates, conflicts, rejects, sequence numbers")
    st.add_argument("--config", default=None)
    st.add_argument("--json", action="store_true", help="one JSON object")
    rep = sub.add_parser("report", help="settlements and positions, as the desk sees them")
    rep.add_argument("what", choices=["settlements", "positions"])
    rep.add_argument("--config", default=None)
    rep.add_argument("--date", type=date.fromisoformat, help="value date (settlements), YYYY-MM-DD")
    rep.add_argument("--account", default=None, help="one account (positions)")
    rep.add_argument("--json", action="store_true")
    stl = sub.add_parser("settlement", help="the desk's settlement status input")
    stl.add_argument("action", choices=["status"])
    stl.add_argument("--config", default=None)
    stl.add_argument("--counterparty", required=True)
    stl.add_argument("--currency", required=True)
    stl.add_argument("--date", type=date.fromisoformat, required=True, help="value date")
    stl.add_argument("--status", choices=["settled", "failed"], required=True)
    stl.add_argument("--reason", default=None)
    stl.add_argument("--version", type=int, default=None, help="instruction version (default: newest)")
    cash = sub.add_parser("cash", help="deposit or withdraw client cash")
    cash.add_argument("action", choices=["deposit", "withdraw"])
    cash.add_argument("--config", default=None)
    cash.add_argument("--account", required=True)
    cash.add_argument("--currency", required=True)
    cash.add_argument("--amount", type=Decimal, required=True)
    cash.add_argument("--value-date", type=date.fromisoformat, default=None)
    cash.add_argument("--reference", default=None, help="unique reference (default: generated)")
    cash.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                      help="wait this long for the engine's answer (booked or refused); 0: do not wait")
    brk = sub.add_parser("breaks", help="breaks: list, show, watch the bus")
    brk.add_argument("action", choices=["list", "show", "watch", "ack", "resolve"])
    brk.add_argument("break_id", nargs="?", help="for show, ack, resolve")
    brk.add_argument("--by", default=None, help="ack/resolve: who")
    brk.add_argument("--reason", default=None, help="resolve: why (required); ack: optional note")
    brk.add_argument("--config", default=None)
    brk.add_argument("--state", default=None, help="list: open, acknowledged, resolved")
    brk.add_argument("--type", default=None, help="list: a break type, e.g. mismatch")
    brk.add_argument("--limit", type=int, default=100)
    brk.add_argument("--count", type=int, default=None, help="watch: stop after this many")
    brk.add_argument("--client-id", default=None, help="watch: a persistent session under this id")
    brk.add_argument("--json", action="store_true")
    alloc = sub.add_parser("allocate", help="move an LP fill booked on its house account to a client "
                           "account (applied by the engine, through the inbox)")
    alloc.add_argument("--config", default=None)
    alloc.add_argument("--session", required=True, help="the LP session of the fill")
    alloc.add_argument("--exec-id", required=True, help="the fill's ExecID (17)")
    alloc.add_argument("--account", required=True, help="the client account")
    alloc.add_argument("--by", required=True, help="who allocates")
    alloc.add_argument("--reason", default=None, help="optional note (kept with the resolved break)")
    rec = sub.add_parser("recon", help="end-of-day reconciliation against the LP's files (CSV)")
    rec.add_argument("what", choices=["statement", "positions"])
    rec.add_argument("--config", default=None)
    rec.add_argument("--session", required=True, help="the LP session (its counterparty name)")
    rec.add_argument("--file", type=Path, required=True, help="the CSV file (README: formats)")
    rec.add_argument("--trade-date", type=date.fromisoformat, default=None,
                     help="statement: only this trade date (default: the dates the statement lists)")
    rec.add_argument("--json", action="store_true")
    ses = sub.add_parser("session", help="FIX sessions: reset a session's sequence numbers (audited)")
    ses.add_argument("action", choices=["reset"])
    ses.add_argument("--config", default=None)
    ses.add_argument("--session", required=True, help="the [[lp]] or [[platform]] session name")
    ses.add_argument("--inbound", type=int, default=None,
                     help="the next MsgSeqNum expected from the counterparty (default: 1 when "
                          "--outbound is not given either)")
    ses.add_argument("--outbound", type=int, default=None,
                     help="the next MsgSeqNum we send (default: 1 when --inbound is not given either)")
    ses.add_argument("--by", default=None, help="who (default: the login name)")
    ses.add_argument("--reason", default=None)
    ses.add_argument("--timeout", type=float, default=30.0,
                     help="seconds to wait for the running engine to apply it")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--config", default=None)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:            # bare `run_engine.py`: the default configuration
        args = parser.parse_args([*(argv or [])[:0], *(["--log-level", args.log_level]
                                                       if args.log_level else []), "run"])
    if args.command in ("run", "posttrade", "gateway", "status", "db", "report", "settlement", "cash",
                        "breaks", "recon", "allocate", "session"):
        return _engine_command(args)
    parser.print_help()
    return 2


def _restrict_state(cfg: Any) -> None:
    """umask 077 (every state file created from here on is 0600), and the
    same modes on the state that exists: the SQLite database and its side
    files, quickfix's stores, logs and generated settings (adapters/secure.py)."""
    from adapters.config import sqlite_path
    from adapters.secure import restrict_state, sqlite_state_files

    db_file = sqlite_path(cfg.database_url)
    restrict_state([cfg.quickfix_dir, *(sqlite_state_files(db_file) if db_file is not None else [])])


def _engine_command(args: argparse.Namespace) -> int:
    from adapters import config
    from adapters.reference import ReferenceError, load_reference

    try:
        cfg = config.load(args.config)
        load_reference(cfg.reference_dir)          # fail early and clearly
    except (config.ConfigError, ReferenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level or cfg.log_level, json=cfg.log_format != "console")
    _restrict_state(cfg)
    if args.command == "status":
        from app.engine import status

        result = asyncio.run(status(cfg))
        print(json.dumps(result, indent=None if args.json else 2, sort_keys=True))
        return 0
    if args.command in ("report", "settlement", "cash", "allocate"):
        return asyncio.run(_desk_command(args, cfg))
    if args.command == "breaks":
        return _breaks_command(args, cfg)
    if args.command == "recon":
        return asyncio.run(_recon_command(args, cfg))
    if args.command == "session":
        return asyncio.run(_session_command(args, cfg))
    if args.command == "db":
        from adapters.db.repository import Database

        async def upgrade() -> None:
            async with Database(cfg.database_url) as db:
                await db.migrate()

        asyncio.run(upgrade())
        return 0
    if args.command == "posttrade":
        from app.posttrade_process import run_posttrade

        asyncio.run(run_posttrade(cfg, standalone=args.standalone))
        return 0
    if args.command == "gateway":
        from app.gateway_process import run_gateway

        return run_gateway(cfg)
    from adapters.fix.gateway import GatewayExited
    from app.engine import run_engine

    try:
        return _run_async(run_engine(cfg, log_level=args.log_level))
    except GatewayExited as exc:
        print(f"error: the FIX sessions could not start: {exc} (see the gateway's log lines)",
              file=sys.stderr)
        return 1


def _breaks_command(args: argparse.Namespace, cfg: Any) -> int:
    from adapters.db import inbox, queries
    from adapters.db.repository import Database
    from app import desk

    if args.action == "watch":
        return _run_async(desk.watch(cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_topic_prefix, sys.stdout,
                                     args.json, args.count, args.client_id))

    async def query() -> int:
        async with Database(cfg.database_url) as db:
            await db.migrate()
            if args.action in ("ack", "resolve"):

                if not args.break_id or not args.by:
                    print(f"error: breaks {args.action} needs a break id and --by", file=sys.stderr)
                    return 2
                if args.action == "resolve" and not args.reason:
                    print("error: breaks resolve needs --reason", file=sys.stderr)
                    return 2
                kind = "break_acknowledge" if args.action == "ack" else "break_resolve"
                payload = {"break_id": args.break_id, "by": args.by, "reason": args.reason}
                print(json.dumps({"queued": await inbox.enqueue(db, kind, payload), **payload}))
                return 0
            if args.action == "list":
                rows = await queries.list_breaks(db, args.state, args.type, args.limit)
                if args.json:
                    print(json.dumps(rows, indent=2))
                else:
                    for r in rows:
                        print(f"{r['break_id']}  {r['severity']:<8} {r['state']:<12} {r['type']:<24} "
                              f"x{r['occurrences']}  {r['summary']}")
                return 0
            if not args.break_id:
                print("error: breaks show needs a break id", file=sys.stderr)
                return 2
            found = await queries.show_break(db, args.break_id)
            if found is None:
                print(f"error: no break {args.break_id}", file=sys.stderr)
                return 1
            print(json.dumps(found, indent=2))
            return 0

    return asyncio.run(query())


async def _desk_command(args: argparse.Namespace, cfg: Any) -> int:
    from adapters.db import inbox, queries
    from adapters.db.repository import Database
    from app import reports

    async with Database(cfg.database_url) as db:
        await db.migrate()
        if args.command == "report":
            if args.what == "settlements":
                if args.date is None:
                    print("error: report settlements needs --date YYYY-MM-DD", file=sys.stderr)
                    return 2
                rows = await queries.settlements(db, args.date)
                print(json.dumps(rows, indent=2) if args.json else reports.format_settlements(rows))
            else:
                rows = await queries.positions(db, args.account)
                print(json.dumps(rows, indent=2) if args.json else reports.format_positions(rows))
            return 0
        if args.command == "allocate":
            if args.session not in {s.name for s in cfg.lps}:
                print(f"error: no [[lp]] session named {args.session}", file=sys.stderr)
                return 2
            if not args.by.strip() or len(args.by.strip()) > 80:
                print("error: allocate needs --by (who, at most 80 characters)", file=sys.stderr)
                return 2
            payload = inbox.allocate_payload(args.session, args.exec_id, args.account, args.by,
                                               args.reason)
            inbox_id = await inbox.enqueue(db, "allocate", payload)
        elif args.command == "settlement":
            payload = inbox.settlement_status_payload(args.counterparty, args.currency, args.date,
                                                        args.status, args.reason, args.version)
            inbox_id = await inbox.enqueue(db, "settlement_status", payload)
        else:
            amount = args.amount if args.action == "deposit" else -args.amount
            if args.amount <= 0:
                print("error: --amount must be positive", file=sys.stderr)
                return 2
            payload = inbox.cash_payload(args.account, args.currency, amount, args.value_date,
                                           args.reference)
            inbox_id = await inbox.enqueue(db, "cash", payload)
            result = await inbox.wait_applied(db, inbox_id, args.wait) if args.wait > 0 else None
            if result is not None:
                print(json.dumps({"inbox": inbox_id, **payload, "result": result}))
                if result.startswith("error:"):
                    print(f"refused: {result.removeprefix('error:').strip()} (nothing booked)",
                          file=sys.stderr)
                    return 1
                return 0
            if args.wait > 0:
                print(f"not applied within {args.wait:g} s (is the engine running?): it is applied when "
                      "the engine runs; its result is kept in the inbox", file=sys.stderr)
        print(json.dumps({"queued": inbox_id, **payload}))
        return 0


async def _recon(store: Any, reference: Any, cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    from handlers import recon

    if args.what == "statement":
        return await recon.reconcile_statement_file(
            store, reference, cfg.mqtt_topic_prefix, args.session, args.file, args.trade_date)
    return await recon.reconcile_positions_file(store, reference, cfg.mqtt_topic_prefix, args.session,
                                                args.file)


async def _recon_command(args: argparse.Namespace, cfg: Any) -> int:
    from adapters.db.posttrade import PostTradeStore
    from adapters.db.repository import Database
    from adapters.reference import load_reference
    from handlers.recon import ReconError

    if args.session not in {s.name for s in cfg.lps}:
        print(f"error: no [[lp]] session named {args.session}", file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"error: no file {args.file}", file=sys.stderr)
        return 2
    reference = load_reference(cfg.reference_dir)
    async with Database(cfg.database_url) as db:
        await db.migrate()
        try:
            result = await _recon(PostTradeStore(db), reference, cfg, args)
        except ReconError as exc:
            print(f"error: {exc}; nothing stored", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['kind']} {result['session']}: {result['lines']} lines, {result['matched']} matched, "
              f"{result['breaks']} breaks "
              + " ".join(f"{k}={v}" for k, v in sorted(result["by_type"].items())))
        for bad in result["unreadable_lines"]:
            print(f"  line {bad['line']}: {bad['error']}", file=sys.stderr)
    return 1 if result["unreadable_lines"] else 0


async def _session_command(args: argparse.Namespace, cfg: Any) -> int:
    """`session reset`: through the running engine (it owns the session: the
    gateway sets quickfix's numbers, the intake commits them with the audit
    row), or on the database directly when no engine runs (the next start
    hands quickfix the new numbers)."""
    import getpass

    from adapters.config import session_schedule
    from adapters.db.repository import Database
    from stp.sessions import session_day

    spec = next((s for s in cfg.sessions if s.name == args.session), None)
    if spec is None:
        print(f"error: no [[lp]] or [[platform]] session named {args.session}", file=sys.stderr)
        return 2
    inbound, outbound = args.inbound, args.outbound
    if inbound is None and outbound is None:
        inbound = outbound = 1
    for name, value in (("--inbound", inbound), ("--outbound", outbound)):
        if value is not None and value < 1:
            print(f"error: {name} must be a MsgSeqNum of 1 or more", file=sys.stderr)
            return 2
    by = (args.by or getpass.getuser()).strip()
    if not by or len(by) > 80:
        print("error: --by must say who, in at most 80 characters", file=sys.stderr)
        return 2
    async with Database(cfg.database_url) as db:
        await db.migrate()
        async with db.try_exclusive("engine") as no_engine:
            if no_engine:
                day = session_day(session_schedule(spec), datetime.now(UTC))
                result = await db.apply_session_reset(spec.name, by, args.reason, inbound, outbound, day)
                print(json.dumps(result, sort_keys=True))
                return 0
        reset_id = await db.request_session_reset(spec.name, by, args.reason, inbound, outbound)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        row = await db.session_reset_row(reset_id)
        while row is not None and row["state"] == "pending" and loop.time() < deadline:
            await asyncio.sleep(0.3)
            row = await db.session_reset_row(reset_id)
        print(json.dumps(row, sort_keys=True))
        if row is None or row["state"] == "pending":
            print(f"error: the running engine has not applied reset {reset_id} within {args.timeout:g} s "
                  "(it stays queued)", file=sys.stderr)
            return 1
        return 0 if row["state"] == "applied" else 1


def _run_async(coro: Coroutine[Any, Any, Any]) -> int:
    """Run until done, or until SIGINT/SIGTERM cancel it (it cleans up itself)."""

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    return 0
