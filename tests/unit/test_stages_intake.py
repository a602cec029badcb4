"""The intake (``handlers.intake.Intake``) against the in-memory store and
hand-off (``tests.unit.fakes``): what each batch commits, from wire messages
to journal, fills, conflicts, breaks and sequence numbers; and on to the
post-trade pipeline over the same fake database."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from fixsim.fixmsg import er_body, md_body
from fixsim.scenario import SimFill
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from stp.breaks import BreakType
from stp.fills import content_hash
from stp.fixwire import fields_of, finish
from stp.inbound import Inbound
from tests.unit.fakes import RECEIVED, REFERENCE, TRADE_DATE, FakeInbound, FakeIntakeStore, spot

D = Decimal
T0 = 1_894_006_800.0                 # 2030-01-07 09:00 UTC, exact in binary
SENDING = "20300107-09:00:00.000"
GARBLED = "8=FIX.4.4\x019=5\x0135=8\x01xx=1\x0110=000\x01"

DontKnow = tuple[str, dict[int, str], str, str]


def sim(exec_id: str = "E1", *, account: str = "ACC001", symbol: str = "EUR/USD", side: str = "1",
        qty: str = "1000000", px: str = "1.1000") -> SimFill:
    """An execution report's content (a full fill of its order), as the simulators make it."""
    return SimFill(exec_id=exec_id, exec_type="F", exec_ref_id=None, order_id=f"O-{exec_id}",
                   cl_ord_id=f"C-{exec_id}", account=account, symbol=symbol, side=side, currency=symbol[:3],
                   order_qty=D(qty), last_qty=D(qty), last_px=D(px), cum_qty=D(qty), leaves_qty=D(0),
                   avg_px=D(px), ord_status="2", transact_time=RECEIVED, trade_date=TRADE_DATE,
                   settl_type="0", settl_date=spot(symbol if symbol in REFERENCE.symbols else "EUR/USD"))


def raw(body: str, seq: int, *, sender: str = "LP1", msg_type: str = "8", poss_dup: bool = False,
        sending: str = SENDING) -> str:
    header = f"35={msg_type}\x0134={seq}\x01" + ("43=Y\x01" if poss_dup else "")
    header += f"49={sender}\x0152={sending}\x0156=STP\x01" + (f"122={SENDING}\x01" if poss_dup else "")
    return finish("FIX.4.4", header + body).decode("latin-1")


def report(fill: SimFill, seq: int, session: str = "LP1", **kw: bool | str) -> Inbound:
    poss_dup = bool(kw.get("poss_dup", False))
    sending = str(kw.get("sending", SENDING))
    return Inbound(session, raw(er_body(fill), seq, sender=session, poss_dup=poss_dup, sending=sending),
                   T0 + seq / 1000, "app")


def new_intake(store: FakeIntakeStore, dont_know: list[DontKnow] | None = None) -> Intake:
    def send_dont_know(session: str, fields: dict[int, str], reason: str, text: str) -> bool:
        if dont_know is not None:
            dont_know.append((session, fields, reason, text))
        return True

    return Intake(FakeInbound(), store, store.load_state(), send_dont_know, known_symbols=REFERENCE.symbols)


def outcomes(store: FakeIntakeStore) -> list[str]:
    return [j.outcome for j in store.tables.journal]


