"""LP and platform simulators: stream a scenario's fills over FIX.

The LP simulator is an acceptor (the engine connects to it, as to a real
LP's drop-copy session); the platform simulator is an initiator towards the
engine's platform acceptor.  Both stream ExecutionReports built from the same
deterministic scenario, inject faults on demand and count them, keep their
sequence numbers and sent messages in a file store (so they answer
ResendRequests after a reconnect or a restart of either side), and print a
JSON summary at the end.  The scenario position is kept beside the store, so
a restarted simulator continues where it stopped instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import structlog

from fixsim.dictionary import load_dictionary
from fixsim.fixmsg import er_body, md_body
from fixsim.scenario import (
    DEFAULT_PAIRS,
    FaultRates,
    Scenario,
    ScenarioEvent,
    SimFill,
    default_start,
    price_decimals,
    wire_faults,
)
from fixsim.session import Session, SessionConfig, UnsupportedMessageType
from fixsim.store import FileStore
from fixsim.transport import FixAcceptor, FixConnection, FixInitiator
from stp.fixwire import Message

log = structlog.get_logger("sim")

QUIET_BEFORE_RESET_S = 2.0      # the simulator's roll: nothing sent this long before its reset


@dataclass(slots=True)
class SimOptions:
    role: str                               # "lp" or "platform"
    port: int
    host: str = "127.0.0.1"
    count: int = 1000
    seed: int = 1
    rate: float | None = None               # ExecutionReports per second; None: as fast as possible
    pairs: tuple[str, ...] = DEFAULT_PAIRS
    faults: FaultRates = field(default_factory=FaultRates)
    sender_comp_id: str = "LP1"
    target_comp_id: str = "STP"
    begin_string: str = "FIX.4.4"
    state_dir: Path = Path("var/sim")
    reset: bool = False                     # forget sequence numbers and position first
    start: datetime | None = None           # first TransactTime (default: today 08:00 UTC)
    linger: float = 5.0                     # idle seconds after the last fill; <0: until signalled
    heartbeat: int = 30
    batch: int = 256
    lp_name: str | None = None              # ExecID prefix; default: the LP's CompID
    reconnect_interval: float = 1.0
    progress: bool | None = None            # live progress line; default: stderr is a terminal
    wait_logon: float | None = None         # give up if no counterparty logs on in time
    quotes_every: int = 0                   # LP: a market-data snapshot after every N ERs (0: none)
    # a session-day boundary of the simulator's own: at this moment it drops the
    # connection and starts again from MsgSeqNum 1 (both ways), as an LP with a
    # daily schedule does; with reset_flag its next Logon carries ResetSeqNumFlag=Y
    session_reset_at: datetime | None = None
    reset_flag: bool = False


@dataclass(slots=True)
class SimSummary:
    role: str
    session: str
    seed: int
    count: int
    events: int = 0                         # scenario events consumed
    execution_reports: int = 0              # distinct ERs sent (first sends)
    messages_sent: int = 0                  # every message, admin and resends included
    elapsed_s: float = 0.0
    rate_per_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    exec_types: dict[str, int] = field(default_factory=dict)
    logons: int = 0
    disconnects: int = 0
    resend_requests_received: int = 0
    messages_resent: int = 0
    gap_fills_sent: int = 0
    rejects_received: int = 0
    dont_know_trades_received: int = 0
    business_rejects_received: int = 0
    quotes: int = 0                         # market-data snapshots sent
    completed: bool = False

    def as_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__slots__}, sort_keys=True)


def _corrupt_checksum(raw: bytes) -> bytes:
    """Keep the frame, break its CheckSum: the peer must ignore it."""
    head, digits = raw[:-4], raw[-4:-1]
    return head + b"%03d\x01" % ((int(digits) + 1) % 256)


def _lose(raw: bytes) -> None:
    return None


class SimApplication:
    """What a simulator does with what the engine sends it."""

    def __init__(self, summary: SimSummary) -> None:
        self.summary = summary
        self.logged_on = asyncio.Event()

    def on_logon(self, session: Session) -> None:
        self.summary.logons += 1
        self.logged_on.set()

    def on_logout(self, session: Session) -> None:
        self.summary.disconnects += 1
        self.logged_on.clear()

    def from_admin(self, msg: Message, session: Session) -> None:
        if msg.msg_type == "3":
            self.summary.rejects_received += 1

    def from_app(self, msg: Message, session: Session) -> None:
        msg_type = msg.msg_type
        if msg_type == "Q":
            self.summary.dont_know_trades_received += 1
            log.warning("sim_dont_know_trade", session=session.config.key, exec_id=msg.get(17),
                        reason=msg.get(127), text=msg.get(58))
        elif msg_type == "j":
            self.summary.business_rejects_received += 1
            log.warning("sim_business_reject", session=session.config.key, ref_seq=msg.get(45),
                        reason=msg.get(380), text=msg.get(58))
        else:
            raise UnsupportedMessageType()


class FillStreamer:
    """Feeds one side of a scenario into a session, with faults."""

    def __init__(self, options: SimOptions, session: Session, app: SimApplication,
                 connection: Any, summary: SimSummary, out: TextIO = sys.stderr) -> None:
        self.opt = options
        self.session = session
        self.app = app
        self._connection = connection          # () -> FixConnection | None
        self.summary = summary
        self.out = out
        self.wire_rng = random.Random(f"wire-{options.role}-{options.seed}")
        self._cursor_path = options.state_dir / f"{session.config.key}.cursor"
        self._pending: list[str] = []
        self._late: list[SimFill] = []
        self._last_progress = 0.0
        self._started = 0.0

    # -- position ---------------------------------------------------------
    def _load_cursor(self) -> int:
        try:
            data = json.loads(self._cursor_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0
        if data.get("seed") != self.opt.seed:
            return 0
        return int(data.get("events", 0))

    def _save_cursor(self, events: int) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seed": self.opt.seed, "events": events}))
        os.replace(tmp, self._cursor_path)

    # -- streaming --------------------------------------------------------
    def _fill_of(self, event: ScenarioEvent) -> SimFill | None:
        return event.lp if self.opt.role == "lp" else event.platform

    def _count(self, name: str, n: int = 1) -> None:
        self.summary.faults[name] = self.summary.faults.get(name, 0) + n

    def _queue(self, fill: SimFill) -> None:
        faults = wire_faults(self.opt.faults, self.wire_rng) if self.opt.faults else ()
        body = er_body(fill, self.opt.begin_string)
        self.summary.execution_reports += 1
        types = self.summary.exec_types
        types[fill.exec_type] = types.get(fill.exec_type, 0) + 1
        if not faults:
            self._pending.append(body)
            return
        self._flush_pending()
        session = self.session
        if "seq_gap" in faults:
            self._count("seq_gap")
            seq = session.send("8", body, mangle=_lose)
        elif "garbled" in faults:
            self._count("garbled")
            seq = session.send("8", body, mangle=_corrupt_checksum)
        else:
            seq = session.send("8", body)
        if "duplicate" in faults:
            self._count("duplicate")
            session.send("8", body, header=[(97, "Y")])
        if "possdup" in faults:
            self._count("possdup")
            session.resend_possdup(seq)
        if "disconnect" in faults:
            self._count("disconnect")
            conn = self._connection()
            if conn is not None:
                conn.flush()
                if conn.transport is not None:
                    conn.transport.abort()
            self.app.logged_on.clear()

    def _quote(self, fill: SimFill) -> None:
        """A snapshot of the pair around the fill's (spot) price, one tick each side."""
        price = fill.spot_rate if fill.spot_rate is not None else fill.last_px
        tick = Decimal(1).scaleb(-price_decimals(fill.symbol))
        self._flush_pending()
        self.session.send("W", md_body(fill.symbol, price - tick, price + tick))
        self.summary.quotes += 1

    def _flush_pending(self) -> None:
        if self._pending:
            self.session.send_batch("8", self._pending)
            self._pending.clear()

    async def _wire(self) -> None:
        """Write what the session queued; wait for the socket to drain."""
        self._flush_pending()
        conn: FixConnection | None = self._connection()
        if conn is None:
            self.session.take_output()   # not connected: stored, resent on request
            return
        conn.flush()
        await conn.drain()

    async def run(self, scenario: Scenario) -> None:
        opt = self.opt
        summary = self.summary
        skip = 0 if opt.reset else self._load_cursor()
        events: Iterator[ScenarioEvent] = scenario.events()
        for _ in range(skip):
            next(events, None)
        summary.events = skip
        await self._wait_logon()
        self._started = time.monotonic()
        sent_at_start = summary.execution_reports
        batch = opt.batch if opt.rate is None else max(1, min(opt.batch, int(opt.rate / 50) or 1))
        done = False
        while not done:
            await self._quiet_before_day_end()
            if not self.app.logged_on.is_set():
                await self._wire()
                await self._wait_logon()
            for _ in range(batch):
                event = next(events, None)
                if event is None:
                    done = True
                    break
                summary.events += 1
                fill = self._fill_of(event)
                if fill is None:
                    self._count("missing_lp" if opt.role == "lp" else "missing_platform")
                    continue
                for name in event.injected_by(opt.role):
                    if name != "late":
                        self._count(name)
                if "late" in event.faults and opt.role == "lp":
                    self._late.append(fill)
                    continue
                self._queue(fill)
                if opt.quotes_every and opt.role == "lp" and \
                        not summary.execution_reports % opt.quotes_every:
                    self._quote(fill)
                if not self.app.logged_on.is_set():
                    break  # disconnected by a fault: wait for the next logon
            await self._wire()
            self._save_cursor(summary.events)
            await self._pace(summary.execution_reports - sent_at_start)
            self._progress()
        if self._late:
            await self._wait_logon()
            self._count("late", len(self._late))
            for fill in self._late:
                self._queue(fill)
            self._late.clear()
            await self._wire()
        elapsed = time.monotonic() - self._started
        summary.elapsed_s = round(elapsed, 3)
        summary.rate_per_s = round((summary.execution_reports - sent_at_start) / elapsed, 1) \
            if elapsed > 0 else 0.0
        summary.completed = True
        self._progress(final=True)

    async def _quiet_before_day_end(self) -> None:
        """An LP sends nothing in the last seconds of its session day (the
        roll): what it sent is delivered before both sides start from 1."""
        at = self.opt.session_reset_at
        if at is None:
            return
        now, end = time.time(), at.timestamp()
        if end - QUIET_BEFORE_RESET_S <= now < end:
            await self._wire()
            await asyncio.sleep(end - now + 0.05)

    async def _wait_logon(self) -> None:
        if self.app.logged_on.is_set():
            return
        if self.opt.wait_logon is None:
            await self.app.logged_on.wait()
        else:
            await asyncio.wait_for(self.app.logged_on.wait(), self.opt.wait_logon)

    async def _pace(self, sent: int) -> None:
        rate = self.opt.rate
        if rate:
            due = self._started + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                return
        await asyncio.sleep(0)   # let the loop read resend requests and heartbeats

    def _progress(self, final: bool = False) -> None:
        show = self.opt.progress if self.opt.progress is not None else self.out.isatty()
        if not show:
            return
        now = time.monotonic()
        if not final and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        s = self.summary
        elapsed = max(now - self._started, 1e-9)
        faults = sum(s.faults.values())
        self.out.write(f"\r{s.role} {s.session}: {s.events}/{s.count} events, "
                       f"{s.execution_reports} ER, {s.execution_reports / elapsed:,.0f}/s, "
                       f"faults {faults}, resends {self.session.counters.messages_resent}   ")
        if final:
            self.out.write("\n")
        self.out.flush()


