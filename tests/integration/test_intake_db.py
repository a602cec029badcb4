"""Intake against a real database (SQLite file and PostgreSQL): journal, fills,
dedupe, conflicts, rejections, session sequence numbers, restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from adapters.db import schema
from adapters.db.repository import Database
from adapters.fix.gateway import InboundQueue
from fixsim.fixmsg import er_body
from fixsim.scenario import Scenario, SimFill
from handlers.intake import Intake
from stp.fills import content_hash
from stp.fixwire import fields_of, finish
from stp.inbound import Inbound, InboundKind
from stp.intake import IntakeState

PG_URL = os.environ.get("STP_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
START = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)      # a Wednesday
T0 = 1_763_456_400.0                                   # receive times: exact in binary
SENDING = "20261118-09:00:00.000"


# --- fixtures ------------------------------------------------------------------------


_pg_unreachable: list[str] = []      # the first failure, so later tests skip at once


async def _pg_database() -> Database:
    if _pg_unreachable:
        pytest.skip(_pg_unreachable[0])
    db = Database(PG_URL)
    try:
        async with asyncio.timeout(5):
            await db.drop_all()
    except Exception as exc:   # no server, no driver, no database: not this machine's concern
        await db.close()
        _pg_unreachable.append(f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}")
        pytest.skip(_pg_unreachable[0])
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    else:
        database = await _pg_database()
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


def make_intake(db: Database, state: IntakeState, dk: list[tuple[Any, ...]] | None = None) -> Intake:
    def send_dont_know(session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        if dk is not None:
            dk.append((session, fields, reason, text))
        return True

    return Intake(InboundQueue(), db, state, send_dont_know)


async def new_intake(db: Database, dk: list[tuple[Any, ...]] | None = None) -> Intake:
    return make_intake(db, await db.load_intake_state(), dk)


# --- messages ------------------------------------------------------------------------


def sim_fills(count: int = 6, seed: int = 11) -> list[SimFill]:
    events = Scenario(seed=seed, count=count, start=START, cancel_rate=0.0, correct_rate=0.0,
                      forward_rate=0.0).events()
    out = [e.lp for e in events]
    assert all(f is not None for f in out)
    return out  # type: ignore[return-value]  # the assert above: no None


def raw(body: str, seq: int, msg_type: str = "8", begin: str = "FIX.4.4", sending: str = SENDING,
        poss_dup: bool = False, sender: str = "LP1") -> str:
    header = f"35={msg_type}\x0134={seq}\x01"
    if poss_dup:
        header += "43=Y\x01"
    header += f"49={sender}\x0152={sending}\x0156=STP\x01"
    if poss_dup:
        header += f"122={SENDING}\x01"
    return finish(begin, header + body).decode("latin-1")


def app(session: str, raw_text: str, received: float = T0, kind: InboundKind = "app") -> Inbound:
    return Inbound(session, raw_text, received, kind)


def with_field(raw_text: str, tag: int, value: str) -> str:
    """``raw_text`` with one body field's value replaced (and 9/10 recomputed)."""
    fields = raw_text.split("\x01")
    begin = fields[0][2:]
    body = fields[2:-2]
    body = [f"{tag}={value}" if f.startswith(f"{tag}=") else f for f in body]
    return finish(begin, "\x01".join(body) + "\x01").decode("latin-1")


async def conflicts(db: Database) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(schema.conflicts).order_by(schema.conflicts.c.id))
        return [dict(r._mapping) for r in rows]


def outcomes(rows: list[dict[str, Any]]) -> list[str]:
    return [r["outcome"] for r in rows]


# --- schema --------------------------------------------------------------------------


async def test_migrate_twice_is_idempotent_and_empty_state(db: Database) -> None:
    await db.migrate()
    await db.migrate()
    state = await db.load_intake_state()
    assert (state.next_journal_id, state.next_fill_id, state.next_conflict_id) == (1, 1, 1)
    assert state.last_seq == {}
    status = await db.status()
    assert status["executions"] == 0 and status["journal"] == 0 and status["sessions"] == {}
    assert await db.journal_rows() == [] and await db.fills_rows() == []
    assert await db.known_hashes([("LP1", "nope")]) == {}


# --- intake --------------------------------------------------------------------------


