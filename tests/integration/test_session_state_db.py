"""The intake's session events against a real database (SQLite and
PostgreSQL): session-day resets committed, status, session_down, the audit of
`session reset`, and the engine's start-of-day rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

from adapters.db.repository import Database
from app.engine import _session_days_at_start
from fixsim.fixmsg import er_body
from handlers.intake import Intake
from stp.inbound import Inbound, SessionEventKind
from stp.sessions import SessionSchedule, session_day
from stp.timestamps import datetime_to_us
from tests.integration.test_intake_db import app, db, new_intake, raw, sim_fills  # noqa: F401 (db: a fixture)

FX_DAY = SessionSchedule(dtime(17), dtime(16, 59, 59), "America/New_York")
# 2026-12-03 16:00 New York (the day that began 2026-12-02 17:00), then 18:00 (the next)
BEFORE = datetime(2026, 12, 3, 21, 0, tzinfo=UTC)
AFTER = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)


def event(session: str, kind: SessionEventKind, at: datetime, **data: object) -> Inbound:
    us = datetime_to_us(at)
    payload = json.dumps({"event": kind, "session": session, "at_us": us, **data})
    return Inbound(session, payload, us / 1e6, kind)


async def intake_with_schedule(db: Database) -> Intake:  # noqa: F811
    intake = await new_intake(db)
    intake.schedules = {"LP1": FX_DAY}
    return intake


async def test_a_logon_with_quickfix_counting_from_1_commits_the_new_day(db: Database) -> None:  # noqa: F811
    fills = sim_fills(4)
    intake = await intake_with_schedule(db)
    await intake.process([event("LP1", "session_logon", BEFORE, next_target=2, next_sender=2),
                          app("LP1", raw(er_body(fills[0]), 665), received=BEFORE.timestamp()),
                          app("LP1", raw(er_body(fills[1]), 666), received=BEFORE.timestamp())])
    lp1 = (await db.status())["sessions"]["LP1"]
    assert (lp1["last_seq"], lp1["session_day"], lp1["resets"], lp1["logged_on"]) == \
        (666, "2026-12-02", 0, True)
    # the same numbers again (a reconnect within the day): nothing reset
    await intake.process([event("LP1", "session_logon", BEFORE, next_target=667, next_sender=9)])
    assert (await db.status())["sessions"]["LP1"]["resets"] == 0
    # the new day: quickfix expects 2 after the LP's Logon 1, below the committed 666
    await intake.process([event("LP1", "session_logout", AFTER, reason="we logged out", was_logged_on=True),
                          event("LP1", "session_logon", AFTER, next_target=2, next_sender=2),
                          app("LP1", raw(er_body(fills[2]), 2), received=AFTER.timestamp()),
                          app("LP1", raw(er_body(fills[3]), 3), received=AFTER.timestamp())])
    lp1 = (await db.status())["sessions"]["LP1"]
    assert (lp1["last_seq"], lp1["session_day"], lp1["resets"], lp1["executions"]) == (3, "2026-12-03", 1, 4)
    state = await db.load_intake_state()
    assert state.last_seq == {"LP1": 3} and state.session_days == {"LP1": "2026-12-03"}


async def test_logouts_make_status_and_one_session_down_break(db: Database) -> None:  # noqa: F811
    intake = await intake_with_schedule(db)
    reason = "counterparty logged out: MsgSeqNum too low, expecting 666 but received 1"
    await intake.process([event("LP1", "session_logout", BEFORE + timedelta(seconds=2 * i), reason=reason,
                                was_logged_on=False) for i in range(20)])
    lp1 = (await db.status())["sessions"]["LP1"]
    assert lp1["logged_on"] is False and lp1["last_reason"] == reason
    assert lp1["last_logout"] == (BEFORE + timedelta(seconds=38)).isoformat()
    async with db.engine.connect() as conn:
        # AsyncConnection.exec_driver_sql says CursorResult[Any]: mypy reads its rows as 1-tuples
        rows: Sequence[tuple[Any, ...]] = (
            await conn.exec_driver_sql("SELECT type, severity, keys, summary FROM breaks")).all()
        events = (await conn.exec_driver_sql("SELECT topic FROM outbox")).all()
    assert len(rows) == 1
    kind, severity, keys, summary = rows[0]
    assert (kind, severity, json.loads(keys)) == ("session_down", "critical", {"session": "LP1"})
    assert "MsgSeqNum too low" in summary
    assert [e[0] for e in events] == ["fxstp/breaks/LP1/session_down"]


async def test_an_ops_reset_is_committed_with_its_audit_row(db: Database) -> None:  # noqa: F811
    fills = sim_fills(1)
    intake = await intake_with_schedule(db)
    await intake.process([app("LP1", raw(er_body(fills[0]), 40), received=BEFORE.timestamp())])
    request = await db.request_session_reset("LP1", "ops1", "agreed with the LP", 1, 1)
    await intake.process([event("LP1", "seq_set", BEFORE, request=request, ok=True,
                                before={"next_target": 43, "next_sender": 12},
                                after={"next_target": 1, "next_sender": 1})])
    row = await db.session_reset_row(request)
    assert row is not None
    assert (row["state"], row["requested_by"], row["before_last_seq"], row["before_inbound"],
            row["before_outbound"], row["after_inbound"], row["after_outbound"]) == \
        ("applied", "ops1", 40, 43, 12, 1, 1)
    lp1 = (await db.status())["sessions"]["LP1"]
    assert (lp1["last_seq"], lp1["resets"]) == (0, 1)
    refused = await db.request_session_reset("LP1", "ops2", None, 5, None)
    await intake.process([event("LP1", "seq_set", BEFORE, request=refused, ok=False, error="no session")])
    row = await db.session_reset_row(refused)
    assert row is not None and (row["state"], row["error"]) == ("failed", "no session")


async def test_a_start_on_a_new_day_does_not_resume_the_previous_days_number(db: Database) -> None:  # noqa: F811
    now = datetime.now(UTC)
    today = session_day(FX_DAY, now)
    await db.commit_session_day("LP1", "2001-01-01", 1559, reset=False)      # long ago
    await db.commit_session_day("LP2", today, 77, reset=False)               # today
    state = await db.load_intake_state()
    await _session_days_at_start(db, state, {"LP1": FX_DAY, "LP2": FX_DAY})
    assert state.last_seq == {"LP1": 0, "LP2": 77}
    reloaded = await db.load_intake_state()
    assert reloaded.last_seq == {"LP1": 0, "LP2": 77}
    assert reloaded.session_days == {"LP1": today, "LP2": today}
    assert (await db.status())["sessions"]["LP1"]["resets"] == 1
