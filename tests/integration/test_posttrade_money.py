"""Post-trade on a real database (SQLite and PostgreSQL): the timer recovers
from a failed tick as a batch does, a resolved break that comes back is a
new occurrence, and the money rules (withdrawals, negative balance
protection, unpriced margin) as configured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database, now_us
from adapters.fix.gateway import InboundQueue
from fixsim.fixmsg import md_body
from fixsim.scenario import SimFill
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from stp.breaks import Break, BreakType
from stp.changes import BatchChanges
from stp.fixwire import finish
from stp.inbound import Inbound
from stp.reference import ReferenceData
from tests.integration.test_posttrade import REFERENCE, START, db, intake_and_pipeline, q, raw, scenario

__all__ = ["db"]        # the fixture, SQLite and PostgreSQL


def pipeline_for(db: Database, reference: ReferenceData = REFERENCE) -> PostTrade:
    return PostTrade(PostTradeStore(db), reference, frozenset({"LP1"}), {}, {})


async def inbox(db: Database) -> list[tuple[Any, ...]]:
    return await q(db, "SELECT id, kind, result, applied_us FROM inbox ORDER BY id")


async def stored_balance(db: Database, account: str) -> Decimal:
    ((balance,),) = await q(db, f"SELECT balance FROM margin_accounts WHERE account = '{account}'")
    return Decimal(balance)


async def replies(db: Database) -> dict[str, dict[str, Any]]:
    """request_id -> the reply's data, from the outbox."""
    out = {}
    for (payload,) in await q(db, "SELECT payload FROM outbox WHERE event_id LIKE 'reply-%' ORDER BY id"):
        data = json.loads(payload)["data"]
        out[data["request_id"]] = data
    return out


async def deposit(db: Database, account: str, currency: str, amount: str, reference: str,
                  **extra: Any) -> int:
    payload = inbox_db.cash_payload(account, currency, Decimal(amount), None, reference)
    return await inbox_db.enqueue(db, "cash", {**payload, **extra})


def from_bus(request_id: str) -> dict[str, Any]:
    return {"via": "mqtt", "request_id": request_id, "reply_to": "fxstp/replies/test"}


# -- 12. the timer recovers like a batch does ----------------------------------------


async def test_a_reused_cash_reference_is_refused_and_the_commands_after_it_go_through(db: Database) -> None:
    pipeline = pipeline_for(db)
    await pipeline.load()
    await deposit(db, "ACC002", "EUR", "1000.00", "dep-1")
    await pipeline.tick()
    await deposit(db, "ACC002", "EUR", "5.00", "dep-1", **from_bus("r-again"))     # the same reference
    await deposit(db, "ACC002", "EUR", "20.00", "dep-2")
    await pipeline.tick()
    results = [r[2] for r in await inbox(db)]
    assert results[0] == "booked C:dep-1" and results[2] == "booked C:dep-2"
    assert results[1].startswith("error: reference 'dep-1' is already booked")
    assert (await replies(db))["r-again"]["error"]["code"] == "invalid_command"
    opening = REFERENCE.accounts["ACC002"].opening_balance
    assert await stored_balance(db, "ACC002") == opening + Decimal("1020.00")
    assert pipeline.margin.book.snapshot("ACC002").balance == opening + Decimal("1020.00")
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE kind = 'cash'") == [(2,)]


async def _refuse_postings_of(db: Database, amount: str) -> None:
    """The database refuses any posting of ``amount`` (a trigger): a command
    that fails at its commit, every time."""
    async with db.engine.begin() as conn:
        if db.is_sqlite:
            await conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_amount BEFORE INSERT ON postings WHEN NEW.amount = '{amount}' "
                "BEGIN SELECT RAISE(ABORT, 'posting refused by the test trigger'); END")
        else:
            await conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refuse_amount() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.amount = '{amount}' THEN RAISE EXCEPTION 'posting refused by the test trigger'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
            await conn.exec_driver_sql("CREATE TRIGGER refuse_amount BEFORE INSERT ON postings "
                                       "FOR EACH ROW EXECUTE FUNCTION refuse_amount()")


