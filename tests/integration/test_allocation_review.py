"""Allocation and break resolution after review (SQLite and PostgreSQL): a
platform record after a failed tick still allocates, a command failing
halfway keeps nothing, a record that disagrees does not allocate, house
accounts get no negative balance protection nor margin events, the engine
resolves breaks one way (with the right occurrence), a reopened break
forgets who handled the previous occurrence, and an allocation that leaves
a client flat below zero is protected."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database, now_us
from adapters.fix.gateway import InboundQueue
from fixsim.scenario import SimFill
from handlers.intake import Intake
from handlers.margin import MarginStage
from handlers.posttrade import PostTrade
from stp.allocation import unallocated_break_id
from stp.breaks import Break, BreakType
from stp.changes import BatchChanges
from stp.inbound import Inbound
from stp.reference import ReferenceData
from tests.integration.test_allocation import HOUSE, house_positions, open_unallocated, positions, raw
from tests.integration.test_posttrade import REFERENCE, db, expected_positions, q, scenario
from tests.integration.test_posttrade_money import _fill, _refuse_postings_of, _with_acc001, deposit, inbox

__all__ = ["db"]       # the fixture (SQLite and PostgreSQL)


class Feed:
    """The intake and the pipeline (LP1, PLATFORM matched by exec_id unless
    ``platform`` is False), fed in steps."""

    def __init__(self, db: Database, reference: ReferenceData = REFERENCE, platform: bool = True,
                 house_accounts: dict[str, str] | None = None) -> None:
        self.db = db
        self.pipeline = PostTrade(PostTradeStore(db), reference, frozenset({"LP1"}),
                                  {"PLATFORM": "exec_id"} if platform else {},
                                  {"PLATFORM": "LP1"} if platform else {}, house_accounts=house_accounts)
        self.reference = reference
        self.seq = {"LP1": 2, "PLATFORM": 2}

    async def start(self) -> Feed:
        state = await self.db.load_intake_state()
        self.intake = Intake(InboundQueue(), self.db, state, known_symbols=self.reference.symbols)
        await self.pipeline.load()
        self.intake.on_committed = self.pipeline.submit
        return self

    async def send(self, fills: Sequence[tuple[str, SimFill, bool | str]]) -> None:
        """(session, fill, its Account (1): True as it is, False none, or another)."""
        items = []
        for session, fill, account in fills:
            items.append(Inbound(session, raw(fill, self.seq[session], session, account), time.time(), "app"))
            self.seq[session] += 1
        for i in range(0, len(items), 250):
            await self.intake.process(items[i:i + 250])
            while not self.pipeline.queue.empty():
                await self.pipeline.process(self.pipeline.queue.get_nowait())


allocation = inbox_db.allocate_payload


async def outbox_ids(db: Database, prefix: str) -> list[str]:
    rows = await q(db, f"SELECT event_id FROM outbox WHERE event_id LIKE '{prefix}%' ORDER BY id")
    return [r[0] for r in rows]


async def an_unallocated_trade(db: Database, events: list[Any]) -> SimFill:
    """A trade of ``events`` still on the house, its break open."""
    open_ids = await open_unallocated(db)
    fill: SimFill = next(e.lp for e in events
                         if e.lp.exec_type == "F" and unallocated_break_id("LP1", e.lp.exec_id) in open_ids)
    return fill


# -- 1. the platform record after a failed tick ------------------------------------------------


async def test_a_platform_record_after_a_failed_tick_still_allocates(db: Database) -> None:
    events = scenario(60)
    lp = [e.lp for e in events]
    feed = await Feed(db).start()
    await feed.send([("LP1", f, False) for f in lp])
    assert feed.pipeline.book.pending                     # house fills waiting for their record
    await _refuse_postings_of(db, "4242.00")
    await deposit(db, "ACC006", "USD", "4242.00", "poison")
    await feed.pipeline.tick()                            # fails, reloads, keeps the matcher
    assert (await inbox(db))[0][2].startswith("error: not applied:")
    await feed.send([("PLATFORM", e.platform, True) for e in events])
    assert await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state") == [("confirmed", 120)]
    assert await positions(db) == {k: v for k, v in expected_positions(lp).items() if v}
    assert await open_unallocated(db) == set()


# -- 2. a command that fails halfway ---------------------------------------------------------


async def test_an_allocation_failing_after_its_first_write_keeps_nothing(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    events = scenario(80)
    lp = [e.lp for e in events]
    feed = await Feed(db, platform=False).start()
    await feed.send([("LP1", f, False) for f in lp])
    pipeline = feed.pipeline
    trades = [f for f in lp if f.exec_type == "F" and
              (await q(db, f"SELECT COUNT(*) FROM bookings WHERE fill_exec_id = '{f.exec_id}'"))[0][0] == 1]
    first, second = trades[0], next(f for f in trades[1:] if f.account != trades[0].account)
    real = MarginStage.exposure_breaks

    def failing(self: MarginStage, account: str | None) -> list[Break]:
        if account == first.account:
            raise ValueError("exposure check failed")      # after the bookings and positions moved
        return real(self, account)

    monkeypatch.setattr(MarginStage, "exposure_breaks", failing)
    for f in (first, second):
        payload = inbox_db.allocate_payload("LP1", f.exec_id, f.account, "ops1", None)
        await inbox_db.enqueue(db, "allocate", payload)
    await pipeline.tick()
    results = [r[2] for r in await inbox(db)]
    assert results[0].startswith("error: not applied: ValueError: exposure check failed")
    assert results[1].startswith(f"allocated LP1/{second.exec_id}")
    assert await q(db, f"SELECT COUNT(*) FROM bookings WHERE booking_id = 'A:LP1:{first.exec_id}'") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE kind = 'reversal' "
                       f"AND reverses = 'T:LP1:{first.exec_id}'") == [(0,)]
    assert unallocated_break_id("LP1", first.exec_id) in await open_unallocated(db)
    fresh = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await fresh.load()
    assert {k: p.quantity for k, p in pipeline.positions.positions.items()} == \
        {k: p.quantity for k, p in fresh.positions.positions.items()}


async def test_malformed_commands_are_refusals_wherever_they_are_in_the_tick(db: Database) -> None:
    """A command that is no JSON object is refused before anything is
    written (first in a tick, or after a command that wrote): no tick failure."""
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await pipeline.load()
    insert = PostTradeStore(db).query("INSERT INTO inbox (kind, payload, created_us) VALUES (?, ?, ?)")
    async with db.engine.begin() as conn:
        for payload in ("[1]", "not json"):
            await conn.exec_driver_sql(insert, ("cash", payload, now_us()))
    await deposit(db, "ACC006", "USD", "5.00", "m-1")
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(insert, ("cash", "[2]", now_us()))
    await pipeline.tick()
    results = [r[2] for r in await inbox(db)]
    assert results[0] == "error: the command is not a JSON object" and results[3] == results[0]
    assert results[1].startswith("error: Expecting value") and results[2] == "booked C:m-1"


# -- 6. a platform record that disagrees ------------------------------------------------------


@pytest.mark.parametrize("platform_first", [False, True])
async def test_a_platform_record_differing_in_more_than_the_account_does_not_allocate(
        db: Database, platform_first: bool) -> None:
    events = [e for e in scenario(60) if e.lp.exec_type == "F" and e.platform is not None][:3]
    feed = await Feed(db).start()
    lp = [("LP1", e.lp, False) for e in events]
    platform = [("PLATFORM", replace(e.platform, last_px=e.platform.last_px + Decimal("0.01"),
                                     avg_px=e.platform.last_px + Decimal("0.01")), True) for e in events]
    await feed.send(platform + lp if platform_first else lp + platform)
    assert await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state") == [("mismatched", 6)]
    assert await q(db, "SELECT COUNT(*) FROM breaks WHERE type = 'mismatch'") == [(3,)]
    assert await positions(db) == house_positions([e.lp for e in events])
    assert await open_unallocated(db) == {unallocated_break_id("LP1", e.lp.exec_id) for e in events}
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE allocated_from IS NOT NULL") == [(0,)]
    summaries = [r[0] for r in await q(db, "SELECT summary FROM breaks WHERE type = 'unallocated'")]
    assert all("platform PLATFORM " in summary for summary in summaries) == platform_first
    if platform_first:                      # booked on the house when its record had come: named
        assert all(f"platform PLATFORM {e.platform.exec_id} names {e.platform.account}" in " ".join(summaries)
                   for e in events)


# -- 7. house accounts ------------------------------------------------------------------------


async def test_a_house_account_gets_no_negative_balance_protection_nor_margin_events(db: Database) -> None:
    """A house made at start (opening balance 0, a group with protection on)
    loses 1,000 USD on a round trip: its margin state is computed and stored,
    no margin event, no credit from the house to itself."""
    reference = REFERENCE
    assert reference.leverage_groups["professional"].negative_balance_protection
    template = next(e.lp for e in scenario(50) if e.lp.symbol == "EUR/USD" and e.lp.settl_type == "0")
    feed = await Feed(db, reference, platform=False, house_accounts={"LP1": "HOUSE-Z"}).start()
    assert feed.pipeline.reference.accounts["HOUSE-Z"].leverage_group == "professional"
    await feed.send([("LP1", _fill("H-1", "1", "1000000", "1.10000", template), False)])
    ((state,),) = await q(db, "SELECT state FROM margin_accounts WHERE account = 'HOUSE-Z'")
    assert state == "stop_out"                           # computed and stored as state
    await feed.send([("LP1", _fill("H-2", "2", "1000000", "1.09900", template), False)])
    assert feed.pipeline.margin.book.snapshot("HOUSE-Z").balance == Decimal("-1000.00")
    assert await q(db, "SELECT COUNT(*) FROM margin_events WHERE account = 'HOUSE-Z'") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE booking_id LIKE 'NBP:%'") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/margin/HOUSE-Z/events'") == [(0,)]
    assert await q(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/margin/HOUSE-Z%'") != [(0,)]


# -- 10/11/17. one way of resolving a break -------------------------------------------------------


async def test_a_fill_allocated_in_its_own_batch_raises_no_break(db: Database) -> None:
    events = [e for e in scenario(40) if e.lp.exec_type == "F"][:5]
    feed = await Feed(db).start()
    await feed.send([("LP1", e.lp, False) for e in events] + [("PLATFORM", e.platform, True) for e in events])
    assert await q(db, "SELECT COUNT(*) FROM breaks WHERE type = 'unallocated'") == [(0,)]
    for e in events:
        assert await outbox_ids(db, unallocated_break_id("LP1", e.lp.exec_id)) == []


async def test_the_resolution_of_a_reopened_unallocated_break_is_its_occurrence(db: Database) -> None:
    events = scenario(30)
    feed = await Feed(db, platform=False).start()
    await feed.send([("LP1", e.lp, False) for e in events])
    fill = await an_unallocated_trade(db, events)
    bid = unallocated_break_id("LP1", fill.exec_id)
    pipeline = feed.pipeline
    await inbox_db.enqueue(db, "break_resolve", {"break_id": bid, "by": "ops1", "reason": "looking at it"})
    await pipeline.tick()
    ((keys, summary),) = await q(db, f"SELECT keys, summary FROM breaks WHERE break_id = '{bid}'")
    w = BatchChanges()                                  # it comes back: occurrence 2
    pipeline.breaks.add(Break(BreakType.UNALLOCATED, json.loads(keys), summary), w, now_us())
    await pipeline.store.write(w)
    await inbox_db.enqueue(db, "allocate",
                           allocation("LP1", fill.exec_id, fill.account, "ops2", "client confirmed"))
    await pipeline.tick()
    assert await outbox_ids(db, bid) == [bid, f"{bid}-resolved", f"{bid}-2", f"{bid}-2-resolved"]
    shown = await queries.show_break(db, bid)
    assert shown is not None
    assert (shown["state"], shown["occurrence"], shown["resolved_by"], shown["resolution"]) == \
        ("resolved", 2, "ops2", "client confirmed")


async def test_a_break_the_desk_resolves_in_the_same_tick_is_resolved_once(db: Database) -> None:
    events = scenario(30)
    feed = await Feed(db, platform=False).start()
    await feed.send([("LP1", e.lp, False) for e in events])
    fill = await an_unallocated_trade(db, events)
    bid = unallocated_break_id("LP1", fill.exec_id)
    await inbox_db.enqueue(db, "break_resolve", {"break_id": bid, "by": "ops1", "reason": "allocating"})
    await inbox_db.enqueue(db, "allocate", allocation("LP1", fill.exec_id, fill.account, "ops2", None))
    await feed.pipeline.tick()
    assert [r[2].split(" ")[0] for r in await inbox(db)] == ["resolved", "allocated"]
    assert await outbox_ids(db, bid) == [bid, f"{bid}-resolved"]
    shown = await queries.show_break(db, bid)
    assert shown is not None and (shown["state"], shown["resolved_by"]) == ("resolved", "ops1")


async def test_a_break_resolved_by_an_allocation_at_its_cut_off_is_not_escalated(db: Database) -> None:
    events = scenario(30)
    feed = await Feed(db, platform=False).start()
    await feed.send([("LP1", e.lp, False) for e in events])
    fill = await an_unallocated_trade(db, events)
    bid = unallocated_break_id("LP1", fill.exec_id)
    ((cut_off_us,),) = await q(db, f"SELECT cut_off_us FROM breaks WHERE break_id = '{bid}'")
    assert cut_off_us is not None
    await inbox_db.enqueue(db, "allocate", allocation("LP1", fill.exec_id, fill.account, "ops1", None))
    await feed.pipeline.tick(now=datetime.fromtimestamp(int(cut_off_us) / 1e6, UTC))
    assert await outbox_ids(db, bid) == [bid, f"{bid}-resolved"]
    escalated = {r[0] for r in await q(db, "SELECT break_id FROM breaks WHERE escalated_us IS NOT NULL")}
    assert bid not in escalated and escalated       # the others due were escalated


# -- 23. a reopened break, negative balance protection on allocation -----------------------------


async def test_a_reopened_break_has_no_acknowledgement_nor_resolution(db: Database) -> None:
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await pipeline.load()
    brk = Break(BreakType.UNKNOWN_ACCOUNT, {"session": "LP1", "exec_id": "E9", "account": "X"}, "who is X")

    async def detect() -> None:
        w = BatchChanges()
        pipeline.breaks.add(brk, w, now_us())
        await pipeline.store.write(w)

    await detect()
    for kind, by in (("break_acknowledge", "ops1"), ("break_resolve", "ops2")):
        await inbox_db.enqueue(db, kind, {"break_id": brk.break_id, "by": by, "reason": "known now"})
        await pipeline.tick()
    await detect()
    shown: dict[str, Any] | None = await queries.show_break(db, brk.break_id)
    assert shown is not None and (shown["state"], shown["occurrence"]) == ("open", 2)
    handled = ("acknowledged_by", "acknowledged_us", "resolved_by", "resolution")
    assert [shown[k] for k in handled] == [None, None, None, None]
    assert shown["resolved_us"] is not None and shown["reopened_us"] >= shown["resolved_us"]


async def test_an_allocation_leaving_a_client_flat_below_zero_is_protected(db: Database) -> None:
    """ACC001 (100 USD) bought 1,000,000 EUR/USD at 1.10000; the sale at
    1.09900 came without an account (the house): allocated to ACC001 it
    closes the position at a loss of 1,000 USD, and protection brings the
    balance back to zero."""
    reference = _with_acc001("100.00", True)
    template = next(e.lp for e in scenario(50) if e.lp.symbol == "EUR/USD" and e.lp.settl_type == "0")
    feed = await Feed(db, reference, platform=False).start()
    await feed.send([("LP1", _fill("P-1", "1", "1000000", "1.10000", template), True),
                     ("LP1", _fill("P-2", "2", "1000000", "1.09900", template), False)])
    assert (HOUSE, "EUR/USD") in await positions(db)
    await inbox_db.enqueue(db, "allocate", allocation("LP1", "P-2", "ACC001", "ops1", None))
    await feed.pipeline.tick()
    assert (await inbox(db))[0][2].startswith("allocated LP1/P-2")
    assert feed.pipeline.margin.book.snapshot("ACC001").balance == 0
    assert await q(db, "SELECT booking_id, kind FROM bookings WHERE booking_id LIKE 'NBP:%'") == [
        ("NBP:ACC001:A:LP1:P-2", "adjustment")]
    kinds = [k for (k,) in await q(db, "SELECT kind FROM margin_events WHERE account = 'ACC001' ORDER BY id")]
    assert kinds[-1] == "balance_reset"