async def test_fills_duplicates_conflicts_garbled_messages_and_sequence_numbers() -> None:
    store = FakeIntakeStore()
    intake = new_intake(store)
    e1, e2 = sim("E1"), sim("E2", side="2", qty="500000")
    await intake.process([report(e1, 2), report(e2, 3), report(e1, 7, "PLATFORM")])
    # a PossResend of E1 (other MsgSeqNum and SendingTime), E1 with another price, a garbled message
    await intake.process([report(e1, 4, poss_dup=True, sending="20300107-09:30:00.000"),
                          report(replace(e1, last_px=D("1.1001")), 5),
                          Inbound("LP1", GARBLED, T0 + 1, "app")])
    t = store.tables
    assert outcomes(store) == ["accepted", "accepted", "accepted", "duplicate", "conflict", "unparseable"]
    assert [j.journal_id for j in t.journal] == [1, 2, 3, 4, 5, 6]
    assert t.journal[3].poss_dup and not t.journal[4].poss_dup
    assert t.journal[4].reason == "ExecID reused with different content"
    assert t.journal[5].raw == GARBLED and t.journal[5].seq == 0
    # the fills, with the ids the post-trade pipeline reads them by
    assert [(i, j, f.session, f.exec_id) for i, (j, f) in t.fills.items()] == \
        [(1, 1, "LP1", "E1"), (2, 2, "LP1", "E2"), (3, 3, "PLATFORM", "E1")]
    f1 = t.fills[1][1]
    assert (f1.account, f1.symbol, f1.side.value, f1.last_qty, f1.last_px, f1.settl_date) == \
        ("ACC001", "EUR/USD", "1", D("1000000"), D("1.1000"), spot())
    assert f1.received_at.timestamp() == pytest.approx(T0 + 0.002)
    # the conflict is kept beside the original, which it never replaces, and is a break
    (conflict,) = t.conflicts
    assert (conflict.journal_id, conflict.session, conflict.exec_id) == (5, "LP1", "E1")
    assert conflict.original_hash == f1.content_hash != conflict.conflicting_hash
    assert conflict.conflicting_hash == content_hash(fields_of(raw(er_body(replace(e1, last_px=D("1.1001"))),
                                                                   5)))
    (brk,) = t.breaks.values()
    assert brk.brk.type is BreakType.EXECID_CONFLICT and brk.brk.keys == {"session": "LP1", "exec_id": "E1"}
    assert [e["type"] for e in store.store.events()] == ["com.fxstp.break.detected"]
    # the highest MsgSeqNum per session is committed; the next start resumes after everything
    assert {s: r.last_seq for s, r in t.sessions.items()} == {"LP1": 5, "PLATFORM": 7}
    state = store.load_state()
    assert (state.next_journal_id, state.next_fill_id, state.next_conflict_id) == (7, 4, 2)
    assert intake.last_seq == state.last_seq
    assert intake.counters.outcomes == {"accepted": 3, "duplicate": 1, "conflict": 1, "unparseable": 1}


async def test_a_restarted_intake_dedupes_against_the_committed_fills() -> None:
    store = FakeIntakeStore()
    e1, e2 = sim("E1"), sim("E2")
    await new_intake(store).process([report(e1, 1), report(e2, 2)])
    second = new_intake(store)                  # its cache is empty: known_hashes reads the store
    assert ("LP1", "E1") not in second.known
    await second.process([report(e1, 1, poss_dup=True, sending="20300107-10:00:00.000"),
                          report(replace(e2, side="2"), 3), report(sim("E3"), 4)])
    assert outcomes(store) == ["accepted", "accepted", "duplicate", "conflict", "accepted"]
    assert list(store.tables.fills) == [1, 2, 3]
    assert store.tables.fills[3][1].exec_id == "E3" and store.tables.fills[3][0] == 5


async def test_an_unbookable_report_gets_a_dont_know_after_the_commit() -> None:
    store = FakeIntakeStore()
    dont_know: list[DontKnow] = []
    intake = new_intake(store, dont_know)
    bad = report(sim("E2", symbol="XXX/YYY"), 3)
    items = [report(sim("E1"), 2), bad]
    store.fail_next(1)
    with pytest.raises(ConnectionError):
        await intake.process(items)
    assert dont_know == [] and store.tables.journal == []      # nothing committed, nothing sent
    assert intake.state.next_journal_id == 1 and intake.last_seq == {}
    await intake.process(items)                                 # tried again, as the run loop does
    ((session, fields, reason, text),) = dont_know
    assert (session, reason) == ("LP1", "A") and fields == fields_of(bad.raw)
    assert "XXX/YYY" in text
    assert outcomes(store) == ["accepted", "dont_know"]
    assert store.tables.journal[1].reason == f"DKReason=A: {text}"
    assert [f.exec_id for _, f in store.tables.fills.values()] == ["E1"]
    (brk,) = store.tables.breaks.values()
    assert brk.brk.type is BreakType.REJECTED_REPORT and brk.brk.keys == {"session": "LP1", "exec_id": "E2"}
    assert store.tables.sessions["LP1"].last_seq == 3
    assert intake.counters.dont_know_sent == 1