async def test_new_fills_duplicates_and_conflicts(db: Database) -> None:
    fills = sim_fills(3)
    raws = [raw(er_body(f), seq) for seq, f in enumerate(fills, start=1)]
    intake = await new_intake(db)
    await intake.process([app("LP1", r, T0 + i) for i, r in enumerate(raws)])
    status = await db.status()
    assert status["executions"] == 3 and status["executions_by_kind"] == {"F": 3}
    assert status["duplicates_ignored"] == 0 and status["conflicts"] == 0
    stored = await db.fills_rows()
    assert [r["exec_id"] for r in stored] == [f.exec_id for f in fills]
    original = stored[0]

    # the very same message again: duplicate
    await intake.process([app("LP1", raws[0], T0 + 10)])
    # same ExecID, other content (LastPx one pip higher): conflict, original untouched
    other_px = fills[0].last_px + Decimal("0.00010")
    changed = raw(er_body(replace(fills[0], last_px=other_px)), 4)
    await intake.process([app("LP1", changed, T0 + 11)])
    # PossDup resend of the second fill, other MsgSeqNum and SendingTime: duplicate
    resend = raw(er_body(fills[1]), 5, sending="20261118-09:30:00.000", poss_dup=True)
    await intake.process([app("LP1", resend, T0 + 12)])

    journal = await db.journal_rows()
    assert outcomes(journal) == ["accepted"] * 3 + ["duplicate", "conflict", "duplicate"]
    assert journal[4]["reason"] == "ExecID reused with different content"
    assert journal[5]["poss_dup"] is True and journal[4]["poss_dup"] is False
    assert [r["exec_id"] for r in journal] == [f.exec_id for f in fills] + \
        [fills[0].exec_id, fills[0].exec_id, fills[1].exec_id]
    after = await db.fills_rows()
    assert len(after) == 3 and after[0] == original
    assert after[0]["last_px"] == fills[0].last_px
    (conflict,) = await conflicts(db)
    assert conflict["session"] == "LP1" and conflict["exec_id"] == fills[0].exec_id
    assert conflict["original_hash"] == original["content_hash"]
    assert conflict["conflicting_hash"] == content_hash(fields_of(changed))
    assert conflict["conflicting_hash"] != conflict["original_hash"]
    assert conflict["journal_id"] == journal[4]["id"]
    status = await db.status()
    assert status["executions"] == 3 and status["duplicates_ignored"] == 2
    assert status["conflicts"] == 1 and status["journal"] == 6 and status["rejected"] == 0
    assert _seq_state(status["sessions"]["LP1"]) == {"last_seq": 5, "resets": 0, "executions": 3}
    assert intake.counters.outcomes == {"accepted": 3, "duplicate": 2, "conflict": 1}


async def test_duplicate_and_conflict_within_one_batch(db: Database) -> None:
    (f,) = sim_fills(1)
    first = raw(er_body(f), 1)
    again = raw(er_body(f), 2, poss_dup=True)
    other = raw(er_body(replace(f, last_qty=f.last_qty - 1000)), 3)
    intake = await new_intake(db)
    await intake.process([app("LP1", first), app("LP1", again), app("LP1", other)])
    assert outcomes(await db.journal_rows()) == ["accepted", "duplicate", "conflict"]
    assert len(await db.fills_rows()) == 1 and len(await conflicts(db)) == 1


async def test_same_exec_id_on_two_sessions_is_two_fills(db: Database) -> None:
    (f,) = sim_fills(1)
    intake = await new_intake(db)
    await intake.process([app("LP1", raw(er_body(f), 1)), app("LP2", raw(er_body(f), 1))])
    rows = await db.fills_rows()
    assert [(r["session"], r["exec_id"]) for r in rows] == [("LP1", f.exec_id), ("LP2", f.exec_id)]
    assert len(await db.fills_rows("LP2")) == 1