async def test_a_command_that_fails_at_its_commit_is_marked_failed_and_the_state_reloaded(
        db: Database) -> None:
    """The tick fails; its state is reloaded, the timer's work and each
    command are done again alone: the poison one is marked failed (and
    answered), the others are applied once, and memory equals the database."""
    pipeline = pipeline_for(db)
    await pipeline.load()
    await _refuse_postings_of(db, "4242.00")
    await deposit(db, "ACC006", "USD", "100.00", "a")
    await deposit(db, "ACC006", "USD", "4242.00", "poison", **from_bus("r-poison"))
    await deposit(db, "ACC006", "USD", "7.00", "b")
    await pipeline.tick()                    # does not raise
    rows = await inbox(db)
    assert all(r[3] is not None for r in rows)                  # every command done with
    assert [r[2] for r in rows][0::2] == ["booked C:a", "booked C:b"]
    assert rows[1][2].startswith("error: not applied:") and "refused by the test trigger" in rows[1][2]
    reply = (await replies(db))["r-poison"]
    assert reply["ok"] is False and reply["error"]["code"] == "command_failed"
    expected = REFERENCE.accounts["ACC006"].opening_balance + Decimal("107.00")
    assert await stored_balance(db, "ACC006") == expected
    assert pipeline.margin.book.snapshot("ACC006").balance == expected     # not 4349 in memory
    fresh = pipeline_for(db)
    await fresh.load()
    assert fresh.margin.book.snapshot("ACC006") == pipeline.margin.book.snapshot("ACC006")
    # later ticks are not stuck on it
    await deposit(db, "ACC006", "USD", "1.00", "c")
    await pipeline.tick()
    assert (await inbox(db))[-1][2] == "booked C:c"


@pytest.mark.parametrize("outage", [
    sa_exc.OperationalError("COMMIT", {}, Exception("database is locked")),
    # a connection found dead, whatever error it surfaced as (the two checks disagreed on it)
    sa_exc.IntegrityError("COMMIT", {}, Exception("server closed the connection"),
                          connection_invalidated=True),
], ids=["locked", "connection_invalidated"])
async def test_a_valid_command_is_never_failed_for_the_database_being_unavailable(
        db: Database, monkeypatch: pytest.MonkeyPatch, outage: Exception) -> None:
    """A deposit whose commit fails ten times because the database is
    unavailable (far more than the three tries it used to get): each tick
    raises (the timer backs off), the command waits in the inbox, and once the
    database is back it is booked and answered ok, never command_failed."""
    pipeline = pipeline_for(db)
    await pipeline.load()
    real_write = pipeline.store.write
    outages = 10

    async def unavailable(w: BatchChanges) -> None:
        nonlocal outages
        if outages and w.bookings:
            outages -= 1
            raise outage
        await real_write(w)

    monkeypatch.setattr(pipeline.store, "write", unavailable)
    await deposit(db, "ACC006", "USD", "100.00", "while-locked", **from_bus("r-locked"))
    ticks_failed = 0
    for _ in range(20):
        try:
            await pipeline.tick()
        except type(outage):
            ticks_failed += 1
            assert [r[2:] for r in await inbox(db)] == [(None, None)]        # waits, not failed
            continue
        break
    assert outages == 0 and ticks_failed >= 5
    assert [r[2] for r in await inbox(db)] == ["booked C:while-locked"]
    reply = (await replies(db))["r-locked"]
    assert reply["ok"] is True and reply["result"]["booking_id"] == "C:while-locked"
    expected = REFERENCE.accounts["ACC006"].opening_balance + Decimal("100.00")
    assert await stored_balance(db, "ACC006") == expected
    assert pipeline.margin.book.snapshot("ACC006").balance == expected


def test_one_check_tells_the_database_being_unavailable_for_the_listener_and_the_timer() -> None:
    import adapters.commands
    import adapters.db.posttrade
    import handlers.posttrade
    from adapters.db import repository

    # the timer asks its store (``PostTradeStore.unavailable``), which asks the one check
    assert adapters.db.posttrade.database_unavailable is repository.database_unavailable  # type: ignore[attr-defined]  # its import, read on purpose
    assert adapters.commands.database_unavailable is repository.database_unavailable  # type: ignore[attr-defined]  # its import, read on purpose
    assert not hasattr(handlers.posttrade, "database_unavailable")
    assert not hasattr(handlers.posttrade, "_transient")
    assert repository.database_unavailable(
        sa_exc.IntegrityError("COMMIT", {}, Exception("closed"), connection_invalidated=True))
    assert not repository.database_unavailable(sa_exc.IntegrityError("COMMIT", {}, Exception("duplicate")))