async def test_the_run_loop_drains_the_hand_off_and_stops() -> None:
    store = FakeIntakeStore()
    intake = new_intake(store)
    queue = FakeInbound([report(sim(f"E{i}"), i) for i in range(1, 6)])
    intake.queue = queue
    intake.batch_max = 2
    task = asyncio.create_task(intake.run())
    await intake.drain_and_stop()
    await asyncio.wait_for(task, 5)
    assert len(queue) == 0 and queue.high_water == 5 and intake.drained()
    assert [len(b) for b in store.batches] == [2, 2, 1]
    assert outcomes(store) == ["accepted"] * 5


async def test_intake_to_post_trade_over_one_store() -> None:
    """The intake's commits are the pipeline's input: handed over in memory
    (``on_committed``) or read back by cursor from the same store."""
    store = FakeIntakeStore()
    pipeline = PostTrade(store.store, REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                         {"PLATFORM": "LP1"})
    await pipeline.load()
    intake = new_intake(store)
    intake.on_committed = pipeline.submit
    e1 = sim("E1")
    await intake.process([report(e1, 2), report(e1, 2, "PLATFORM"), report(sim("E2", account="ACC002"), 3)])
    while not pipeline.queue.empty():
        await pipeline.process(pipeline.queue.get_nowait())
    t = store.tables
    assert list(t.bookings) == ["T:LP1:E1", "T:LP1:E2"]
    assert {c.fill_id: c.state for c in t.confirmations.values()} == \
        {1: "confirmed", 2: "confirmed", 3: "received"}
    assert t.positions[("ACC001", "EUR/USD")].quantity == D("1000000") and t.cursor == 3
    # a pipeline in a process of its own reads the same from the store
    other = FakeIntakeStore()
    await new_intake(other).process([report(e1, 2), report(e1, 2, "PLATFORM"),
                                     report(sim("E2", account="ACC002"), 3)])
    alone = PostTrade(other.store, REFERENCE, frozenset({"LP1"}), {"PLATFORM": "exec_id"},
                      {"PLATFORM": "LP1"})
    await alone.load()
    alone.poke()
    await alone.catch_up()
    assert other.store.snapshot()["bookings"] == store.store.snapshot()["bookings"]
    assert other.tables.positions == t.positions and other.tables.nets == t.nets


async def test_a_quote_is_committed_and_moves_margin() -> None:
    store = FakeIntakeStore()
    pipeline = PostTrade(store.store, REFERENCE, frozenset({"LP1"}), {}, {})
    await pipeline.load()
    intake = new_intake(store)
    intake.on_committed = pipeline.submit
    intake.on_quotes = pipeline.submit_quotes
    await intake.process([report(sim("E1"), 2)])
    await intake.process([Inbound("LP1", raw(md_body("EUR/USD", "1.1098", "1.1102"), 3, msg_type="W"),
                                  T0 + 1, "app")])
    assert outcomes(store) == ["accepted", "market_data"]
    quote, journal_id, _ = store.tables.market_prices["EUR/USD"]
    assert (quote.price, journal_id) == (D("1.1100"), 2)
    while not pipeline.queue.empty():
        await pipeline.process(pipeline.queue.get_nowait())
    assert pipeline.margin.book.prices.price("EUR/USD") == D("1.1100")
    # long 1M at 1.1000 marked at 1.1100
    assert store.tables.margins["ACC001"].unrealised_pnl == D("10000.00")
    restarted = PostTrade(store.store, REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()                                      # the quote is newer than the fill
    assert restarted.margin.book.prices.price("EUR/USD") == D("1.1100")
