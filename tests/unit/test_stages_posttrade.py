"""The post-trade pipeline (``handlers.posttrade.PostTrade``) against the
in-memory store (``tests.unit.fakes``): what each batch commits, read back
from the fake after ``process`` / ``catch_up`` / ``tick``."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from handlers.posttrade import PostTrade
from stp.allocation import allocation_booking_id, unallocated_break_id
from stp.backoff import Backoff
from stp.booking import BookingKind
from stp.breaks import BreakType
from stp.fills import ExecKind, Fill
from stp.netting import NetKey
from stp.timestamps import us_to_datetime
from tests.unit.fakes import REFERENCE, FakePostTradeStore, make_fill, spot

D = Decimal
VD = spot()
EUR, USD = NetKey("LP1", "EUR", VD), NetKey("LP1", "USD", VD)


async def pipeline(store: FakePostTradeStore, platform: bool = True) -> PostTrade:
    """As the engine builds it: LP1 an LP session, PLATFORM its platform (by ExecID)."""
    pt = PostTrade(store, REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"} if platform else {},
                   {"PLATFORM": "LP1"} if platform else {})
    pt.backoff = Backoff(0.001, 0.001)          # a failed commit is retried at once
    pt.tick_backoff = Backoff(0.001, 0.001)
    await pt.load()
    return pt


def platform_of(lp: Fill, **changes: str) -> Fill:
    """The platform's record of an LP fill (same ExecID), naming the client."""
    return make_fill(lp.exec_id, session="PLATFORM", account=changes.get("account", lp.account or "ACC001"),
                     side=lp.side, qty=changes.get("qty", str(lp.last_qty)),
                     px=changes.get("px", str(lp.last_px)), kind=lp.kind, exec_ref_id=lp.exec_ref_id)


def ledger_sums(store: FakePostTradeStore, booking_id: str) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for bid, p in store.tables.postings.values():
        if bid == booking_id:
            sums[p.ledger] += p.amount
    return dict(sums)


def nonzero(values: dict[NetKey, Decimal]) -> dict[NetKey, Decimal]:
    return {k: v for k, v in values.items() if v}


# -- a trade -------------------------------------------------------------------------------------

async def test_a_trade_books_once_moves_position_and_nets_confirms_and_moves_the_cursor() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store)
    lp = make_fill("E1")
    await pt.process(store.add_fills([lp, platform_of(lp)]))
    t = store.tables
    # one booking, balanced in every currency, its postings numbered from 1
    assert list(t.bookings) == ["T:LP1:E1"]
    booked = t.bookings["T:LP1:E1"]
    assert (booked.seq, booked.fill_id, booked.first_posting_id) == (1, 1, 1)
    assert booked.booking.kind is BookingKind.TRADE and booked.booking.account == "ACC001"
    assert sorted(t.postings) == [1, 2, 3, 4]
    assert ledger_sums(store, "T:LP1:E1") == {"EUR": 0, "USD": 0}
    # the client is long 1M EUR/USD at 1.1; we receive EUR from LP1 and pay it USD
    position = t.positions[("ACC001", "EUR/USD")]
    assert (position.quantity, position.average_price, position.quote_flow) == \
        (D("1000000"), D("1.1"), D("-1100000"))
    assert t.dated == {("ACC001", "EUR/USD", VD): D("1000000")}
    assert t.nets == {EUR: D("1000000"), USD: D("-1100000")}
    assert {k: (i.amount, i.state.value) for k, i in t.instructions.items()} == {
        f"LP1/EUR/{VD}/v1": (D("1000000"), "pending"), f"LP1/USD/{VD}/v1": (D("-1100000"), "pending")}
    # both sides confirmed, nothing broke, the cursor is past both fills
    assert {c.fill_id: (c.session, c.state) for c in t.confirmations.values()} == \
        {1: ("LP1", "confirmed"), 2: ("PLATFORM", "confirmed")}
    assert t.breaks == {}
    assert t.cursor == 2 and pt.cursor == 2
    assert [e["type"] for e in store.events()] == ["com.fxstp.margin.state"]
    assert t.margins["ACC001"].used_margin > 0


