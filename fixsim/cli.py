"""Command line of the simulators and the conformance acceptor:
``run_engine.py simulate ROLE``.

  simulate lp           LP simulator (FIX acceptor streaming ExecutionReports)
  simulate platform     trading-platform simulator (FIX initiator)
  simulate sink         a counting FIX peer that checks exactly-once delivery
  simulate statement    the LP's end-of-day trade statement (CSV) of a scenario
  simulate conformance  the session layer in the QuickFIX acceptance-test profile

QA's tools, on the project's own FIX engine (``fixsim.session``): the
engine's production path never imports this package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return "127.0.0.1", int(port)
    return host or "127.0.0.1", int(port)


def _start_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _add_sim_options(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--port", type=int, required=True,
                   help="port to listen on" if role == "lp" else "engine port to connect to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--count", type=int, default=1000, help="scenario events (ExecutionReports)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=None, help="ExecutionReports per second (default: max)")
    p.add_argument("--pairs", default=None, help="comma-separated, e.g. EUR/USD,USD/JPY,USD/CAD")
    p.add_argument("--faults", default="",
                   help="fault rates, e.g. price=0.01,garbled=0.001 or all=0.01 "
                        "(price, quantity, side, value_date, missing_lp, missing_platform, "
                        "execid_reuse, late, duplicate, possdup, seq_gap, garbled, disconnect)")
    p.add_argument("--sender-comp-id", default="LP1" if role == "lp" else "PLATFORM")
    p.add_argument("--target-comp-id", default="STP")
    p.add_argument("--begin-string", default="FIX.4.4", choices=["FIX.4.4", "FIX.4.2"])
    p.add_argument("--lp-name", default=None, help="ExecID prefix (default: the LP's CompID)")
    p.add_argument("--state-dir", type=Path, default=Path("var/sim"),
                   help="sequence numbers, sent messages and scenario position")
    p.add_argument("--reset", action="store_true", help="start over: sequence 1, first event")
    p.add_argument("--start", type=_start_time, default=None,
                   help="first TransactTime, ISO 8601 (default: today 08:00 UTC)")
    p.add_argument("--linger", type=float, default=5.0,
                   help="seconds to stay up idle after the last fill (-1: until signalled)")
    p.add_argument("--heartbeat", type=int, default=30)
    p.add_argument("--wait-logon", type=float, default=None,
                   help="give up after this many seconds without a counterparty")
    p.add_argument("--session-reset-at", type=_start_time, default=None,
                   help="ISO 8601 moment of the simulator's session-day boundary: drop the connection "
                        "and start again from MsgSeqNum 1 (the scenario goes on)")
    p.add_argument("--reset-flag", action="store_true",
                   help="with --session-reset-at: log on again with ResetSeqNumFlag=Y (an initiator: "
                        "the platform simulator)")
    if role == "lp":
        p.add_argument("--quotes-every", type=int, default=0,
                       help="send a market-data snapshot (35=W) of the pair after every N fills (0: none)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_engine.py simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sim_sub = parser.add_subparsers(dest="role", required=True)
    _add_sim_options(sim_sub.add_parser("lp", help="LP simulator (acceptor)"), "lp")
    _add_sim_options(sim_sub.add_parser("platform", help="platform simulator (initiator)"), "platform")

    sink = sim_sub.add_parser("sink", help="counting FIX peer that checks exactly-once delivery")
    mode = sink.add_mutually_exclusive_group(required=True)
    mode.add_argument("--connect", type=_host_port, help="HOST:PORT of an LP simulator")
    mode.add_argument("--listen", type=_host_port, help="[HOST:]PORT for a platform simulator")
    sink.add_argument("--sender-comp-id", default="STP")
    sink.add_argument("--target-comp-id", default="LP1")
    sink.add_argument("--begin-string", default="FIX.4.4", choices=["FIX.4.4", "FIX.4.2"])
    sink.add_argument("--expect", type=int, default=None, help="stop after this many distinct ExecIDs")
    sink.add_argument("--idle", type=float, default=10.0, help="stop after this long without a fill")
    sink.add_argument("--no-validate", action="store_true",
                      help="skip data-dictionary validation of inbound messages")

    stm = sim_sub.add_parser("statement", help="the LP's end-of-day trade statement (CSV) of a scenario")
    stm.add_argument("--out", type=Path, required=True)
    stm.add_argument("--count", type=int, default=1000)
    stm.add_argument("--seed", type=int, default=1)
    stm.add_argument("--pairs", default=None)
    stm.add_argument("--faults", default="")
    stm.add_argument("--start", type=_start_time, default=None)
    stm.add_argument("--lp-name", default="LP1", help="ExecID prefix (the LP simulator's CompID)")

    conf = sim_sub.add_parser("conformance", help="session layer as the QuickFIX acceptance-test acceptor")
    conf.add_argument("--port", type=int, required=True)
    conf.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return _simulate(_build_parser().parse_args(argv))


def _simulate(args: argparse.Namespace) -> int:
    if args.role == "conformance":
        from fixsim import conformance

        return _run_async(conformance.serve(args.port, args.host))
    if args.role == "sink":
        from fixsim.sink import SinkOptions, run_sink, summary_json

        sink_opt = SinkOptions(sender_comp_id=args.sender_comp_id, target_comp_id=args.target_comp_id,
                               begin_string=args.begin_string, connect=args.connect,
                               listen=args.listen, expect=args.expect, idle=args.idle,
                               validate=not args.no_validate)
        results: list[dict[str, object]] = []

        async def sink() -> None:
            results.append(await run_sink(sink_opt))

        _run_async(sink())
        if results:
            print(summary_json(results[0]))
            return 0 if results[0].get("complete") else 1
        return 1
    from fixsim.runner import SimOptions, run_simulator
    from fixsim.scenario import DEFAULT_PAIRS, FaultRates, Scenario, default_start

    try:
        faults = FaultRates.parse(args.faults)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = tuple(p.strip() for p in args.pairs.split(",")) if args.pairs else DEFAULT_PAIRS
    if args.role == "statement":
        from fixsim.statement import write_statement

        scenario = Scenario(seed=args.seed, count=args.count, pairs=pairs, faults=faults,
                            start=args.start or default_start(), lp_name=args.lp_name)
        with args.out.open("w") as out:
            lines = write_statement(scenario, out)
        print(json.dumps({"statement": str(args.out), "lines": lines}))
        return 0
    opt = SimOptions(role=args.role, port=args.port, host=args.host, count=args.count,
                     seed=args.seed, rate=args.rate, pairs=pairs, faults=faults,
                     sender_comp_id=args.sender_comp_id, target_comp_id=args.target_comp_id,
                     begin_string=args.begin_string, state_dir=args.state_dir, reset=args.reset,
                     start=args.start, linger=args.linger, heartbeat=args.heartbeat,
                     lp_name=args.lp_name, progress=args.progress, wait_logon=args.wait_logon,
                     quotes_every=getattr(args, "quotes_every", 0),
                     session_reset_at=args.session_reset_at, reset_flag=args.reset_flag)
    try:
        return _run_async(run_simulator(opt))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


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
