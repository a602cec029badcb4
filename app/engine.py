"""The engine process: database, FIX gateway, intake, until signalled.

Start: migrate the schema, load the committed state (next ids, each session's
last inbound MsgSeqNum), start post-trade (in its own process by default:
app/posttrade_process.py; ``[engine] posttrade = "inline"`` keeps it in
this event loop), start the intake task, start the FIX gateway (quickfix in
its own process: adapters/fix/gateway.py; each session resumes after its
committed sequence number).  Stop (SIGINT/SIGTERM): close the hand-off from
the gateway, commit what the intake has queued, have the gateway log every
session out, let post-trade process what is committed (and the outbox
publish it), log a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.config import EngineConfig, session_schedule
from adapters.db.repository import Database
from adapters.fix.gateway import FixGateway, InboundQueue
from adapters.reference import load_reference
from app.posttrade_parts import running_posttrade
from app.posttrade_process import PostTradeProcess
from handlers.intake import Intake
from stp.intake import IntakeState
from stp.sessions import SessionSchedule, resume_in_same_day, session_day
from stp.timestamps import us_to_datetime

log = structlog.get_logger("engine")










async def run_engine(cfg: EngineConfig, started: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None, log_level: str | None = None) -> dict[str, Any]:
    """Run the engine until ``stop`` (or forever); its summary.

    Every resource is entered on one exit stack, which unwinds them however
    the run ends (a stop, an exception, a cancellation, a start-up that failed
    part way) in the order exactly once needs: the session resets stop; the
    hand-off from the gateway closes and the intake commits what it queued
    (what arrives after that is resent on the next start); the gateway logs
    every session out; the sessions are marked down; post-trade processes
    what is committed and the relay publishes it (here or in the post-trade
    child); the summary is logged; the engine lock goes, then the database."""
    reference = load_reference(cfg.reference_dir)
    summary: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database(cfg.database_url))
        await db.migrate()
        # one engine per database: `session reset` knows from this lock whether an
        # engine owns the sessions (a killed engine's lock goes with it)
        await stack.enter_async_context(db.exclusive("engine"))
        stack.callback(lambda: log.info("engine_stopped", **summary))
        state = await db.load_intake_state()
        schedules = {s.name: session_schedule(s) for s in cfg.sessions}
        await _session_days_at_start(db, state, schedules)
        await db.set_sessions_down(list(schedules), "engine started: not logged on yet")
        queue = InboundQueue(cfg.queue_max)
        intake = Intake(queue, db, state, batch_max=cfg.batch_max, known_symbols=reference.symbols,
                        topic_prefix=cfg.mqtt_topic_prefix, limits=reference.amount_limits())
        await intake.load_reference_prices()
        intake.schedules = schedules
        pending_outbound = dict(state.pending_outbound)
        # (re)started with the committed sequence numbers and their session days,
        # once the intake has committed what an earlier gateway delivered
        gateway = FixGateway(cfg, queue, resume=lambda: dict(intake.last_seq), log_level=log_level,
                             drained=intake.drained, days=lambda: dict(intake.days),
                             outbound=lambda: dict(pending_outbound))
        intake.send_dont_know = gateway.send_dont_know
        intake.send_business_reject = gateway.send_business_reject
        intake.quote_sessions = frozenset(s.name for s in cfg.lps)
        if cfg.posttrade_mode == "process":
            child = PostTradeProcess(cfg, log_level)
            # the child processes what the intake committed, then exits
            stack.callback(lambda: summary.update(posttrade_process_exit=child.exit_code,
                                                  posttrade_process_restarts=child.restarts))
            await stack.enter_async_context(child)
            intake.after_commit = child.notify
        elif cfg.posttrade_mode == "external":
            log.info("posttrade_external", note="post-trade is not started here: run "
                     "`run_engine.py posttrade --standalone` with this configuration")
        else:
            parts = await stack.enter_async_context(running_posttrade(cfg, db, reference))
            stack.callback(lambda: summary.update(parts.summary()))
            posttrade = parts.posttrade
            intake.committed = posttrade.committed      # intake breaks wake the relay too
            intake.on_committed = posttrade.submit
            intake.on_quotes = posttrade.submit_quotes
            posttrade.intake_waiting = lambda: len(queue) > 0
        intake_task = asyncio.create_task(intake.run(), name="intake")
        stack.push_async_callback(_gateway_stopped, gateway, db, list(schedules), summary)
        stop_intake = _intake_stopper(intake, queue, intake_task, summary)
        stack.push_async_callback(stop_intake)          # if the gateway never starts
        # what start-up built lives as long as the process: keep it out of the
        # collector's scans (full collections paused the loop for 75-160 ms)
        gc.collect()
        gc.freeze()
        await stack.enter_async_context(gateway)        # its exit logs the sessions out
        stack.push_async_callback(stop_intake)          # before the gateway stops
        if pending_outbound:
            await db.clear_pending_outbound(list(pending_outbound))
            log.info("session_outbound_applied", outbound=pending_outbound)
            pending_outbound.clear()
        resets = asyncio.create_task(_session_resets(db, gateway), name="session-resets")
        stack.callback(resets.cancel)
        log.info("engine_started", config=str(cfg.path), database=_redact(cfg.database_url),
                 lps=[s.name for s in cfg.lps], platforms=[s.name for s in cfg.platforms],
                 resume={s.name: state.last_seq.get(s.name) for s in cfg.sessions},
                 session_days={s.name: state.session_days.get(s.name) for s in cfg.sessions},
                 posttrade=cfg.posttrade_mode, gateway_pid=(gateway.ready or {}).get("pid"))
        if started is not None:
            started.set()
        await (stop or asyncio.Event()).wait()
    return summary


def _intake_stopper(intake: Intake, queue: InboundQueue, task: asyncio.Task[None],
                    summary: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """Close the hand-off from the gateway, commit what the intake has queued,
    wait for it to end, add its summary: once, however often it is called."""
    stopped = False

    async def stop_intake() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        queue.closed = True
        await intake.drain_and_stop()
        await asyncio.shield(task)
        summary.update(intake.summary())

    return stop_intake


async def _gateway_stopped(gateway: FixGateway, db: Database, sessions: list[str],
                           summary: dict[str, Any]) -> None:
    """After the gateway has logged the sessions out: they are down."""
    summary["gateway_exit"] = gateway.exit_code
    try:
        await db.set_sessions_down(sessions, "engine stopped")
    except Exception as exc:
        log.error("session_status_not_written", error=repr(exc)[:300])
    summary["gateway_restarts"] = gateway.restarts
    summary["gateway_quarantined"] = gateway.quarantined
    summary["gateway_send_failures"] = gateway.send_failures


async def _session_days_at_start(db: Database, state: IntakeState,
                                 schedules: dict[str, SessionSchedule]) -> None:
    """Resume a session's committed inbound MsgSeqNum only within the session
    day it was committed in.  After the boundary both sides count from 1: the
    new day is committed now (last_seq 0), so the gateway hands quickfix 1 and
    not the previous day's number."""
    now = datetime.now(UTC)
    for name, schedule in schedules.items():
        if name not in state.last_seq:
            continue
        stored = state.session_days.get(name)
        if stored is None and name in state.updated_us:       # a row from before session days
            stored = session_day(schedule, us_to_datetime(state.updated_us[name]))
        current = session_day(schedule, now)
        if resume_in_same_day(schedule, stored, now):
            if state.session_days.get(name) is None:
                await db.commit_session_day(name, current, state.last_seq[name], reset=False)
                state.session_days[name] = current
            continue
        log.info("session_new_day", session=name, committed_day=stored, session_day=current,
                 committed_seq=state.last_seq[name], schedule=schedule.describe(),
                 note="the previous day's numbers are not resumed: both sides start from 1")
        await db.commit_session_day(name, current, 0)
        state.last_seq[name] = 0
        state.session_days[name] = current