async def test_a_platform_record_at_another_price_is_a_mismatch() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store)
    lp = make_fill("E1")
    await pt.process(store.add_fills([lp, platform_of(lp, px="1.1010")]))
    t = store.tables
    assert {c.state for c in t.confirmations.values()} == {"mismatched"}
    (diff,) = t.confirmations[1].differences
    assert (diff.field, diff.lp, diff.platform) == ("last_px", D("1.1000"), D("1.1010"))
    (brk,) = t.breaks.values()
    assert brk.brk.type is BreakType.MISMATCH and brk.state == "open"
    assert t.positions[("ACC001", "EUR/USD")].quantity == D("1000000")     # the LP's trade books anyway
    assert [e["type"] for e in store.events()] == ["com.fxstp.break.detected", "com.fxstp.margin.state"]


@pytest.mark.parametrize("one_batch", [True, False])
async def test_a_cancel_reverses_the_trade(one_batch: bool) -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    trade = make_fill("E1")
    cancel = make_fill("E2", kind=ExecKind.CANCEL, exec_ref_id="E1")
    if one_batch:
        await pt.process(store.add_fills([trade, cancel]))
    else:
        await pt.process(store.add_fills([trade]))
        await pt.process(store.add_fills([cancel]))        # the trade's booking is read from the store
    t = store.tables
    assert [(b.booking.booking_id, b.booking.kind, b.booking.reverses) for b in t.bookings.values()] == [
        ("T:LP1:E1", BookingKind.TRADE, None), ("R:T:LP1:E1", BookingKind.REVERSAL, "T:LP1:E1")]
    assert ledger_sums(store, "R:T:LP1:E1") == {"EUR": 0, "USD": 0}
    assert t.positions[("ACC001", "EUR/USD")].quantity == 0
    assert t.positions[("ACC001", "EUR/USD")].quote_flow == 0
    assert nonzero(t.nets) == {}
    assert t.breaks == {} and t.cursor == 2
    assert await store.active_trade_bookings([("LP1", "E1")]) == {}


async def test_a_correction_replaces_the_trade() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1")]))
    await pt.process(store.add_fills([make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1",
                                                qty="400000")]))
    t = store.tables
    assert [b.booking.kind for b in t.bookings.values()] == \
        [BookingKind.TRADE, BookingKind.REVERSAL, BookingKind.TRADE]
    assert t.positions[("ACC001", "EUR/USD")].quantity == D("400000")
    assert t.nets == {EUR: D("400000"), USD: D("-440000")}
    assert set(await store.active_trade_bookings([("LP1", "E1"), ("LP1", "E2")])) == {("LP1", "E2")}


# -- restart, retry ------------------------------------------------------------------------------

async def test_a_restart_sees_the_same_state_and_books_nothing_twice() -> None:
    store = FakePostTradeStore()
    first = await pipeline(store, platform=False)
    fills = store.add_fills([make_fill("E1"), make_fill("E2", account="ACC002", qty="250000"),
                             make_fill("E3", kind=ExecKind.CANCEL, exec_ref_id="E1")])
    await first.process(fills)
    committed = store.snapshot()
    writes = len(store.writes)

    second = await pipeline(store, platform=False)              # a new process on the same store
    assert second.cursor == 3
    assert second.positions.positions.keys() == first.positions.positions.keys()
    assert {k: p.quantity for k, p in second.positions.positions.items()} == \
        {k: p.quantity for k, p in first.positions.positions.items()}
    assert second.net.nets == first.net.nets
    assert second.margin.book.snapshot("ACC002") == first.margin.book.snapshot("ACC002")
    await second.process(fills)                                # offered again: at or below the cursor
    await second.catch_up()
    assert len(store.writes) == writes and store.snapshot() == committed
    # the next fill books after the others: its sequence number and posting ids follow theirs
    await second.process(store.add_fills([make_fill("E4", account="ACC002", qty="250000")]))
    booked = store.tables.bookings["T:LP1:E4"]
    assert (booked.seq, booked.first_posting_id, booked.fill_id) == (4, 13, 4)
    assert store.tables.positions[("ACC002", "EUR/USD")].quantity == D("500000")
    assert store.tables.cursor == 4


def scenario_fills() -> list[Fill]:
    """A few of everything, each with its platform record: confirmed trades, a
    trade without account the record allocates, a cancel, a correction."""
    e1, e2, e3 = make_fill("E1"), make_fill("E2", account=None, qty="300000"), make_fill("E3", px="1.1002")
    cancel = make_fill("E4", kind=ExecKind.CANCEL, exec_ref_id="E1")
    correct = make_fill("E5", kind=ExecKind.CORRECT, exec_ref_id="E3", qty="500000", px="1.1002")
    return [e1, platform_of(e1), e2, e3,
            platform_of(e3), cancel, platform_of(e2, account="ACC003"), platform_of(cancel),
            correct, platform_of(correct)]


