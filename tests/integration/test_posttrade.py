"""The post-trade pipeline on a real database, against figures computed here.

Fills come from the simulators' scenario and go through the intake (so they
are committed exactly as the engine commits them) and then the pipeline.
Expected positions and nets are computed independently from the scenario.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.config import PROJECT_ROOT
from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.fix.gateway import InboundQueue
from adapters.reference import load_reference
from fixsim.fixmsg import er_body
from fixsim.scenario import Scenario, SimFill
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from stp.currency import quantize
from stp.fixwire import finish
from stp.inbound import Inbound

PG_URL = os.environ.get("STP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REFERENCE = load_reference(PROJECT_ROOT / "config" / "reference")
# a Monday well ahead: no cut-off has passed while the test runs
START = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    else:
        database = Database(PG_URL)
        try:
            async with asyncio.timeout(5):
                await database.drop_all()
        except Exception as exc:
            await database.close()
            pytest.skip(f"PostgreSQL not reachable: {exc}")
    await database.migrate()
    yield database
    await database.close()


def raw(fill: SimFill, seq: int, sender: str) -> str:
    return finish("FIX.4.4", f"35=8\x0134={seq}\x0149={sender}\x0152=20300107-08:00:00.000\x0156=STP\x01"
                  + er_body(fill)).decode()


async def intake_and_pipeline(db: Database, lp: list[SimFill], platform: list[SimFill]
                              ) -> tuple[Intake, PostTrade]:
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state,
                    known_symbols=REFERENCE.symbols)
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                         {"PLATFORM": "LP1"})
    await pipeline.load()
    intake.on_committed = pipeline.submit
    now = time.time()
    items = [Inbound("LP1", raw(f, i + 2, "LP1"), now, "app") for i, f in enumerate(lp)]
    items += [Inbound("PLATFORM", raw(f, i + 2, "PLATFORM"), now, "app") for i, f in enumerate(platform)]
    for i in range(0, len(items), 700):
        await intake.process(items[i:i + 700])
    while not pipeline.queue.empty():
        await pipeline.process(pipeline.queue.get_nowait())
    return intake, pipeline


def active_fills(fills: list[SimFill]) -> list[SimFill]:
    """Trades minus what was cancelled; a correction replaces its original."""
    active: dict[str, SimFill] = {}
    for f in fills:
        if f.exec_type == "F":
            active[f.exec_id] = f
        else:
            active.pop(f.exec_ref_id or "", None)
            if f.exec_type == "G":
                active[f.exec_id] = f
    return list(active.values())


def expected_positions(fills: list[SimFill]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for f in active_fills(fills):
        out[(f.account, f.symbol)] += f.last_qty if f.side == "1" else -f.last_qty
    return dict(out)


def expected_nets(fills: list[SimFill]) -> dict[tuple[str, str, date], Decimal]:
    """We receive the base and pay the quote when the client buys (and the reverse)."""
    out: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    for f in active_fills(fills):
        base, quote = f.symbol[:3], f.symbol[4:]
        sign = 1 if f.side == "1" else -1
        out[("LP1", base, f.settl_date)] += sign * f.last_qty
        out[("LP1", quote, f.settl_date)] -= sign * quantize(f.last_qty * f.last_px, quote)
    return dict(out)


async def q(db: Database, sql: str) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as conn:
        return [tuple(r) for r in (await conn.exec_driver_sql(sql)).all()]


def scenario(count: int, faults: Any = None) -> list[Any]:
    kw = {"faults": faults} if faults is not None else {}
    return list(Scenario(seed=77, count=count, start=START, **kw).events())


async def test_books_nets_and_reports_match_an_independent_computation(db: Database) -> None:
    events = scenario(1500)
    lp = [e.lp for e in events]
    await intake_and_pipeline(db, lp, [e.platform for e in events])
    # every currency's postings sum to zero, exactly
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for ledger, amount in await q(db, "SELECT ledger, amount FROM postings"):
        totals[ledger] += Decimal(amount)
    assert totals and all(v == 0 for v in totals.values()), totals
    # positions equal the sum of their active fills
    rows = await q(db, "SELECT account, pair, quantity FROM positions")
    stored = {(a, p): Decimal(qty) for a, p, qty in rows}
    expected = expected_positions(lp)
    assert {k: v for k, v in stored.items() if v} == {k: v for k, v in expected.items() if v}
    # nets equal the sum of their trades
    nets = {(cp, c, vd if isinstance(vd, date) else date.fromisoformat(vd)): Decimal(a)
            for cp, c, vd, a in await q(db, "SELECT counterparty, currency, value_date, amount FROM nets")}
    assert {k: v for k, v in nets.items() if v} == {k: v for k, v in expected_nets(lp).items() if v}
    # the desk's report for one value date says the same
    value_date = sorted({k[2] for k in nets})[0]
    report = await queries.settlements(db, value_date)
    assert {(r["counterparty"], r["currency"]): Decimal(r["net"]) for r in report} == \
        {(k[0], k[1]): v for k, v in nets.items() if k[2] == value_date}
    assert all(r["instructions"][0]["state"] == "pending" for r in report if Decimal(r["net"]))
    # every LP fill confirmed against the platform's record; a fault-free run has no breaks
    assert await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state") == [("confirmed", 3000)]
    assert await q(db, "SELECT type, COUNT(*) FROM breaks GROUP BY type") == []
    # margin: equity = balance + unrealised for every account with positions
    margin = await q(db, "SELECT account, balance, unrealised_pnl, equity FROM margin_accounts")
    assert len(margin) == 20
    assert all(Decimal(b) + Decimal(u) == Decimal(e) for _, b, u, e in margin)
    positions_report = await queries.positions(db, "ACC001")
    assert positions_report and all(r["margin"]["state"] == "ok" for r in positions_report)


async def test_cut_offs_ssis_settlement_lifecycle_and_cash(db: Database) -> None:
    events = scenario(400)
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [e.platform for e in events])
    value_date = min(k.value_date for k in pipeline.net.nets)
    # after the cut-off of that value date everything with an SSI is instructed
    later = datetime.combine(value_date, datetime.min.time(), UTC) + timedelta(hours=1)
    await pipeline.tick(now=later)
    rows = await q(db, "SELECT counterparty, currency, value_date, state, ssi FROM instructions")
    instructed = [r for r in rows if str(r[2]) == value_date.isoformat() and r[3] == "instructed"]
    assert instructed and all(r[4] for r in instructed)
    # the desk reports one settled and one failed, through the inbox
    (cp1, ccy1, *_), (cp2, ccy2, *_) = instructed[:2]
    await inbox_db.enqueue(db, "settlement_status", inbox_db.settlement_status_payload(
        cp1, ccy1, value_date, "settled", None, None))
    await inbox_db.enqueue(db, "settlement_status", inbox_db.settlement_status_payload(
        cp2, ccy2, value_date, "failed", "beneficiary bank closed", None))
    # an illegal one: settling what is not instructed is refused, changes nothing
    await inbox_db.enqueue(db, "settlement_status", inbox_db.settlement_status_payload(
        "LP9", "EUR", value_date, "settled", None, None))
    await inbox_db.enqueue(db, "cash", inbox_db.cash_payload("ACC002", "EUR", Decimal("1000000.00"),
                                                           None, "dep-1"))
    before = (await queries.positions(db, "ACC002"))[0]["margin"]["balance"]
    await pipeline.tick(now=later)
    states = {(r[0], r[1]): r[2] for r in await q(
        db, f"SELECT counterparty, currency, state FROM instructions WHERE value_date = '{value_date}'")}
    assert states[(cp1, ccy1)] == "settled" and states[(cp2, ccy2)] == "failed"
    inbox = await q(db, "SELECT kind, result FROM inbox ORDER BY id")
    assert inbox[2][1].startswith("error:") and all(r[1] and not r[1].startswith("error")
                                                     for i, r in enumerate(inbox) if i != 2)
    assert [r[0] for r in await q(db, "SELECT type FROM breaks")] == ["settlement_failed"]
    after = (await queries.positions(db, "ACC002"))[0]["margin"]["balance"]
    assert Decimal(after) - Decimal(before) == Decimal("1000000.00")


async def test_missing_ssi_and_fill_after_cut_off_are_breaks(db: Database) -> None:
    events = scenario(300)
    lp = [e.lp for e in events]
    _, pipeline = await intake_and_pipeline(db, lp[:200], [])
    # LP1 has every SSI; a counterparty without one (LP2 has no CAD SSI) breaks at the cut-off
    from stp.netting import NetKey

    key = NetKey("LP2", "CAD", min(k.value_date for k in pipeline.net.nets))
    pipeline.settle.book.on_net_change(key, Decimal("1000.00"), START)
    late = datetime.combine(key.value_date, datetime.min.time(), UTC) + timedelta(hours=1)
    await pipeline.tick(now=late)
    # fills for an instructed value date arriving after the cut-off
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    intake.on_committed = pipeline.submit
    await intake.process([Inbound("LP1", raw(f, i + 300, "LP1"), time.time(), "app")
                          for i, f in enumerate(lp[200:])])
    while not pipeline.queue.empty():
        await pipeline.process(pipeline.queue.get_nowait())
    types = {r[0] for r in await q(db, "SELECT type FROM breaks")}
    assert {"ssi_missing", "after_cut_off"} <= types


async def test_restart_and_catch_up_from_the_cursor(db: Database) -> None:
    events = scenario(600)
    lp = [e.lp for e in events]
    # the intake commits 600 fills but the pipeline only sees the first 300
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    first = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await first.load()
    seen: list[Any] = []
    intake.on_committed = seen.extend
    now = time.time()
    await intake.process([Inbound("LP1", raw(f, i + 2, "LP1"), now, "app") for i, f in enumerate(lp)])
    await first.process(seen[:300])
    # "crash"; a new pipeline loads its state and catches up from its cursor
    second = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await second.load()
    assert second.cursor == seen[299][0]
    await second.catch_up()
    await second.process(seen)                      # a late duplicate hand-off is ignored
    rows = await q(db, "SELECT account, pair, quantity FROM positions")
    stored = {(a, p): Decimal(qty) for a, p, qty in rows}
    assert {k: v for k, v in stored.items() if v} == {k: v for k, v in expected_positions(lp).items() if v}
    n_bookings = (await q(db, "SELECT COUNT(*) FROM bookings"))[0][0]
    trades = sum(1 for f in lp if f.exec_type == "F") + sum(1 for f in lp if f.exec_type == "G")
    reversals = sum(1 for f in lp if f.exec_type in ("G", "H"))
    assert n_bookings == trades + reversals
    # each position's quote flow is its active fills' quote amounts, stored and reloaded
    flows = {(a, p): Decimal(flow)
             for a, p, flow in await q(db, "SELECT account, pair, quote_flow FROM positions")}
    assert {k: v for k, v in flows.items() if v} == {k: v for k, v in expected_quote_flows(lp).items() if v}
    # the in-memory state after a reload equals the state kept incrementally
    third = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await third.load()
    assert third.net.nets == second.net.nets
    assert third.positions.positions.keys() == second.positions.positions.keys()
    assert {k: p.quote_flow for k, p in third.positions.positions.items()} == \
        {k: p.quote_flow for k, p in second.positions.positions.items()}
    # the migration that added quote_flow fills it from the bookings alone
    await migrate_to(db, "0007_inbox_request_id")
    await db.migrate()
    assert {(a, p): Decimal(flow) for a, p, flow in
            await q(db, "SELECT account, pair, quote_flow FROM positions")} == flows


async def migrate_to(db: Database, revision: str) -> None:
    from alembic import command as alembic
    from alembic.config import Config

    from adapters.db.repository import MIGRATIONS

    def run(conn: Any) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        alembic.downgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


def expected_quote_flows(fills: list[SimFill]) -> dict[tuple[str, str], Decimal]:
    """What the client pays (-) or receives (+) in the quote currency, active fills."""
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for f in active_fills(fills):
        quote = f.symbol[4:]
        sign = 1 if f.side == "1" else -1
        out[(f.account, f.symbol)] -= sign * quantize(f.last_qty * f.last_px, quote)
    return dict(out)


async def test_a_restart_between_a_fill_and_its_platform_record_still_confirms_it(db: Database) -> None:
    """The LP fills are committed and wait for their platform records; the
    post-trade process restarts; the records that come after it confirm them
    (the waiting fills are read back: confirmations still 'received')."""
    lp = [e.lp for e in scenario(20)]
    platform = [e.platform for e in scenario(20) if e.platform is not None]
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    first = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                      {"PLATFORM": "LP1"})
    await first.load()
    intake.on_committed = first.submit
    now = time.time()
    await intake.process([Inbound("LP1", raw(f, i + 2, "LP1"), now, "app") for i, f in enumerate(lp)])
    while not first.queue.empty():
        await first.process(first.queue.get_nowait())
    assert await q(db, "SELECT DISTINCT state FROM confirmations") == [("received",)]
    second = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                       {"PLATFORM": "LP1"})
    await second.load()
    assert second.confirm.matcher.pending_count == len(lp)
    intake.on_committed = second.submit
    await intake.process([Inbound("PLATFORM", raw(f, i + 2, "PLATFORM"), now, "app")
                          for i, f in enumerate(platform)])
    while not second.queue.empty():
        await second.process(second.queue.get_nowait())
    states = dict(await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state"))
    assert states == {"confirmed": len(lp) + len(platform)}
    assert await q(db, "SELECT type FROM breaks WHERE type LIKE 'unmatched%'") == []


async def test_a_restart_keeps_the_price_an_off_market_fill_did_not_move(db: Database) -> None:
    """An off-market fill (price_out_of_tolerance) marks nothing and does not
    move confirmation's reference price; after a restart it still has not: the
    pair is marked at the last good fill, and the next off-market fill breaks."""
    good = next(e.lp for e in scenario(40) if e.lp.exec_type == "F" and e.lp.symbol == "EUR/USD")
    off = replace(good, exec_id=good.exec_id + "-OFF", order_id="O-OFF", cl_ord_id="C-OFF",
                  last_px=good.last_px * Decimal("1.06"), avg_px=good.last_px * Decimal("1.06"))
    again = replace(off, exec_id=good.exec_id + "-OFF2", order_id="O-OFF2", cl_ord_id="C-OFF2")
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    seen: list[Any] = []
    intake.on_committed = seen.extend
    now = time.time()
    await intake.process([Inbound("LP1", raw(f, i + 2, "LP1"), now, "app")
                          for i, f in enumerate([good, off])])
    first = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await first.load()
    await first.process(seen[:1])
    await first.process(seen[1:])
    assert first.margin.book.prices.price("EUR/USD") == good.last_px
    restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()
    assert restarted.margin.book.prices.price("EUR/USD") == good.last_px
    assert restarted.confirm.validator.reference_price("EUR/USD") == good.last_px
    await intake.process([Inbound("LP1", raw(again, 4, "LP1"), now, "app")])
    await restarted.process(seen[2:])
    flagged = await q(db, "SELECT keys FROM breaks WHERE type = 'price_out_of_tolerance'")
    assert sorted(json.loads(k)["exec_id"] for (k,) in flagged) == [off.exec_id, again.exec_id]


async def test_break_lifecycle_through_the_inbox(db: Database) -> None:
    """open -> acknowledged -> resolved (who, when, why), each change published;
    illegal transitions and unknown ids are refused and change nothing."""

    events = scenario(200)
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [])
    from stp.netting import NetKey

    key = NetKey("LP2", "CAD", min(k.value_date for k in pipeline.net.nets))
    pipeline.settle.book.on_net_change(key, Decimal("1000.00"), START)
    await pipeline.tick(now=datetime.combine(key.value_date, datetime.min.time(), UTC))
    (brk,) = await queries.list_breaks(db, type_="ssi_missing")
    bid = brk["break_id"]
    for kind, payload in [
        ("break_resolve", {"break_id": bid, "by": "ops1", "reason": ""}),          # no reason: refused
        ("break_acknowledge", {"break_id": bid, "by": "ops1"}),
        ("break_acknowledge", {"break_id": bid, "by": "ops2"}),                    # twice: refused
        ("break_resolve", {"break_id": bid, "by": "ops2", "reason": "SSI added, v2"}),
        ("break_acknowledge", {"break_id": bid, "by": "ops3"}),                    # after resolve: refused
        ("break_acknowledge", {"break_id": "nope", "by": "ops1"}),                 # unknown: refused
    ]:
        await inbox_db.enqueue(db, kind, payload)
    await pipeline.tick()
    results = [r[0] for r in await q(db, "SELECT result FROM inbox ORDER BY id")]
    assert [r.startswith("error") for r in results] == [True, False, True, False, True, True]
    shown = await queries.show_break(db, bid)
    assert shown is not None
    assert (shown["state"], shown["acknowledged_by"], shown["resolved_by"], shown["resolution"]) == \
        ("resolved", "ops1", "ops2", "SSI added, v2")
    changes = [json.loads(p)["type"] for (p,) in await q(
        db, f"SELECT payload FROM outbox WHERE event_id LIKE '{bid}-%' ORDER BY id")]
    assert changes == ["com.fxstp.break.acknowledged", "com.fxstp.break.resolved"]


async def test_market_data_moves_margin_and_survives_a_restart(db: Database) -> None:
    """A quote (35=W, through the intake) re-marks the accounts holding or
    converting through its pair, without a fill; a restarted pipeline starts
    from that price, newer than the last fill's."""
    events = scenario(300)
    intake, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [])
    intake.on_quotes = pipeline.submit_quotes
    symbol = "EUR/USD"
    holders = pipeline.margin.book.accounts_depending_on(symbol)
    assert holders
    before = {r[0]: r[1] for r in await q(db, "SELECT account, unrealised_pnl FROM margin_accounts")}
    old = pipeline.margin.book.prices.price(symbol)
    assert old is not None
    new = (old * Decimal("1.01")).quantize(Decimal("0.00001"))
    tick = Decimal("0.00001")
    body = f"55={symbol}\x01268=2\x01269=0\x01270={new - tick}\x01269=1\x01270={new + tick}\x01"
    w = finish("FIX.4.4", f"35=W\x0134={len(events) + 2}\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
               + body).decode()
    await intake.process([Inbound("LP1", w, time.time(), "app")])
    fills = pipeline.queue.get_nowait()
    assert fills == []                                     # a wake-up with prices only
    await pipeline.process(fills)
    after = {r[0]: r[1] for r in await q(db, "SELECT account, unrealised_pnl FROM margin_accounts")}
    moved = {a for a in after if after[a] != before.get(a)}
    assert moved and moved <= set(holders)
    assert pipeline.margin.book.prices.price(symbol) == new
    # published: the current margin of each moved account (retained topics)
    subjects = {json.loads(p)["subject"] for (p, t) in await q(db, "SELECT payload, topic FROM outbox")
                if t.startswith("fxstp/margin/") and not t.endswith("/events")}
    assert moved <= subjects
    restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()
    assert restarted.margin.book.prices.price(symbol) == new
    assert restarted.margin.book.snapshot(sorted(moved)[0]) == pipeline.margin.book.snapshot(sorted(moved)[0])