async def test_unknown_symbol_is_dont_know_and_dk_sent_once(db: Database) -> None:
    fills = sim_fills(2)
    good = raw(er_body(fills[0]), 1)
    bad = with_field(raw(er_body(fills[1]), 2), 55, "XXX/YYY")
    dk: list[tuple[Any, ...]] = []
    intake = await new_intake(db, dk)
    await intake.process([app("LP1", good), app("LP1", bad)])
    assert len(dk) == 1
    session, fields, reason, text_ = dk[0]
    assert (session, reason) == ("LP1", "A")
    assert fields == fields_of(bad) and fields[55] == "XXX/YYY"
    assert "XXX/YYY" in text_
    journal = await db.journal_rows()
    assert outcomes(journal) == ["accepted", "dont_know"]
    assert journal[1]["reason"] == f"DKReason=A: {text_}"
    assert journal[1]["exec_id"] == fills[1].exec_id and journal[1]["seq_num"] == 2
    assert len(await db.fills_rows()) == 1
    status = await db.status()
    assert status["rejected"] == 1 and status["rejected_by_outcome"]["dont_know"] == 1
    assert status["sessions"]["LP1"]["last_seq"] == 2
    assert intake.counters.dont_know_sent == 1


async def test_dk_reasons_from_bad_content(db: Database) -> None:
    fills = sim_fills(3)
    side = with_field(raw(er_body(fills[0]), 1), 54, "3")
    qty = with_field(raw(er_body(fills[1]), 2), 32, "abc")
    cancel = raw(er_body(replace(fills[2], exec_type="H")), 3)       # no ExecRefID
    dk: list[tuple[Any, ...]] = []
    await (await new_intake(db, dk)).process([app("LP1", side), app("LP1", qty), app("LP1", cancel)])
    assert [(d[2], d[3]) for d in dk] == [
        ("B", "Side (54) '3' is neither buy (1) nor sell (2)"),
        ("Z", "LastQty (32) is not a number: 'abc'"),
        ("Z", "ExecRefID (19) missing on a cancel")]
    assert outcomes(await db.journal_rows()) == ["dont_know"] * 3


async def test_not_a_fill_is_journalled_only(db: Database) -> None:
    (f,) = sim_fills(1)
    ack = with_field(raw(er_body(f), 1), 150, "0")
    dk: list[tuple[Any, ...]] = []
    await (await new_intake(db, dk)).process([app("LP1", ack)])
    (row,) = await db.journal_rows()
    assert row["outcome"] == "not_a_fill" and "not a trade" in row["reason"]
    assert dk == [] and await db.fills_rows() == []
    assert (await db.status())["not_fills"] == 1


async def test_unsupported_message_is_business_reject(db: Database) -> None:
    order = raw("11=C1\x0155=EUR/USD\x0154=1\x0138=1000000\x0140=1\x01", 3, msg_type="D")
    intake = await new_intake(db)
    await intake.process([app("PLATFORM", order, kind="unsupported")])
    (row,) = await db.journal_rows()
    assert row["outcome"] == "business_reject" and row["msg_type"] == "D"
    assert row["reason"] == "unsupported message type D" and row["seq_num"] == 3
    status = await db.status()
    assert status["rejected_by_outcome"]["business_reject"] == 1 and status["rejected"] == 1
    assert status["sessions"]["PLATFORM"]["last_seq"] == 3


async def test_session_reject_moves_last_seq_to_ref_seq_num_if_higher(db: Database) -> None:
    reject = raw("45=7\x01371=55\x01372=8\x01373=5\x0158=Value is incorrect\x01", 4, msg_type="3",
                 sender="STP")
    intake = await new_intake(db)
    fills = sim_fills(2)
    await intake.process([app("LP1", raw(er_body(fills[0]), 5))])
    await intake.process([app("LP1", reject, kind="session_reject")])
    (_, row) = await db.journal_rows()
    assert row["outcome"] == "session_reject" and row["seq_num"] == 7 and row["msg_type"] == "3"
    assert row["exec_id"] is None
    assert row["reason"] == "Reject sent for MsgSeqNum 7: Value is incorrect (373=5, 371=55)"
    assert (await db.status())["sessions"]["LP1"]["last_seq"] == 7
    # a Reject for an older message does not move it back
    await intake.process([app("LP1", raw(er_body(fills[1]), 9))])
    old = raw("45=8\x01373=5\x0158=x\x01", 5, msg_type="3", sender="STP")
    await intake.process([app("LP1", old, kind="session_reject")])
    status = await db.status()
    assert status["sessions"]["LP1"]["last_seq"] == 9
    assert status["rejected_by_outcome"]["session_reject"] == 2