async def run_scenario(failures: int = 0, committed_first: int = 0) -> FakePostTradeStore:
    """``scenario_fills`` through ``catch_up`` in batches of 4 (4, 4, 2), after
    ``committed_first`` batches processed without failure, with the next
    ``failures`` writes failing."""
    store = FakePostTradeStore()
    pt = await pipeline(store)
    pt.catch_up_batch = 4
    store.add_fills(scenario_fills())
    for _ in range(committed_first):
        await pt.process(await store.fills_after(pt.cursor, 4))
    store.fail_next(failures)
    await pt.catch_up()
    assert store.attempts == 3 + failures and len(store.writes) == 3
    assert pt.cursor == 10 and store.tables.cursor == 10 and not pt._reloading
    return store


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_failed_commit_is_retried_and_ends_as_without_failure(failures: int) -> None:
    reference = await run_scenario()
    store = await run_scenario(failures)
    assert store.snapshot() == reference.snapshot()
    # the reference did what the scenario says: E2 allocated, everything matched
    assert [b.state for b in reference.breaks_of(BreakType.UNALLOCATED)] == ["resolved"]
    assert [c.state for c in reference.tables.confirmations.values()] == ["confirmed"] * 10
    assert reference.tables.positions[("ACC003", "EUR/USD")].quantity == D("300000")
    assert reference.tables.positions[("ACC001", "EUR/USD")].quantity == D("500000")


async def test_a_failed_commit_after_a_committed_batch_ends_as_without_failure() -> None:
    reference = await run_scenario()
    store = await run_scenario(failures=1, committed_first=1)
    assert [c.state for c in store.tables.confirmations.values()] == ["confirmed"] * 10
    assert [b.state for b in store.breaks_of(BreakType.UNALLOCATED)] == ["resolved"]
    assert store.snapshot() == reference.snapshot()


async def test_a_failed_first_commit_rebuilds_the_state_from_the_store() -> None:
    """The failed batch moved the positions in memory; the retry starts from
    what was committed (nothing), so it is applied once, not twice."""
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    fills = store.add_fills([make_fill("E1")])
    store.fail_next(1)
    assert await pt._process_safely(fills)
    assert store.tables.positions[("ACC001", "EUR/USD")].quantity == D("1000000")
    assert pt.positions.positions[("ACC001", "EUR/USD")].quantity == D("1000000")
    assert store.tables.nets == {EUR: D("1000000"), USD: D("-1100000")}
    assert [b.seq for b in store.tables.bookings.values()] == [1]


# -- allocation ----------------------------------------------------------------------------------

async def test_an_lp_fill_without_account_books_on_the_house_until_its_platform_record() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store)
    lp = make_fill("E1", account=None)
    await pt.process(store.add_fills([lp]))
    t = store.tables
    assert t.bookings["T:LP1:E1"].booking.account == "HOUSE-LP1"
    assert t.positions[("HOUSE-LP1", "EUR/USD")].quantity == D("1000000")
    (brk,) = store.breaks_of(BreakType.UNALLOCATED)
    assert brk.brk.break_id == unallocated_break_id("LP1", "E1") and brk.state == "open"
    assert brk.cut_off_us is not None and us_to_datetime(brk.cut_off_us).date() < VD
    nets = dict(t.nets)

    await pt.process(store.add_fills([platform_of(lp, account="ACC002")]))
    t = store.tables
    allocated = t.bookings[allocation_booking_id("LP1", "E1")]
    assert (allocated.booking.account, allocated.booking.allocated_from, allocated.by) == \
        ("ACC002", "T:LP1:E1", "match:PLATFORM/E1")
    assert [b.booking.kind for b in t.bookings.values()] == \
        [BookingKind.TRADE, BookingKind.REVERSAL, BookingKind.TRADE]
    assert t.positions[("HOUSE-LP1", "EUR/USD")].quantity == 0
    assert t.positions[("ACC002", "EUR/USD")].quantity == D("1000000")
    assert t.nets == nets                                      # the money moves with the LP all the same
    (brk,) = store.breaks_of(BreakType.UNALLOCATED)
    assert (brk.state, brk.resolved_by) == ("resolved", "match:PLATFORM/E1")
    assert [e["type"] for e in store.events() if "/breaks/" in e["topic"]] == \
        ["com.fxstp.break.detected", "com.fxstp.break.resolved"]
    assert {c.state for c in t.confirmations.values()} == {"confirmed"}