async def test_a_cash_amount_given_as_a_json_float_is_refused(db: Database) -> None:
    """0.1 as a JSON number is a binary float: refused with a clear error (and
    answered), nothing booked; the same amount as text, or an integer, is."""
    pipeline = pipeline_for(db)
    await pipeline.load()
    for i, amount in enumerate([0.1, 1e2, True]):
        payload = inbox_db.cash_payload("ACC006", "USD", Decimal(1), None, f"float-{i}")
        await inbox_db.enqueue(db, "cash", {**payload, "amount": amount, **from_bus(f"r-float-{i}")})
    await inbox_db.enqueue(db, "cash", {**inbox_db.cash_payload("ACC006", "USD", Decimal(1), None, "int"),
                                       "amount": 100})
    await deposit(db, "ACC006", "USD", "0.10", "text")
    await pipeline.tick()
    results = [r[2] for r in await inbox(db)]
    assert results[0] == ("error: amount 0.1 must be a string (or an integer), not float: "
                          'give it as text, e.g. "100.10"')
    assert results[1].startswith("error: amount 100.0 must be a string") and "not float" in results[1]
    assert results[2].startswith("error: amount True must be a string") and "not bool" in results[2]
    assert results[3:] == ["booked C:int", "booked C:text"]
    answered = await replies(db)
    assert [answered[f"r-float-{i}"]["error"]["code"] for i in range(3)] == ["invalid_command"] * 3
    expected = REFERENCE.accounts["ACC006"].opening_balance + Decimal("100.10")
    assert await stored_balance(db, "ACC006") == expected
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE kind = 'cash'") == [(2,)]


async def test_a_tick_whose_commit_fails_once_is_applied_once_after_a_reload(db: Database) -> None:
    """A posting id taken meanwhile (another writer) makes the tick's commit
    fail: without a reload its cash stayed in memory and was applied again."""
    pipeline = pipeline_for(db)
    await pipeline.load()
    taken = pipeline.book.next_posting_id
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(PostTradeStore(db).query(
            "INSERT INTO postings (id, booking_id, ledger, party, amount, value_date) "
            "VALUES (?, ?, ?, ?, ?, ?)"),
            (taken, "elsewhere", "USD", "bank:elsewhere", "0", None))
    await deposit(db, "ACC007", "USD", "250.00", "once")
    await pipeline.tick()
    assert [r[2] for r in await inbox(db)] == ["booked C:once"]
    expected = REFERENCE.accounts["ACC007"].opening_balance + Decimal("250.00")
    assert await stored_balance(db, "ACC007") == expected
    assert pipeline.margin.book.snapshot("ACC007").balance == expected
    await pipeline.tick()
    assert pipeline.margin.book.snapshot("ACC007").balance == expected


async def test_a_failed_tick_keeps_the_fills_waiting_for_their_match_and_commits_its_expiries(
        db: Database) -> None:
    """A failed tick changed only expiries in the confirm stage: the reload
    keeps the fills still waiting for their platform record (rebuilt empty,
    they were never reported unmatched), and the recovery commits what the
    failed tick expired."""
    events = scenario(30)
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [])    # no platform records
    waiting = pipeline.confirm.matcher.pending_count
    assert waiting == 30
    await _refuse_postings_of(db, "4242.00")
    await deposit(db, "ACC006", "USD", "4242.00", "poison-1")
    await pipeline.tick()                                 # nothing expires yet
    assert (await inbox(db))[0][2].startswith("error: not applied:")
    assert pipeline.confirm.matcher.pending_count == waiting
    await deposit(db, "ACC006", "USD", "4242.00", "poison-2")
    await pipeline.tick(now=datetime.now(UTC) + timedelta(seconds=31))     # the window has passed
    assert (await inbox(db))[1][2].startswith("error: not applied:")
    assert await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state") == [("unmatched", 30)]
    assert await q(db, "SELECT COUNT(*) FROM breaks WHERE type = 'unmatched_lp'") == [(30,)]
    assert pipeline.confirm.matcher.pending_count == 0