async def test_reset_sets_last_seq_to_zero_and_counts(db: Database) -> None:
    fills = sim_fills(3)
    intake = await new_intake(db)
    await intake.process([app("LP1", raw(er_body(fills[0]), 40))])
    logon = raw("98=0\x01108=30\x01141=Y\x01", 1, msg_type="A")
    await intake.process([app("LP1", logon, kind="reset")])
    status = await db.status()
    assert _seq_state(status["sessions"]["LP1"]) == {"last_seq": 0, "resets": 1, "executions": 1}
    (_, row) = await db.journal_rows()
    assert row["outcome"] == "reset" and row["msg_type"] == "A" and row["seq_num"] == 1
    # after the reset, low sequence numbers count again, even within the reset's batch
    await intake.process([app("LP1", logon, kind="reset"), app("LP1", raw(er_body(fills[1]), 2))])
    status = await db.status()
    assert _seq_state(status["sessions"]["LP1"]) == {"last_seq": 2, "resets": 2, "executions": 2}
    await intake.process([app("LP1", raw(er_body(fills[2]), 3))])
    assert (await db.load_intake_state()).last_seq == {"LP1": 3}


async def test_last_seq_is_the_highest_committed_per_session(db: Database) -> None:
    fills = sim_fills(8)
    intake = await new_intake(db)
    seqs = {"LP1": [3, 7, 5], "LP2": [2, 1], "PLATFORM": [11]}
    items = []
    it = iter(fills)
    for session, numbers in seqs.items():
        items += [app(session, raw(er_body(next(it)), n)) for n in numbers]
    await intake.process(items)
    await intake.process([app("LP1", raw(er_body(next(it)), 6))])    # lower: ignored
    state = await db.load_intake_state()
    assert state.last_seq == {"LP1": 7, "LP2": 2, "PLATFORM": 11}
    assert intake.last_seq == state.last_seq
    sessions = (await db.status())["sessions"]
    assert {k: v["last_seq"] for k, v in sessions.items()} == state.last_seq
    assert sessions["LP1"]["executions"] == 4


async def test_journal_keeps_every_message_raw_with_seq_and_received_us(db: Database) -> None:
    fills = sim_fills(3)
    items = [app("LP1", raw(er_body(f), 20 + i), T0 + i + 0.25) for i, f in enumerate(fills)]
    items.append(items[0])                                       # a duplicate is journalled too
    items.append(app("LP1", "8=FIX.4.4\x019=5\x0135=8\x01xx=1\x0110=000\x01", T0 + 9))
    intake = await new_intake(db)
    await intake.process(items)
    journal = await db.journal_rows()
    assert [r["raw"] for r in journal] == [i.raw for i in items]
    assert [r["seq_num"] for r in journal] == [20, 21, 22, 20, 0]
    assert [r["received_us"] for r in journal] == [
        1_763_456_400_250_000, 1_763_456_401_250_000, 1_763_456_402_250_000,
        1_763_456_400_250_000, 1_763_456_409_000_000]
    assert outcomes(journal) == ["accepted"] * 3 + ["duplicate", "unparseable"]
    assert [r["id"] for r in journal] == [1, 2, 3, 4, 5]
    assert all(r["committed_us"] > 0 for r in journal)
    assert [r["msg_type"] for r in journal] == ["8"] * 4 + ["?"]   # unparseable: no type
    assert [r["session"] for r in journal] == ["LP1"] * 5
    rows = await db.fills_rows()
    assert [r["journal_id"] for r in rows] == [1, 2, 3]
    assert [r["received_us"] for r in rows] == [r["received_us"] for r in journal[:3]]


async def test_fill_and_journal_received_us_agree(db: Database) -> None:
    (f,) = sim_fills(1)
    intake = await new_intake(db)
    await intake.process([app("LP1", raw(er_body(f), 1), 1763457163.7746189)])
    (j,) = await db.journal_rows()
    (row,) = await db.fills_rows()
    assert row["received_us"] == j["received_us"]