async def test_a_break_detected_and_resolved_in_one_batch_is_never_raised() -> None:
    """The LP fill without account and its platform record in the same batch:
    the ``unallocated`` break is detected and resolved before the commit."""
    store = FakePostTradeStore()
    pt = await pipeline(store)
    lp = make_fill("E1", account=None)
    await pt.process(store.add_fills([lp, platform_of(lp, account="ACC002")]))
    assert store.tables.breaks == {}
    assert not [e for e in store.events() if "/breaks/" in e["topic"]]
    assert store.tables.positions[("ACC002", "EUR/USD")].quantity == D("1000000")
    assert store.tables.positions[("HOUSE-LP1", "EUR/USD")].quantity == 0


async def test_the_desk_allocates_a_house_fill_through_the_inbox() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1", account=None)]))
    done = store.enqueue("allocate", {"session": "LP1", "exec_id": "E1", "account": "ACC003", "by": "ops1",
                                      "reason": "client called"})
    again = store.enqueue("allocate", {"session": "LP1", "exec_id": "E1", "account": "ACC004", "by": "ops1",
                                       "reason": None})
    await pt.tick()
    assert store.inbox_result(done) == "allocated LP1/E1 from HOUSE-LP1 to ACC003 by ops1"
    assert (store.inbox_result(again) or "").startswith("error: already_allocated")
    t = store.tables
    assert t.positions[("ACC003", "EUR/USD")].quantity == D("1000000")
    assert t.positions[("HOUSE-LP1", "EUR/USD")].quantity == 0
    assert ("ACC004", "EUR/USD") not in t.positions
    (brk,) = store.breaks_of(BreakType.UNALLOCATED)
    assert (brk.state, brk.resolved_by, brk.resolution) == ("resolved", "ops1", "client called")


# -- the timer: inbox, escalations ---------------------------------------------------------------

async def test_a_cash_deposit_books_and_moves_the_balance() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    before = pt.margin.book.snapshot("ACC001").balance
    first = store.enqueue("cash", {"account": "ACC001", "currency": "USD", "amount": "1000.50",
                                   "value_date": None, "reference": "dep-1"})
    repeat = store.enqueue("cash", {"account": "ACC001", "currency": "USD", "amount": "5",
                                    "value_date": None, "reference": "dep-1"})
    floating = store.enqueue("cash", {"account": "ACC001", "currency": "USD", "amount": 0.1,
                                      "value_date": None, "reference": "dep-2"})
    await pt.tick()
    assert store.inbox_result(first) == "booked C:dep-1"
    assert "already booked" in (store.inbox_result(repeat) or "")
    assert "must be a string" in (store.inbox_result(floating) or "")
    assert await store.pending_inbox() == []
    assert list(store.tables.bookings) == ["C:dep-1"]
    assert ledger_sums(store, "C:dep-1") == {"USD": 0}
    assert await store.client_cash() == [("ACC001", "USD", D("1000.50"))]
    assert store.tables.margins["ACC001"].balance == before + D("1000.50")
    # a restart counts it into the balance from the store
    restarted = await pipeline(store, platform=False)
    assert restarted.margin.book.snapshot("ACC001").balance == before + D("1000.50")


async def test_an_unknown_break_is_answered_with_an_error() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    plain = store.enqueue("break_acknowledge", {"break_id": "nope", "by": "ops1"})
    bus = store.enqueue("break_acknowledge", {"break_id": "nope", "by": "ops1", "via": "mqtt",
                                              "request_id": "r1", "reply_to": "fxstp/replies/ops1"})
    await pt.tick()
    assert store.inbox_result(plain) == "error: unknown break nope"
    assert store.inbox_result(bus) == "error: unknown break nope"
    (reply,) = store.events()
    assert reply["topic"] == "fxstp/replies/ops1" and reply["id"] == f"reply-inbox-{bus}"
    assert reply["data"] == {"request_id": "r1", "ok": False,
                             "error": {"code": "unknown_break", "message": "unknown break nope"}}
    assert store.tables.inbox[bus].reply is not None and store.tables.inbox[plain].reply is None
    assert store.tables.breaks == {}


