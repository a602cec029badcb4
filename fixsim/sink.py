"""A counting FIX peer: receives ExecutionReports and checks exactly-once.

Used to drive and verify the simulators without the engine (tests, the
simulator benchmark, LP on-boarding dry runs).  As an initiator it connects
to an LP simulator; as an acceptor it takes a platform simulator.  It dedupes
by ExecID: the same ExecID with the same content is a duplicate, with other
content a conflict.  It recovers like a real engine, through the session
layer: gaps are resent, garbled messages ignored, disconnects reconnected.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from fixsim.dictionary import load_dictionary
from fixsim.session import Session, SessionConfig, UnsupportedMessageType
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor, FixInitiator
from stp.fixwire import Message

_NOT_CONTENT = frozenset({8, 9, 10, 34, 43, 49, 52, 56, 97, 122})


@dataclass(slots=True)
class SinkStats:
    execution_reports: int = 0      # every ER delivered to the application
    unique: int = 0
    duplicates: int = 0             # same ExecID, same content
    conflicts: int = 0              # same ExecID, different content
    poss_resend: int = 0
    exec_types: dict[str, int] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0

    def as_dict(self) -> dict[str, object]:
        elapsed = self.last_at - self.first_at
        return {"execution_reports": self.execution_reports, "unique": self.unique,
                "duplicates": self.duplicates, "conflicts": self.conflicts,
                "poss_resend": self.poss_resend, "exec_types": self.exec_types,
                "elapsed_s": round(elapsed, 3),
                "rate_per_s": round(self.execution_reports / elapsed, 1) if elapsed > 0 else 0.0}


class SinkApplication:
    def __init__(self, expect: int | None = None) -> None:
        self.stats = SinkStats()
        self.seen: dict[str, int] = {}
        self.expect = expect
        self.done = asyncio.Event()

    def on_logon(self, session: Session) -> None:
        pass

    def on_logout(self, session: Session) -> None:
        pass

    def from_admin(self, msg: Message, session: Session) -> None:
        pass

    def from_app(self, msg: Message, session: Session) -> None:
        if msg.msg_type != "8":
            raise UnsupportedMessageType()
        stats = self.stats
        now = time.monotonic()
        if not stats.first_at:
            stats.first_at = now
        stats.last_at = now
        stats.execution_reports += 1
        if msg.get(97) == "Y":
            stats.poss_resend += 1
        exec_id = msg.get(17) or ""
        digest = hash(tuple([f for f in msg.fields if f[0] not in _NOT_CONTENT]))
        previous = self.seen.get(exec_id)
        if previous is None:
            self.seen[exec_id] = digest
            stats.unique += 1
            exec_type = msg.get(150) or "?"
            stats.exec_types[exec_type] = stats.exec_types.get(exec_type, 0) + 1
            if self.expect is not None and stats.unique >= self.expect:
                self.done.set()
        elif previous == digest:
            stats.duplicates += 1
        else:
            stats.conflicts += 1


@dataclass(slots=True)
class SinkOptions:
    sender_comp_id: str = "STP"
    target_comp_id: str = "LP1"
    begin_string: str = "FIX.4.4"
    connect: tuple[str, int] | None = None     # initiator towards an LP simulator
    listen: tuple[str, int] | None = None      # acceptor for a platform simulator
    expect: int | None = None                  # stop after this many unique ExecIDs
    idle: float = 10.0                         # ... or after this long without an ER
    validate: bool = True
    heartbeat: int = 30


async def run_sink(opt: SinkOptions) -> dict[str, object]:
    app = SinkApplication(opt.expect)
    config = SessionConfig(begin_string=opt.begin_string, sender_comp_id=opt.sender_comp_id,
                           target_comp_id=opt.target_comp_id, heartbeat_interval=opt.heartbeat,
                           initiator=opt.connect is not None, validate=opt.validate)
    session = Session(config, app, MemoryStore(), load_dictionary(opt.begin_string))
    acceptor = initiator = None
    if opt.connect is not None:
        initiator = FixInitiator(session, opt.connect[0], opt.connect[1], reconnect_interval=0.3)
        await initiator.start()
    elif opt.listen is not None:
        acceptor = FixAcceptor([session], opt.listen[0], opt.listen[1])
        await acceptor.start()
    else:
        raise ValueError("sink needs connect or listen")
    try:
        while not app.done.is_set():
            received = app.stats.execution_reports
            try:
                await asyncio.wait_for(app.done.wait(), opt.idle)
            except TimeoutError:
                if app.stats.execution_reports == received:
                    break
    finally:
        if initiator is not None:
            await initiator.stop(logout_wait=1.0)
        if acceptor is not None:
            await acceptor.stop(logout_wait=1.0)
    result = app.stats.as_dict()
    c = session.counters
    result.update(session=config.key, garbled=c.garbled, resend_requests_sent=c.resend_requests_sent,
                  poss_dup_ignored=c.poss_dup_ignored, logons=c.logons,
                  complete=app.expect is None or app.stats.unique >= app.expect)
    return result


def summary_json(result: dict[str, object]) -> str:
    return json.dumps(result, sort_keys=True)