def _session(opt: SimOptions, app: SimApplication) -> Session:
    config = SessionConfig(begin_string=opt.begin_string, sender_comp_id=opt.sender_comp_id,
                           target_comp_id=opt.target_comp_id, heartbeat_interval=opt.heartbeat,
                           initiator=opt.role == "platform")
    key = config.key
    if opt.reset:
        for suffix in (".seqnums", ".body", ".session", ".cursor"):
            with contextlib.suppress(FileNotFoundError):
                (opt.state_dir / f"{key}{suffix}").unlink()
    store = FileStore(opt.state_dir, key)
    return Session(config, app, store, load_dictionary(opt.begin_string))


async def run_simulator(opt: SimOptions, out: TextIO = sys.stdout) -> SimSummary:
    """Run an LP (acceptor) or platform (initiator) simulator to completion."""
    opt.state_dir.mkdir(parents=True, exist_ok=True)
    summary = SimSummary(role=opt.role, session="", seed=opt.seed, count=opt.count)
    app = SimApplication(summary)
    session = _session(opt, app)
    summary.session = session.config.key
    scenario = Scenario(seed=opt.seed, count=opt.count, pairs=opt.pairs, faults=opt.faults,
                        start=opt.start or default_start(),
                        lp_name=opt.lp_name or (opt.sender_comp_id if opt.role == "lp" else "LP1"))
    acceptor: FixAcceptor | None = None
    initiator: FixInitiator | None = None
    if opt.role == "lp":
        acceptor = FixAcceptor([session], opt.host, opt.port)
        await acceptor.start()
        connection = lambda: acceptor.connection(session)  # noqa: E731
    else:
        initiator = FixInitiator(session, opt.host, opt.port, opt.reconnect_interval)
        await initiator.start()
        connection = lambda: initiator.connection  # noqa: E731
    streamer = FillStreamer(opt, session, app, connection, summary)
    log.info("sim_started", role=opt.role, session=summary.session, port=opt.port,
             count=opt.count, seed=opt.seed, rate=opt.rate)
    day_reset = (asyncio.create_task(_session_day_reset(opt, session, app, connection))
                 if opt.session_reset_at is not None else None)
    try:
        await streamer.run(scenario)
        await _linger(opt, session)
    finally:
        if day_reset is not None:
            day_reset.cancel()
        c = session.counters
        summary.messages_sent = c.sent
        summary.resend_requests_received = c.resend_requests_received
        summary.messages_resent = c.messages_resent
        summary.gap_fills_sent = c.gap_fills_sent
        if acceptor is not None:
            await acceptor.stop()
        if initiator is not None:
            await initiator.stop()
        out.write(summary.as_json() + "\n")
        out.flush()
        log.info("sim_finished", role=opt.role, session=summary.session,
                 execution_reports=summary.execution_reports, rate_per_s=summary.rate_per_s,
                 completed=summary.completed)
    return summary