async def test_failing_batch_commits_back_off(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.5 s doubling, across the reloads in between (each reload used to
    start again from 0.5 s), and from 0.5 s again after a success."""
    events = scenario(20)
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    pipeline = pipeline_for(db)
    await pipeline.load()
    seen: list[Any] = []
    intake.on_committed = seen.extend
    await intake.process([Inbound("LP1", raw(e.lp, i + 2, "LP1"), time.time(), "app")
                          for i, e in enumerate(events)])
    real_write = pipeline.store.write
    failures = 4

    async def flaky_write(w: BatchChanges) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise sa_exc.OperationalError("COMMIT", {}, Exception("database is locked"))
        await real_write(w)

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(pipeline.store, "write", flaky_write)
    monkeypatch.setattr("handlers.posttrade.asyncio.sleep", sleep)
    assert await pipeline._process_safely(seen[:10])
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert pipeline.cursor == seen[-1][0]            # the reload caught up on everything committed
    # the next failure starts from 0.5 s again
    failures = 1
    waits.clear()
    seen.clear()
    await intake.process([Inbound("LP1", raw(e.lp, i + 22, "LP1"), time.time(), "app")
                          for i, e in enumerate(scenario(25)[20:])])
    assert await pipeline._process_safely(seen)
    assert waits == [0.5] and pipeline.cursor == seen[-1][0]


async def test_a_failing_timer_retries_with_backoff_not_at_its_period(db: Database) -> None:
    pipeline = pipeline_for(db)
    pipeline.timer_seconds = 3600.0          # no tick of its own while the test runs
    await pipeline.load()
    attempts = 0
    real_tick = pipeline.tick

    async def failing_tick(now: datetime | None = None) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise sa_exc.OperationalError("SELECT", {}, Exception("connection refused"))
        await real_tick(now)

    pipeline.tick = failing_tick  # type: ignore[method-assign]  # a failing tick in its place
    timer = asyncio.create_task(pipeline._timer())
    try:
        pipeline.tick_now.set()
        async with asyncio.timeout(60):
            while attempts < 4 or pipeline.tick_backoff.failures:     # reset by the success
                await asyncio.sleep(0.05)
        assert attempts == 4
    finally:
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer


# -- 13. a break that comes back is seen ------------------------------------------------


async def test_a_resolved_break_detected_again_reopens_as_a_new_occurrence(db: Database) -> None:
    pipeline = pipeline_for(db)
    await pipeline.load()
    value_date = (START + timedelta(days=2)).date()
    brk = Break(BreakType.SSI_MISSING, {"counterparty": "LP2", "currency": "CAD",
                                        "value_date": value_date.isoformat()},
                "no SSI", value_date=value_date, currencies=("CAD",))
    bid = brk.break_id

    async def detect() -> None:
        w = BatchChanges()
        pipeline.breaks.add(brk, w, now_us())
        await pipeline.store.write(w)

    async def events() -> list[tuple[str, str, Any]]:
        return [(e, json.loads(p)["type"].rsplit(".", 1)[1], json.loads(p)["data"].get("occurrence"))
                for e, p in await q(db, f"SELECT event_id, payload FROM outbox WHERE event_id LIKE '{bid}%' "
                                        "ORDER BY id")]

    async def command(kind: str, by: str, reason: str | None = None) -> None:
        await inbox_db.enqueue(db, kind, {"break_id": bid, "by": by, "reason": reason})
        await pipeline.tick(now=START)

    await detect()
    await detect()                                   # open, seen again: same occurrence, same id
    await command("break_resolve", "ops1", "SSI added")
    await detect()                                   # it came back
    shown = await queries.show_break(db, bid)
    assert shown is not None
    assert (shown["state"], shown["occurrence"], shown["occurrences"]) == ("open", 2, 3)
    assert shown["reopened_us"] is not None and shown["reopened_us"] >= shown["resolved_us"]
    await command("break_acknowledge", "ops2")
    await detect()                                   # acknowledged, seen again: stays acknowledged
    assert (await queries.show_break(db, bid) or {})["state"] == "acknowledged"
    await command("break_resolve", "ops2", "SSI fixed for good")
    await detect()
    assert await events() == [
        (bid, "detected", 1), (bid, "detected", 1), (f"{bid}-resolved", "resolved", 1),
        (f"{bid}-2", "detected", 2), (f"{bid}-2-acknowledged", "acknowledged", 2),
        (f"{bid}-2", "detected", 2), (f"{bid}-2-resolved", "resolved", 2), (f"{bid}-3", "detected", 3)]
    # a reopened break escalates again near its cut-off (once per occurrence)
    cut_off = datetime.combine(value_date, datetime.min.time(), UTC)
    await pipeline.tick(now=cut_off)
    await pipeline.tick(now=cut_off)
    assert [e for e, _, _ in await events()][-1:] == [f"{bid}-3-escalated"]
    assert next(r for r in await queries.list_breaks(db) if r["break_id"] == bid)["occurrence"] == 3


async def test_a_break_resolved_and_detected_again_in_one_transaction_reopens(db: Database) -> None:
    pipeline = pipeline_for(db)
    await pipeline.load()
    brk = Break(BreakType.UNKNOWN_ACCOUNT, {"session": "LP1", "exec_id": "E1", "account": "X"}, "who is X")
    w = BatchChanges()
    pipeline.breaks.add(brk, w, now_us())
    await pipeline.store.write(w)
    await inbox_db.enqueue(db, "break_resolve",
                           {"break_id": brk.break_id, "by": "ops", "reason": "known now"})
    real_take = pipeline.margin.take_breaks
    pipeline.margin.take_breaks = lambda: [*real_take(), brk]   # type: ignore[method-assign]  # one more break, in its place
    await pipeline.tick()                  # the resolution, then the detection, in one transaction
    shown = await queries.show_break(db, brk.break_id)
    assert shown is not None and (shown["state"], shown["occurrence"]) == ("open", 2)
    assert await q(db, f"SELECT event_id FROM outbox WHERE event_id LIKE '{brk.break_id}%' ORDER BY id") == [
        (brk.break_id,), (f"{brk.break_id}-resolved",), (f"{brk.break_id}-2",)]


# -- 14. money rules -------------------------------------------------------------------


async def test_a_withdrawal_above_free_margin_or_the_balance_is_refused(db: Database) -> None:
    events = scenario(12)
    _, pipeline = await intake_and_pipeline(db, [e.lp for e in events], [])
    holder = next(a for a in sorted(REFERENCE.accounts) if REFERENCE.accounts[a].currency == "USD"
                  and pipeline.margin.book.positions(a))
    flat = next(a for a in sorted(REFERENCE.accounts) if REFERENCE.accounts[a].currency == "USD"
                and not pipeline.margin.book.positions(a))
    free = pipeline.margin.book.snapshot(holder).free_margin
    balance = pipeline.margin.book.snapshot(flat).balance
    await deposit(db, holder, "USD", str(-(free + Decimal("0.01"))), "w1", **from_bus("r-w1"))
    await deposit(db, flat, "USD", str(-(balance + Decimal("0.01"))), "w2")
    await deposit(db, flat, "USD", str(-balance), "w3")
    await pipeline.tick()
    results = [r[2] for r in await inbox(db)]
    assert results[0].startswith(f"error: withdrawal of {free + Decimal('0.01')} USD exceeds the free margin")
    assert results[1].startswith("error: withdrawal of") and "exceeds the balance" in results[1]
    assert results[2] == "booked C:w3"
    assert (await replies(db))["r-w1"]["error"]["code"] == "withdrawal_refused"
    assert await q(db, "SELECT booking_id FROM bookings WHERE kind = 'cash'") == [("C:w3",)]
    assert pipeline.margin.book.snapshot(holder).free_margin == free
    assert await stored_balance(db, flat) == 0


def _fill(exec_id: str, side: str, qty: str, px: str, template: SimFill) -> SimFill:
    q_ = Decimal(qty)
    return replace(template, exec_id=exec_id, exec_type="F", exec_ref_id=None, order_id=f"O-{exec_id}",
                   cl_ord_id=f"C-{exec_id}", account="ACC001", symbol="EUR/USD", side=side, currency="EUR",
                   order_qty=q_, last_qty=q_, last_px=Decimal(px), cum_qty=q_, leaves_qty=Decimal(0),
                   avg_px=Decimal(px), ord_status="2", spot_rate=None, forward_points=None)


async def _losing_round_trip(db: Database, reference: ReferenceData) -> PostTrade:
    """ACC001 (100 USD) buys 1,000,000 EUR/USD at 1.10000 and sells at 1.09900:
    stopped out, then flat with a realised loss of 1,000 USD."""
    template = next(e.lp for e in scenario(50) if e.lp.symbol == "EUR/USD" and e.lp.settl_type == "0")
    fills = [_fill("NBP-1", "1", "1000000", "1.10000", template),
             _fill("NBP-2", "2", "1000000", "1.09900", template)]
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=reference.symbols)
    pipeline = pipeline_for(db, reference)
    await pipeline.load()
    intake.on_committed = pipeline.submit
    for i, f in enumerate(fills):
        await intake.process([Inbound("LP1", raw(f, i + 2, "LP1"), time.time(), "app")])
        while not pipeline.queue.empty():
            await pipeline.process(pipeline.queue.get_nowait())
    return pipeline


def _with_acc001(opening: str, protect: bool) -> ReferenceData:
    accounts = dict(REFERENCE.accounts)
    accounts["ACC001"] = replace(accounts["ACC001"], opening_balance=Decimal(opening), exposure_limits={})
    groups = dict(REFERENCE.leverage_groups)
    group = accounts["ACC001"].leverage_group
    groups[group] = replace(groups[group], negative_balance_protection=protect)
    return replace(REFERENCE, accounts=accounts, leverage_groups=groups)


async def test_negative_balance_protection_resets_a_stopped_out_balance_to_zero(db: Database) -> None:
    pipeline = await _losing_round_trip(db, _with_acc001("100.00", True))
    snap = pipeline.margin.book.snapshot("ACC001")
    assert snap.balance == 0 and not pipeline.margin.book.positions("ACC001")
    ((booking_id, kind),) = await q(db, "SELECT booking_id, kind FROM bookings WHERE booking_id LIKE 'NBP:%'")
    assert kind == "adjustment" and booking_id.startswith("NBP:ACC001:")
    postings = await q(db, f"SELECT ledger, party, amount FROM postings WHERE booking_id = '{booking_id}'")
    assert sorted((p, Decimal(a)) for _, p, a in postings) == [
        ("client:ACC001", Decimal("900.00")), ("house:negative-balance-protection", Decimal("-900.00"))]
    kinds = [k for (k,) in await q(db, "SELECT kind FROM margin_events WHERE account = 'ACC001' ORDER BY id")]
    assert "stop_out" in kinds and kinds[-1] == "balance_reset"
    assert await stored_balance(db, "ACC001") == 0
    fresh = pipeline_for(db, _with_acc001("100.00", True))        # the credit is reloaded with the cash
    await fresh.load()
    assert fresh.margin.book.snapshot("ACC001").balance == 0


async def test_without_negative_balance_protection_the_balance_stays_negative(db: Database) -> None:
    pipeline = await _losing_round_trip(db, _with_acc001("100.00", False))
    assert pipeline.margin.book.snapshot("ACC001").balance == Decimal("-900.00")
    assert await q(db, "SELECT COUNT(*) FROM bookings WHERE booking_id LIKE 'NBP:%'") == [(0,)]


async def test_cash_in_a_currency_without_a_rate_makes_the_margin_unpriced_until_a_rate_arrives(
        db: Database) -> None:
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    pipeline = pipeline_for(db)
    await pipeline.load()
    intake.on_quotes = pipeline.submit_quotes
    await deposit(db, "ACC001", "TRY", "3000000.00", "try-1")
    await pipeline.tick()
    snap = pipeline.margin.book.snapshot("ACC001")
    assert snap.state == "unpriced" and snap.unpriced_balance == ("TRY",)
    assert await q(db, "SELECT state, margin_level FROM margin_accounts WHERE account = 'ACC001'") == \
        [("unpriced", None)]
    ((keys, occurrences),) = await q(db, "SELECT keys, occurrences FROM breaks "
                                         "WHERE type = 'margin_unpriced'")
    assert json.loads(keys) == {"account": "ACC001", "currency": "TRY"} and occurrences == 1
    published = [json.loads(p)["data"] for (p,) in await q(
        db, "SELECT payload FROM outbox WHERE topic = 'fxstp/margin/ACC001' ORDER BY id")]
    assert published[-1]["state"] == "unpriced" and published[-1]["unpriced"] == ["TRY"]
    # refused while unpriced: its free margin is not known
    await deposit(db, "ACC001", "USD", "-1.00", "w-1")
    await pipeline.tick()
    assert "unpriced" in (await inbox(db))[-1][2]
    # a restart neither forgets it nor raises the break again (the account moving or not)
    restarted = pipeline_for(db)
    await restarted.load()
    intake.on_quotes = restarted.submit_quotes
    assert restarted.margin.book.snapshot("ACC001") == snap
    await deposit(db, "ACC001", "USD", "5.00", "usd-1")
    await restarted.tick()
    assert restarted.margin.book.snapshot("ACC001").state == "unpriced"
    assert await q(db, "SELECT occurrences FROM breaks WHERE type = 'margin_unpriced'") == [(1,)]
    # the USD/TRY rate arrives: 3,000,000 TRY at 30 = 100,000 USD
    header = "35=W\x0134=2\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
    await intake.process([Inbound("LP1", finish("FIX.4.4", header + md_body("USD/TRY", "29.99", "30.01"))
                                   .decode(), time.time(), "app")])
    await restarted.process(restarted.queue.get_nowait())
    snap = restarted.margin.book.snapshot("ACC001")
    assert snap.state == "ok" and snap.unpriced_currencies == ()
    assert snap.balance == REFERENCE.accounts["ACC001"].opening_balance + Decimal("100005.00")
    assert await q(db, "SELECT state FROM margin_accounts WHERE account = 'ACC001'") == [("ok",)]


async def test_the_cli_waits_for_the_engine_and_prints_a_refused_withdrawal(
        db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from app.cli import _build_parser, _desk_command

    pipeline = pipeline_for(db)
    await pipeline.load()
    cfg = SimpleNamespace(database_url=db.engine.url.render_as_string(hide_password=False))

    async def engine() -> None:
        while True:
            await pipeline.tick()
            await asyncio.sleep(0.05)

    running = asyncio.create_task(engine())
    try:
        args = _build_parser().parse_args(["cash", "withdraw", "--account", "ACC006", "--currency", "USD",
                                           "--amount", "25000000.01", "--reference", "too-much",
                                           "--wait", "60"])
        assert await _desk_command(args, cfg) == 1
        out = capsys.readouterr()
        assert "refused: withdrawal of 25000000.01 USD exceeds the balance of account ACC006" in out.err
        assert json.loads(out.out)["result"].startswith("error: withdrawal")
        args = _build_parser().parse_args(["cash", "withdraw", "--account", "ACC006", "--currency", "USD",
                                           "--amount", "25000000.00", "--reference", "all", "--wait", "60"])
        assert await _desk_command(args, cfg) == 0
        assert json.loads(capsys.readouterr().out)["result"] == "booked C:all"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert await q(db, "SELECT booking_id FROM bookings") == [("C:all",)]


async def test_the_engine_resolves_an_unpriced_break_once_the_rate_arrives(db: Database) -> None:
    """Live (the rate's batch) and across a restart (the rate came while the
    engine was down): the margin_unpriced break is resolved by the engine."""
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    pipeline = pipeline_for(db)
    await pipeline.load()
    intake.on_quotes = pipeline.submit_quotes
    await deposit(db, "ACC006", "TRY", "300.00", "try")
    await deposit(db, "ACC007", "MXN", "200.00", "mxn")
    await pipeline.tick()
    ids = {json.loads(k)["currency"]: b for b, k in await q(
        db, "SELECT break_id, keys FROM breaks WHERE type = 'margin_unpriced'")}
    assert set(ids) == {"TRY", "MXN"}

    def quote(seq: int, symbol: str, bid: str, offer: str) -> Inbound:
        header = f"35=W\x0134={seq}\x0149=LP1\x0152=20300107-09:00:00.000\x0156=STP\x01"
        text = finish("FIX.4.4", header + md_body(symbol, bid, offer)).decode()
        return Inbound("LP1", text, time.time(), "app")

    await intake.process([quote(2, "USD/TRY", "29.99", "30.01")])
    await pipeline.process(pipeline.queue.get_nowait())
    shown = await queries.show_break(db, ids["TRY"])
    assert shown is not None and (shown["state"], shown["resolved_by"]) == ("resolved", "engine")
    assert "USD rate arrived" in shown["resolution"]
    assert await q(db, f"SELECT COUNT(*) FROM outbox WHERE event_id = '{ids['TRY']}-resolved'") == [(1,)]
    assert (await queries.show_break(db, ids["MXN"]) or {})["state"] == "open"
    # USD/MXN arrives while post-trade is down; it resolves the break when it starts
    intake.on_quotes = None
    await intake.process([quote(3, "USD/MXN", "19.99", "20.01")])
    restarted = pipeline_for(db)
    await restarted.load()
    assert restarted.margin.book.snapshot("ACC007").state == "ok"
    await restarted.tick()
    assert (await queries.show_break(db, ids["MXN"]) or {})["state"] == "resolved"
    await restarted.tick()                                # once
    assert await q(db, f"SELECT COUNT(*) FROM outbox WHERE event_id LIKE '{ids['MXN']}%'") == [(2,)]