async def test_margin_call_inside_the_recovery_band_survives_a_restart(db: Database) -> None:
    """An account in margin call stays in it until its level is above 105%
    (retail: 100% + a band of 5), across a restart too: the state is restored
    from margin_accounts, not re-derived from the level (102% alone is "ok")."""
    events = scenario(300)
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [])
    account = next(a for a in sorted(REFERENCE.accounts) if REFERENCE.accounts[a].currency == "USD"
                   and REFERENCE.accounts[a].leverage_group == "retail"
                   and pipeline.margin.book.snapshot(a).used_margin > 0)

    async def move_to(p: PostTrade, level: str) -> Any:
        """Cash in or out so that the account's margin level is ``level``."""
        now = p.margin.book.snapshot(account)
        amount = quantize(now.used_margin * Decimal(level) / 100 - now.equity, "USD")
        await inbox_db.enqueue(db, "cash", inbox_db.cash_payload(account, "USD", amount, None, None))
        await p.tick()
        return p.margin.book.snapshot(account)

    async def stored() -> tuple[str, int]:
        ((state,),) = await q(db, f"SELECT state FROM margin_accounts WHERE account = '{account}'")
        ((n,),) = await q(db, f"SELECT COUNT(*) FROM margin_events WHERE account = '{account}'")
        return state, n

    # a withdrawal may take out the free margin, no more: down to 100%, a margin call
    assert (await move_to(pipeline, "100")).state == "margin_call"
    assert await stored() == ("margin_call", 1)
    inside = await move_to(pipeline, "102")
    assert inside.state == "margin_call" and Decimal(101) < inside.margin_level < Decimal(103)
    assert await stored() == ("margin_call", 1)                      # no "recovered" at 102
    restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()
    assert restarted.margin.book.snapshot(account) == inside         # still in margin call
    await restarted.tick()
    assert await stored() == ("margin_call", 1)                      # the restart published nothing
    assert (await move_to(restarted, "104")).state == "margin_call"
    assert await stored() == ("margin_call", 1)
    assert (await move_to(restarted, "106")).state == "ok"
    assert await stored() == ("ok", 2)
    ((kind, threshold),) = [(json.loads(p)["data"]["kind"], json.loads(p)["data"]["threshold"])
                            for (p,) in await q(db, "SELECT payload FROM outbox WHERE topic = "
                                                    f"'fxstp/margin/{account}/events' ORDER BY id")][1:]
    assert (kind, threshold) == ("recovered", "105")
    # the reference data changed while the engine was down (margin call at 110%):
    # the restart's crossing from the stored state is published with its next commit
    groups = {n: replace(g, margin_call_level=Decimal(110)) for n, g in REFERENCE.leverage_groups.items()}
    stricter = PostTrade(PostTradeStore(db), replace(REFERENCE, leverage_groups=groups), frozenset({"LP1"}),
                         {}, {})
    await stricter.load()
    assert stricter.margin.book.snapshot(account).state == "margin_call"
    assert await stored() == ("ok", 2)
    await stricter.tick()
    assert await stored() == ("margin_call", 3)


