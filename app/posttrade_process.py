"""The post-trade pipeline in a process of its own.

The engine's event loop runs the intake in Python and quickfix's callbacks
need the same GIL; with post-trade in the same loop, one core does all of it
(bench/inprocess.py: intake ~50 us and post-trade ~115 us of CPU per fill).
With ``[engine] posttrade = "process"`` (the default) the engine starts
``run_engine.py posttrade`` as its child: post-trade, the outbox relay and the
MQTT command listener run there, on the other core, and the engine's loop
keeps the intake alone.

The hand-off is the database: the intake commits fills, quotes and breaks as
before and writes one byte to the child's stdin after each commit; the child
reads what is new by its cursor (``PostTrade.catch_up``), which is also how it
starts.  Nothing crosses the pipe that is not already committed, so a crash
of either process loses nothing: the next start catches up from the cursor.

One post-trade process per database at a time: the child holds
``Database.exclusive("posttrade")`` while it works.  A child still finishing
its batch after its engine was killed makes the next engine's child wait for
it instead of booking the same fills twice.

The child stops when its stdin closes (the engine stopping, or dying): it
processes what is committed, lets the relay publish, and exits.  It ignores
SIGINT (Ctrl-C reaches the whole process group; the engine decides) and
treats SIGTERM as a stop.

With ``[engine] posttrade = "external"`` the engine starts no post-trade:
``run_engine.py posttrade --standalone`` runs separately (on another host,
against PostgreSQL), reads what is new every ``posttrade_poll_ms`` instead
of being poked, and stops on SIGINT or SIGTERM.  The lock is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import structlog

from adapters.child import ChildSupervisor
from adapters.config import EngineConfig, engine_subcommand
from stp.backoff import Backoff

log = structlog.get_logger("engine.posttrade_process")

class PostTradeProcess:
    """The engine's side: start the child, tell it about commits, stop it.
    ``async with PostTradeProcess(cfg)`` starts it and stops it however the
    block ends.

    The process itself is an ``adapters.child.ChildSupervisor``'s: a child
    that dies is started again after 1 s (committed fills wait in the
    database: the new child catches up from the cursor), one that keeps
    dying within ``healthy_s`` of its start waits 2 s, 4 s... up to 30 s.
    Stopping closes its stdin and waits up to ``stop_timeout`` for it to
    process what is committed, then kills it (what it had not committed is
    processed at the next start)."""

    def __init__(self, cfg: EngineConfig, log_level: str | None = None,
                 stop_timeout: float = 600.0, healthy_s: float = 10.0) -> None:
        self.cfg = cfg
        self.log_level = log_level
        self.stop_timeout = stop_timeout
        self._child = ChildSupervisor("posttrade_process", lambda: self.command(), restart=Backoff(1.0, 30.0),
                                      stop_grace=stop_timeout, healthy_s=healthy_s, launch=self._launch,
                                      logger=log)

    def command(self) -> list[str]:
        return engine_subcommand("posttrade", self.cfg, self.log_level)

    @property
    def restarts(self) -> int:
        return self._child.restarts

    @property
    def exit_code(self) -> int | None:
        return self._child.exit_code

    @property
    def pid(self) -> int | None:
        return self._child.pid

    async def start(self) -> None:
        await self._child.start()

    async def _launch(self) -> None:
        await self._child.spawn()
        log.info("posttrade_process_started", pid=self._child.pid)

    def notify(self) -> None:
        """Something was committed: one byte down the pipe (never blocks; a
        dead child's pipe takes nothing: the supervisor restarts it)."""
        with contextlib.suppress(Exception):        # never into the intake's commit
            self._child.write(b".")

    async def stop(self) -> int | None:
        """Close the pipe and wait until the child has processed what is committed."""
        return await self._child.stop(self.stop_timeout)

    async def __aenter__(self) -> PostTradeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())


async def run_posttrade(cfg: EngineConfig, standalone: bool = False) -> dict[str, Any]:
    """The child: post-trade, outbox relay and command listener until stdin
    closes; standalone: polling the database, until SIGINT or SIGTERM."""
    from adapters.db.repository import Database
    from adapters.reference import load_reference
    from app.posttrade_parts import running_posttrade

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set if standalone else lambda: None)
    reader = asyncio.StreamReader()
    if not standalone:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reference = load_reference(cfg.reference_dir)
    summary: dict[str, Any] = {}
    async with Database(cfg.database_url) as db:
        await db.migrate()        # a standalone post-trade may start before any engine
        waited = time.monotonic()
        async with db.exclusive("posttrade"):
            if time.monotonic() - waited > 1.0:
                log.warning("posttrade_lock_waited", seconds=round(time.monotonic() - waited, 1))
            # short transactions: SQLite has one writer at a time, and the
            # intake's commit waits behind this one.  Measured (bench/intake.py
            # at 10,000 fills/s offered, bench/pipeline.py at full speed):
            # 2000 fills a batch, p99 receipt-to-commit 250-270 ms and 7,400
            # fills/s end to end; 500 a batch, 105-170 ms and 5,500-5,700/s
            async with running_posttrade(cfg, db, reference, catch_up_batch=cfg.posttrade_batch) as parts:
                posttrade = parts.posttrade

                async def pokes() -> None:
                    while True:
                        data = await reader.read(65536)
                        if not data:
                            stop.set()          # the engine stopped (or died)
                            return
                        posttrade.poke()
                        posttrade.committed.set()     # intake breaks for the relay

                async def polls() -> None:
                    while True:
                        await asyncio.sleep(cfg.posttrade_poll_ms / 1000)
                        posttrade.poke()
                        posttrade.committed.set()

                reading = asyncio.create_task(polls() if standalone else pokes(), name="posttrade-pokes")
                log.info("posttrade_process_ready", cursor=posttrade.cursor, standalone=standalone)
                try:
                    await stop.wait()
                finally:
                    reading.cancel()
                    posttrade.poke()                  # whatever was committed last
            summary = parts.summary()
    log.info("posttrade_process_stopped", **summary)
    return summary