async def _session_day_reset(opt: SimOptions, session: Session, app: SimApplication, connection: Any) -> None:
    """The simulator's own session-day boundary: drop the connection, start
    again from MsgSeqNum 1 both ways (what was sent before can no longer be
    resent); the scenario goes on where it was."""
    assert opt.session_reset_at is not None
    await asyncio.sleep(max(0.0, opt.session_reset_at.timestamp() - time.time()))
    conn = connection()
    log.info("sim_session_day_reset", session=session.config.key, next_sender=session.next_sender_seq,
             next_target=session.next_target_seq, reset_flag=opt.reset_flag)
    app.logged_on.clear()
    if conn is not None and conn.transport is not None:
        conn.transport.abort()
    session.reset_sequence()
    if opt.reset_flag:
        session.config.reset_on_logon = True          # the next Logon says ResetSeqNumFlag=Y
        await app.logged_on.wait()
        session.config.reset_on_logon = False         # once: later reconnects keep the numbers


async def _linger(opt: SimOptions, session: Session) -> None:
    """Stay up while the counterparty may still ask for resends."""
    if opt.linger < 0:
        await asyncio.Event().wait()
    last = session.counters.received
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < opt.linger:
        await asyncio.sleep(min(0.2, opt.linger))
        if session.counters.received != last:
            last = session.counters.received
            idle_since = time.monotonic()