async def test_breaks_of_fills_without_settl_date_carry_the_cut_off_of_their_value_date(db: Database) -> None:
    """A spot fill may give its SettlType alone; its breaks still escalate on
    the cut-off of the value date the engine computes for it."""
    from fixsim.scenario import FaultRates

    events = [e for e in Scenario(seed=5, count=300, start=START, faults=FaultRates(price=0.05)).events()
              if e.lp is not None and e.platform is not None and e.lp.settl_type == "0"]

    def without_settl_date(fill: SimFill, seq: int, sender: str) -> str:
        body = er_body(fill).replace(f"\x0164={fill.settl_date:%Y%m%d}\x01", "\x01")
        assert "\x0164=" not in body
        return finish("FIX.4.4", f"35=8\x0134={seq}\x0149={sender}\x0152=20300107-08:00:00.000\x0156=STP\x01"
                      + body).decode()

    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                         {"PLATFORM": "LP1"})
    await pipeline.load()
    intake.on_committed = pipeline.submit
    now = time.time()
    await intake.process([Inbound("LP1", without_settl_date(e.lp, i + 2, "LP1"), now, "app")  # type: ignore[arg-type]  # events have both sides
                          for i, e in enumerate(events)])
    await intake.process([Inbound("PLATFORM", without_settl_date(e.platform, i + 2, "PLATFORM"), now, "app")  # type: ignore[arg-type]  # events have both sides
                          for i, e in enumerate(events)])
    while not pipeline.queue.empty():
        await pipeline.process(pipeline.queue.get_nowait())
    assert await q(db, "SELECT COUNT(*) FROM fills WHERE settl_date IS NOT NULL") == [(0,)]
    rows = await q(db, "SELECT keys, cut_off_us FROM breaks WHERE type = 'mismatch'")
    assert len(rows) >= 3
    by_exec = {e.lp.exec_id: e.lp.settl_date for e in events}  # type: ignore[union-attr]  # events have both sides
    for keys, cut_off_us in rows:
        value_date = by_exec[json.loads(keys)["exec_id"]]
        cut_off = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(cut_off_us))
        # the cut-off falls before the (scenario's own) value date
        assert value_date - timedelta(days=4) <= cut_off.date() <= value_date