async def test_fill_row_fields_and_exact_timestamps(db: Database) -> None:
    (f,) = sim_fills(1)
    body = with_field(raw(er_body(f), 1), 60, "20261118-09:00:00.123457")
    intake = await new_intake(db)
    await intake.process([app("LP1", body)])
    (row,) = await db.fills_rows()
    assert row["transact_us"] == 1_794_992_400_123_457    # 2026-11-18T09:00:00.123457Z
    assert datetime(2026, 11, 18, 9, tzinfo=UTC).timestamp() == 1_794_992_400
    assert row["trade_date"] == f.trade_date and isinstance(row["trade_date"], date)
    assert row["settl_date"] == f.settl_date and row["settl_type"] == "0"
    assert (row["symbol"], row["side"], row["currency"], row["kind"]) == (f.symbol, f.side, f.currency, "F")
    assert (row["order_id"], row["cl_ord_id"], row["account"]) == (f.order_id, f.cl_ord_id, f.account)
    assert row["content_hash"] == content_hash(fields_of(body))


async def test_decimal_text_stored_exactly(db: Database) -> None:
    (f,) = sim_fills(1)
    f = replace(f, symbol="EUR/USD", currency="EUR", order_qty=Decimal("2000000.00"),
                last_qty=Decimal("1000000.00"), last_px=Decimal("1.08500"),
                cum_qty=Decimal("1000000.00"), leaves_qty=Decimal("1000000.00"),
                avg_px=Decimal("1.0850000"), spot_rate=Decimal("1.08400"),
                forward_points=Decimal("0.00100"), settl_type="M1")
    intake = await new_intake(db)
    await intake.process([app("LP1", raw(er_body(f), 1))])
    (row,) = await db.fills_rows()
    expected = {"last_qty": "1000000.00", "last_px": "1.08500", "order_qty": "2000000.00",
                "cum_qty": "1000000.00", "leaves_qty": "1000000.00", "avg_px": "1.0850000",
                "spot_rate": "1.08400", "forward_points": "0.00100"}
    for column, text_ in expected.items():
        value = row[column]
        assert type(value) is Decimal, column
        assert value == Decimal(text_) and value.as_tuple() == Decimal(text_).as_tuple(), column
        assert str(value) == text_, column
    assert row["settl_type"] == "6"
    async with db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT last_px, last_qty FROM fills"))).one()
    assert tuple(stored) == ("1.08500", "1000000.00")


# --- restart -------------------------------------------------------------------------


async def test_dedupe_survives_a_restart(db: Database) -> None:
    fills = sim_fills(3)
    raws = [raw(er_body(f), seq) for seq, f in enumerate(fills, start=1)]
    first = await new_intake(db)
    await first.process([app("LP1", r) for r in raws])
    original = await db.fills_rows()

    state = await db.load_intake_state()
    assert (state.next_journal_id, state.next_fill_id, state.next_conflict_id) == (4, 4, 1)
    assert state.last_seq == {"LP1": 3}
    dk: list[tuple[Any, ...]] = []
    second = make_intake(db, state, dk)                    # empty cache
    assert (("LP1", fills[0].exec_id) in second.known) is False
    changed = raw(er_body(replace(fills[1], side="2" if fills[1].side == "1" else "1")), 5)
    resend = raw(er_body(fills[0]), 1, poss_dup=True, sending="20261118-10:00:00.000")
    new = raw(er_body(sim_fills(4)[3]), 6)
    await second.process([app("LP1", resend), app("LP1", changed), app("LP1", new)])
    journal = await db.journal_rows()
    assert outcomes(journal) == ["accepted"] * 3 + ["duplicate", "conflict", "accepted"]
    assert [r["id"] for r in journal] == [1, 2, 3, 4, 5, 6]
    rows = await db.fills_rows()
    assert rows[:3] == original and [r["id"] for r in rows] == [1, 2, 3, 4]
    (conflict,) = await conflicts(db)
    assert conflict["original_hash"] == original[1]["content_hash"]
    assert conflict["id"] == 1 and conflict["journal_id"] == 5
    assert dk == []
    assert (await db.load_intake_state()).last_seq == {"LP1": 6}
    # and a third incarnation sees the conflicting content as a conflict again
    third = await new_intake(db)
    await third.process([app("LP1", changed)])
    assert outcomes(await db.journal_rows())[-1] == "conflict"
    assert len(await conflicts(db)) == 2