async def test_a_break_is_acknowledged_then_resolved_and_each_change_published() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1", account=None)]))
    bid = unallocated_break_id("LP1", "E1")
    no_reason = store.enqueue("break_resolve", {"break_id": bid, "by": "ops1", "reason": ""})
    ack = store.enqueue("break_acknowledge", {"break_id": bid, "by": "ops1"})
    twice = store.enqueue("break_acknowledge", {"break_id": bid, "by": "ops2"})
    resolve = store.enqueue("break_resolve", {"break_id": bid, "by": "ops2", "reason": "booked in error"})
    await pt.tick()
    assert [store.inbox_result(i) for i in (no_reason, ack, twice, resolve)] == [
        "error: a resolution needs a reason", "acknowledged by ops1",
        "error: cannot acknowledge a break that is acknowledged", "resolved by ops2"]
    stored = store.tables.breaks[bid]
    assert (stored.state, stored.acknowledged_by, stored.resolved_by, stored.resolution) == \
        ("resolved", "ops1", "ops2", "booked in error")
    assert (await store.stored_break(bid)) is not None
    assert [e["id"] for e in store.events() if "/breaks/" in e["topic"]] == \
        [bid, f"{bid}-acknowledged", f"{bid}-resolved"]


async def test_an_unresolved_break_escalates_once_near_its_cut_off() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1", account=None)]))
    bid = unallocated_break_id("LP1", "E1")
    cut_off_us = store.tables.breaks[bid].cut_off_us
    assert cut_off_us is not None
    cut_off = us_to_datetime(cut_off_us)

    def escalations() -> list[str]:
        return [e["id"] for e in store.events() if e["type"] == "com.fxstp.break.escalated"]

    await pt.tick(now=cut_off - timedelta(hours=2))             # not yet
    assert escalations() == []
    await pt.tick(now=cut_off - timedelta(minutes=30))
    assert escalations() == [f"{bid}-escalated"]
    assert store.tables.breaks[bid].escalated_us is not None
    await pt.tick(now=cut_off - timedelta(minutes=10))          # once
    assert escalations() == [f"{bid}-escalated"]
    assert await store.escalations_due(cut_off_us) == []


async def test_a_resolved_break_is_not_escalated() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1", account=None)]))
    bid = unallocated_break_id("LP1", "E1")
    cut_off_us = store.tables.breaks[bid].cut_off_us
    assert cut_off_us is not None
    store.enqueue("break_resolve", {"break_id": bid, "by": "ops1", "reason": "house trade"})
    await pt.tick(now=us_to_datetime(cut_off_us) - timedelta(minutes=30))   # resolved in the same tick
    assert [e["type"] for e in store.events() if "/breaks/" in e["topic"]] == \
        ["com.fxstp.break.detected", "com.fxstp.break.resolved"]
    assert store.tables.breaks[bid].escalated_us is None


async def test_a_settlement_status_settles_an_instructed_net() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1")]))
    late = datetime.combine(VD, datetime.min.time(), UTC)      # past both cut-offs of the value date
    await pt.tick(now=late)
    t = store.tables
    assert {k: i.state.value for k, i in t.instructions.items()} == \
        {f"LP1/EUR/{VD}/v1": "instructed", f"LP1/USD/{VD}/v1": "instructed"}
    settled = store.enqueue("settlement_status", {"counterparty": "LP1", "currency": "EUR",
                                                  "value_date": VD.isoformat(), "status": "settled",
                                                  "reason": None, "version": None})
    await pt.tick(now=late)
    assert store.inbox_result(settled) == f"settled: LP1/EUR/{VD}"
    assert store.tables.instructions[f"LP1/EUR/{VD}/v1"].state.value == "settled"
    restarted = await pipeline(store, platform=False)           # read back by value date
    assert [i.state.value for i in restarted.settle.book.history(EUR)] == ["settled"]


def deposit(store: FakePostTradeStore, reference: str, amount: str) -> int:
    return store.enqueue("cash", {"account": "ACC001", "currency": "USD", "amount": amount,
                                  "value_date": None, "reference": reference})


