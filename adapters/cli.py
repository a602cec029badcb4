"""Command line: ``run_engine.py [run|status|simulate ...]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

from adapters import logs


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_engine.py", description=__doc__)
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error")
    sub = parser.add_subparsers(dest="command")

    sim = sub.add_parser("simulate", help="simulators and the FIX conformance acceptor")
    sim_sub = sim.add_subparsers(dest="role", required=True)
    conf = sim_sub.add_parser("conformance", help="session layer as the QuickFIX acceptance-test acceptor")
    conf.add_argument("--port", type=int, required=True)
    conf.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    if args.command == "simulate" and args.role == "conformance":
        from adapters.fix import conformance

        return _run_async(conformance.serve(args.port, args.host))
    parser.print_help()
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