async def test_status_counts(db: Database) -> None:
    fills = sim_fills(5)
    intake = await new_intake(db)
    items = [app("LP1", raw(er_body(f), i)) for i, f in enumerate(fills[:3], start=1)]
    items.append(app("LP1", raw(er_body(fills[0]), 4)))                            # duplicate
    items.append(app("LP1", raw(er_body(replace(fills[1], last_px=Decimal("9"))), 5)))  # conflict
    items.append(app("LP1", with_field(raw(er_body(fills[3]), 6), 55, "EURUSD2")))  # DK
    items.append(app("LP1", with_field(raw(er_body(fills[4]), 7), 150, "I")))      # not a fill
    items.append(app("LP2", raw("58=hi\x01", 1, msg_type="B"), kind="unsupported"))
    items.append(app("LP2", raw("45=4\x0158=bad\x01", 2, msg_type="3"), kind="session_reject"))
    items.append(app("LP2", raw("98=0\x01108=30\x01141=Y\x01", 1, msg_type="A"), kind="reset"))
    cancel = replace(fills[2], exec_id=fills[2].exec_id + "C", exec_type="H",
                     exec_ref_id=fills[2].exec_id)
    items.append(app("LP2", raw(er_body(cancel), 2)))
    await intake.process(items)
    status = await db.status()
    assert status["executions"] == 4
    assert status["executions_by_kind"] == {"F": 3, "H": 1}
    assert status["duplicates_ignored"] == 1 and status["conflicts"] == 1
    assert status["rejected"] == 3
    assert status["rejected_by_outcome"] == {"dont_know": 1, "business_reject": 1, "session_reject": 1}
    assert status["not_fills"] == 1 and status["journal"] == len(items) == 11
    assert {k: _seq_state(v) for k, v in status["sessions"].items()} == {
        "LP1": {"last_seq": 7, "resets": 0, "executions": 3},
        "LP2": {"last_seq": 2, "resets": 1, "executions": 1}}
    assert sum(intake.counters.outcomes.values()) == 11 and intake.counters.messages == 11


# --- robustness ----------------------------------------------------------------------


async def test_overlong_exec_id_does_not_break_the_batch(db: Database) -> None:
    """An 80-character ExecID is a DontKnowTrade, not a database error (PostgreSQL
    enforces VARCHAR(64); the check is in normalisation, for every database)."""
    fills = sim_fills(2)
    long_id = replace(fills[1], exec_id="E" * 80)
    intake = await new_intake(db)
    await intake.process([app("LP1", raw(er_body(fills[0]), 1)), app("LP1", raw(er_body(long_id), 2))])
    journal = await db.journal_rows()
    assert len(journal) == 2 and journal[0]["outcome"] == "accepted"
    assert journal[1]["outcome"] == "dont_know" and "longer than 64" in journal[1]["reason"]
    assert (await db.load_intake_state()).last_seq == {"LP1": 2}