async def _session_resets(db: Database, gateway: FixGateway, every_s: float = 0.5) -> None:
    """Ops' `session reset` requests (``session_resets`` rows, pending): the
    gateway sets quickfix's numbers and answers; the intake commits the new
    state with the audit row."""
    sent: set[int] = set()
    restarts = gateway.restarts
    while True:
        if gateway.restarts != restarts:       # a new gateway: what the old one had not answered, again
            restarts = gateway.restarts
            sent.clear()
        try:
            for row in await db.pending_session_resets():
                if row["id"] in sent:
                    continue
                sent.add(row["id"])
                inbound, outbound = row["inbound"], row["outbound"]
                if row["session"] not in gateway.sessions:
                    await db.fail_session_reset(row["id"], f"this engine runs no session {row['session']}")
                elif not gateway.set_sequence(row["session"], row["id"], inbound, outbound,
                                              f"sequence numbers reset by {row['requested_by']}"):
                    sent.discard(row["id"])           # no gateway at the moment: next round
                else:
                    log.warning("session_reset_requested", session=row["session"], by=row["requested_by"],
                                inbound=inbound, outbound=outbound, request=row["id"])
        except Exception as exc:
            log.error("session_reset_poll_failed", error=repr(exc)[:300])
        await asyncio.sleep(every_s)




def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


async def status(cfg: EngineConfig) -> dict[str, Any]:
    async with Database(cfg.database_url) as db:
        await db.migrate()
        result = await db.status()
    now = datetime.now(UTC)
    for spec in cfg.sessions:
        entry = result["sessions"].setdefault(spec.name, {"last_seq": None, "resets": 0, "executions": 0,
                                                           "session_day": None, "logged_on": None,
                                                           "last_logon": None, "last_logout": None,
                                                           "last_reason": None})
        entry["role"] = spec.role
        schedule = session_schedule(spec)
        entry["schedule"] = schedule.describe()
        entry["session_day_now"] = session_day(schedule, now)
    return result