async def test_a_tick_that_cannot_commit_leaves_its_command_waiting_and_counts_it_once() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    before = pt.margin.book.snapshot("ACC001").balance
    dep = deposit(store, "dep-1", "250.00")
    store.fail_next(2)                  # the tick's commit, then the command's own in the recovery
    with pytest.raises(ConnectionError):
        await pt.tick()
    assert await store.pending_inbox() == [(dep, "cash", store.tables.inbox[dep].payload)]
    assert store.tables.bookings == {}
    assert pt.margin.book.snapshot("ACC001").balance == before        # nothing of it kept in memory
    await pt.tick()                                                    # the store is back
    assert store.inbox_result(dep) == "booked C:dep-1"
    assert store.tables.margins["ACC001"].balance == before + D("250.00")
    assert pt.margin.book.snapshot("ACC001").balance == before + D("250.00")


async def test_a_command_whose_commit_fails_for_what_it_is_is_failed_alone() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    before = pt.margin.book.snapshot("ACC001").balance
    bad, good = deposit(store, "dep-1", "100.00"), deposit(store, "dep-2", "7.00")
    store.fail_next(2, RuntimeError)    # the tick's commit, then the first command's alone
    await pt.tick()
    assert store.inbox_result(bad) == "error: not applied: RuntimeError: fake store: write failed"
    assert store.inbox_result(good) == "booked C:dep-2"
    assert list(store.tables.bookings) == ["C:dep-2"]
    assert store.tables.margins["ACC001"].balance == before + D("7.00")
    assert pt.margin.book.snapshot("ACC001").balance == before + D("7.00")


async def test_a_resolved_break_seen_again_reopens_as_its_next_occurrence() -> None:
    """ACC001 may hold 400M EUR: over it, an ``exposure_limit`` break; seen
    again while open it is the same occurrence; resolved by the desk and seen
    again, it reopens as occurrence 2 with events of its own."""
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1", qty="410000000")]))
    (brk,) = store.breaks_of(BreakType.EXPOSURE_LIMIT)
    bid = brk.brk.break_id
    assert (brk.brk.keys, brk.state, brk.occurrence, brk.occurrences) == \
        ({"account": "ACC001", "currency": "EUR"}, "open", 1, 1)
    await pt.process(store.add_fills([make_fill("E2", qty="1000000")]))
    assert (store.tables.breaks[bid].occurrence, store.tables.breaks[bid].occurrences) == (1, 2)
    store.enqueue("break_resolve", {"break_id": bid, "by": "ops1", "reason": "limit raised"})
    await pt.tick()
    assert store.tables.breaks[bid].state == "resolved"
    await pt.process(store.add_fills([make_fill("E3", qty="1000000")]))
    again = store.tables.breaks[bid]
    assert (again.state, again.occurrence, again.occurrences, again.resolved_by, again.resolution) == \
        ("open", 2, 3, None, None)
    stored = await store.stored_break(bid)
    assert stored is not None and (stored.state, stored.occurrence) == ("open", 2)
    assert [e["id"] for e in store.events() if "/breaks/" in e["topic"]] == \
        [bid, bid, f"{bid}-resolved", f"{bid}-2"]


# -- what a restart forgets of prices ------------------------------------------------------------

async def test_a_restart_marks_margin_at_the_price_marked_before_it() -> None:
    store = FakePostTradeStore()
    pt = await pipeline(store, platform=False)
    await pt.process(store.add_fills([make_fill("E1")]))
    await pt.process(store.add_fills([make_fill("E2", account="ACC002", px="1.1600")]))   # 5.5% off
    assert [b.brk.type for b in store.tables.breaks.values()] == [BreakType.PRICE_OUT_OF_TOLERANCE]
    assert pt.margin.book.prices.price("EUR/USD") == D("1.1000")          # live: not marked at 1.16
    restarted = await pipeline(store, platform=False)
    assert restarted.margin.book.prices.price("EUR/USD") == D("1.1000")
    assert restarted.margin.book.snapshot("ACC001") == pt.margin.book.snapshot("ACC001")


async def test_after_a_restart_an_off_market_fill_is_still_out_of_tolerance() -> None:
    for restart in (False, True):
        store = FakePostTradeStore()
        pt = await pipeline(store, platform=False)
        await pt.process(store.add_fills([make_fill("E1")]))
        if restart:
            pt = await pipeline(store, platform=False)
        await pt.process(store.add_fills([make_fill("E2", px="1.1600")]))
        assert [b.brk.type for b in store.tables.breaks.values()] == [BreakType.PRICE_OUT_OF_TOLERANCE], \
            f"restart={restart}"