async def test_a_batch_whose_commit_failed_can_be_processed_again(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    (f,) = sim_fills(1)
    intake = await new_intake(db)
    real_write = db.write_intake
    calls: list[int] = []

    async def flaky_write(batch: Any) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("connection lost")
        await real_write(batch)

    monkeypatch.setattr(db, "write_intake", flaky_write)
    item = app("LP1", raw(er_body(f), 1))
    with pytest.raises(OSError):
        await intake.process([item])
    await intake.process([item])
    assert outcomes(await db.journal_rows()) == ["accepted"]
    assert [r["exec_id"] for r in await db.fills_rows()] == [f.exec_id]
    assert (await db.load_intake_state()).last_seq == {"LP1": 1}


async def test_a_stopping_intake_that_cannot_commit_ends_and_leaves_it_to_a_resend(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping with the database gone: the intake tries for stop_commit_s, then
    ends without counting the messages as received (no sequence number moves),
    so the engine's stop finishes and the counterparty resends them."""
    fills = sim_fills(3)
    intake = await new_intake(db)
    intake.stop_commit_s = 0.3

    async def down(batch: Any) -> None:
        raise OSError("database unreachable")

    await intake.process([app("LP1", raw(er_body(fills[0]), 1))])
    monkeypatch.setattr(db, "write_intake", down)
    queue = intake.queue
    assert isinstance(queue, InboundQueue)
    for i, f in enumerate(fills[1:], 2):
        queue.put(app("LP1", raw(er_body(f), i)))
    task = asyncio.create_task(intake.run())
    await asyncio.sleep(0.2)
    await intake.drain_and_stop()
    await asyncio.wait_for(task, 10)
    assert intake.drained() and intake.last_seq == {"LP1": 1}
    monkeypatch.undo()
    assert (await db.load_intake_state()).last_seq == {"LP1": 1}
    assert [r["exec_id"] for r in await db.fills_rows()] == [fills[0].exec_id]


async def test_market_data_is_journaled_priced_and_bad_quotes_get_a_bmr(db: Database) -> None:
    quotes: list[Any] = []
    bmr: list[tuple[Any, ...]] = []
    intake = await new_intake(db)
    intake.known_symbols = frozenset({"EUR/USD", "USD/JPY"})
    intake.on_quotes = quotes.extend
    intake.send_business_reject = lambda *a: bmr.append(a) or True  # type: ignore[func-returns-value]  # append, then True: sent
    intake.quote_sessions = frozenset({"LP1"})
    w = "55=EUR/USD\x01268=2\x01269=0\x01270=1.08490\x01269=1\x01270=1.08510\x01"
    later = "55=EUR/USD\x01268=2\x01269=0\x01270=1.09000\x01269=1\x01270=1.09010\x01"
    unknown = "55=EUR/SEK\x01268=1\x01269=0\x01270=11.4\x01"
    crossed = "55=USD/JPY\x01268=2\x01269=0\x01270=152\x01269=1\x01270=151\x01"
    resent = "55=EUR/USD\x01268=1\x01269=0\x01270=1.20000\x01"
    await intake.process([app("LP1", raw(w, 2, "W"), T0), app("LP1", raw(later, 3, "W"), T0 + 1),
                          app("LP1", raw(unknown, 4, "W"), T0 + 2), app("LP1", raw(crossed, 5, "W"), T0 + 3),
                          app("LP1", raw(resent, 1, "W", poss_dup=True), T0 + 4),
                          app("PLATFORM", raw(w, 2, "W", sender="PLATFORM"), T0 + 5)])
    rows = await db.journal_rows()
    assert outcomes(rows) == ["market_data", "market_data", "business_reject", "business_reject",
                              "not_a_fill", "business_reject"]
    assert rows[2]["reason"] == "BusinessRejectReason=2: symbol 'EUR/SEK' is not traded here"
    assert "PossDupFlag=Y" in rows[4]["reason"] and "LP sessions only" in rows[5]["reason"]
    assert [(b[0], b[2]) for b in bmr] == [("LP1", "2"), ("LP1", "0"), ("PLATFORM", "0")]
    async with db.engine.connect() as conn:       # refused quotes are answered and kept, not breaks
        assert (await conn.execute(text("SELECT COUNT(*) FROM breaks"))).scalar() == 0
    assert [str(q.price) for q in quotes] == ["1.08500", "1.09005"]
    async with db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT symbol, bid, offer, price FROM market_prices"))).all()
    assert [tuple(r) for r in stored] == [("EUR/USD", "1.09000", "1.09010", "1.09005")]
    status = await db.status()
    assert status["sessions"]["LP1"]["last_seq"] == 5 and status["rejected"] == 3


async def test_a_migration_that_fails_midway_leaves_nothing_behind(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite runs DDL outside a transaction unless one is begun: a migration
    killed midway used to leave tables without their alembic_version, and every
    later start failed with 'table already exists'."""
    from alembic import op

    real = op.create_table
    created: list[str] = []

    def create_then_fail(name: str, *args: Any, **kwargs: Any) -> Any:
        if len(created) == 3:
            raise RuntimeError("killed midway")
        created.append(name)
        return real(name, *args, **kwargs)

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    try:
        monkeypatch.setattr(op, "create_table", create_then_fail)
        with pytest.raises(RuntimeError, match="killed midway"):
            await database.migrate()
        async with database.engine.connect() as conn:
            tables = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))).all()
        assert len(created) == 3 and tables == []          # all or nothing
        monkeypatch.setattr(op, "create_table", real)
        await database.migrate()                            # and the next start works
        assert (await database.status())["executions"] == 0
    finally:
        await database.close()


def _seq_state(session: dict[str, Any]) -> dict[str, Any]:
    """A session's sequence state in ``status`` (without its status fields)."""
    return {k: session[k] for k in ("last_seq", "resets", "executions")}