async def test_a_poked_pipeline_reads_quotes_and_fills_from_the_database(db: Database) -> None:
    """Post-trade in its own process is told only that something was committed
    (``poke``): it reads the new fills by cursor and the new quotes from
    market_prices, and a quote alone still moves margin."""
    events = scenario(200)
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await pipeline.load()
    now = time.time()
    await intake.process([Inbound("LP1", raw(e.lp, i + 2, "LP1"), now, "app") for i, e in enumerate(events)])
    pipeline.poke()                                # nothing handed over in memory
    await pipeline.catch_up()
    assert pipeline.cursor == 200 and pipeline.processed == 200
    symbol = "EUR/USD"
    old = pipeline.margin.book.prices.price(symbol)
    assert old is not None
    new = (old * Decimal("0.99")).quantize(Decimal("0.00001"))
    tick = Decimal("0.00001")
    body = f"55={symbol}\x01268=2\x01269=0\x01270={new - tick}\x01269=1\x01270={new + tick}\x01"
    header = "35=W\x0134=202\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
    w = finish("FIX.4.4", header + body).decode()
    before = {r[0]: r[1] for r in await q(db, "SELECT account, unrealised_pnl FROM margin_accounts")}
    await intake.process([Inbound("LP1", w, time.time(), "app")])
    await pipeline.catch_up()                      # not poked: the quote is not read
    assert pipeline.margin.book.prices.price(symbol) == old
    pipeline.poke()
    await pipeline.catch_up()
    assert pipeline.margin.book.prices.price(symbol) == new
    after = {r[0]: r[1] for r in await q(db, "SELECT account, unrealised_pnl FROM margin_accounts")}
    moved = {a for a in after if after[a] != before.get(a)}
    assert moved and moved <= set(pipeline.margin.book.accounts_depending_on(symbol))
