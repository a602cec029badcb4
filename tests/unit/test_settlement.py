"""stp.settlement: cut-off times and the instruction lifecycle."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.breaks import BreakType, Severity
from stp.netting import NetBook, NetKey
from stp.reference import Counterparty, CutOff, ReferenceData, Ssi
from stp.settlement import (
    Direction,
    IllegalTransition,
    Instruction,
    InstructionState,
    SettlementBook,
    cut_off_time,
)
from tests.unit.test_netting import reversal, trade

LONDON_16 = CutOff("*")                     # default: 1 business day before, 16:00 London

VD = date(2026, 11, 20)                     # Friday
EUR = NetKey("LP1", "EUR", VD)
USD = NetKey("LP1", "USD", VD)
CUT = datetime(2026, 11, 19, 16, 0, tzinfo=UTC)   # Thu 16:00 London (GMT) = 16:00 UTC
BEFORE = CUT - timedelta(hours=3)
AFTER = CUT + timedelta(minutes=1)

SSI_EUR = Ssi("LP1", "EUR", "DEUTDEFF", "DE89370400440532013000")
SSI_USD = Ssi("LP1", "USD", "CHASUS33", "000123456")


def ref(*ssis: Ssi, **cut_offs: CutOff) -> ReferenceData:
    return ReferenceData(
        accounts={},
        leverage_groups={},
        counterparties={"LP1": Counterparty("LP1", ssis), "LP2": Counterparty("LP2")},
        pairs={},
        cut_offs=cut_offs,
    )


REF = ref(SSI_EUR, SSI_USD)


# -- cut-off times ---------------------------------------------------------------


def test_cut_off_before_easter_is_thursday_in_target() -> None:
    # Value date Tue 2026-04-07.  TARGET is closed Good Friday 04-03 and Easter
    # Monday 04-06, and at the weekend: the business day before the value date is
    # Thu 04-02.  London is on BST since Sun 03-29, so 16:00 London = 15:00 UTC.
    assert cut_off_time(date(2026, 4, 7), "EUR", LONDON_16) == datetime(2026, 4, 2, 15, 0, tzinfo=UTC)
    # The Fed is open on Easter Monday: USD for the same value date is instructed Monday.
    assert cut_off_time(date(2026, 4, 7), "USD", LONDON_16) == datetime(2026, 4, 6, 15, 0, tzinfo=UTC)
    # Two business days before: Thu 04-02 and Wed 04-01.
    two = CutOff("EUR", days_before=2)
    assert cut_off_time(date(2026, 4, 7), "EUR", two) == datetime(2026, 4, 1, 15, 0, tzinfo=UTC)


def test_cut_off_across_a_weekend() -> None:
    # Value date Mon 2026-11-16 -> Fri 2026-11-13, GMT: 16:00 London = 16:00 UTC.
    assert cut_off_time(date(2026, 11, 16), "EUR", LONDON_16) == datetime(2026, 11, 13, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value_date", "expected"),
    [
        # UK clocks go back Sun 2026-10-25 (BST -> GMT).
        (date(2026, 10, 26), datetime(2026, 10, 23, 15, tzinfo=UTC)),   # Fri, BST
        (date(2026, 10, 27), datetime(2026, 10, 26, 16, tzinfo=UTC)),   # Mon, GMT
        # UK clocks go forward Sun 2026-03-29 (GMT -> BST).
        (date(2026, 3, 30), datetime(2026, 3, 27, 16, tzinfo=UTC)),     # Fri, GMT
        (date(2026, 3, 31), datetime(2026, 3, 30, 15, tzinfo=UTC)),     # Mon, BST
    ],
)
def test_cut_off_follows_london_daylight_saving(value_date: date, expected: datetime) -> None:
    got = cut_off_time(value_date, "EUR", LONDON_16)
    assert got == expected
    assert got.tzinfo is UTC


def test_cut_off_on_value_date_in_another_zone() -> None:
    # CLS-style: matched by 06:30 CET on the value date; July is CEST (UTC+2).
    cls = CutOff("EUR", time(6, 30), "Europe/Paris", days_before=0)
    assert cut_off_time(date(2026, 7, 15), "EUR", cls) == datetime(2026, 7, 15, 4, 30, tzinfo=UTC)


def test_run_uses_the_currency_cut_off() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(100), BEFORE)
    book.on_net_change(USD, Decimal(-110), BEFORE)
    late_usd = ref(SSI_EUR, SSI_USD, USD=CutOff("USD", time(12, 0), "America/New_York"))
    done, breaks = book.run_cut_offs(AFTER, late_usd)      # 16:01 London = 11:01 New York
    assert [i.key for i in done] == [EUR] and breaks == []
    done, _ = book.run_cut_offs(datetime(2026, 11, 19, 17, 0, tzinfo=UTC), late_usd)
    assert [i.key for i in done] == [USD]


# -- lifecycle -----------------------------------------------------------------------


def test_pending_follows_the_net_until_cut_off_then_instructed_then_settled() -> None:
    book = SettlementBook()
    assert book.on_net_change(EUR, Decimal(1_000_000), BEFORE) == []
    assert book.on_net_change(EUR, Decimal(1_500_000), BEFORE) == []
    (pending,) = book.instructions()
    assert pending.state is InstructionState.PENDING
    assert (pending.amount, pending.version, pending.adjustment) == (Decimal(1_500_000), 1, False)

    assert book.run_cut_offs(CUT - timedelta(seconds=1), REF) == ([], [])
    done, breaks = book.run_cut_offs(CUT, REF)
    assert breaks == []
    (ins,) = done
    assert ins.state is InstructionState.INSTRUCTED
    assert ins.direction is Direction.RECEIVE
    assert ins.ssi == SSI_EUR
    assert ins.instructed_at == CUT
    assert ins.instruction_id == "LP1/EUR/2026-11-20/v1"
    assert book.run_cut_offs(AFTER, REF) == ([], [])         # not twice

    settled_at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert book.apply_status(EUR, "settled", settled_at) == []
    (final,) = book.instructions(value_date=VD)
    assert final.state is InstructionState.SETTLED and final.settled_at == settled_at
    assert ins.state is InstructionState.INSTRUCTED          # frozen: a new object each time
    assert book.apply_status(EUR, "settled", settled_at) == []   # a duplicate report: no-op


def test_failed_settlement_is_a_critical_break() -> None:
    book = SettlementBook()
    book.on_net_change(USD, Decimal("-1100000.00"), BEFORE)
    (ins,), _ = book.run_cut_offs(AFTER, REF)
    assert ins.direction is Direction.PAY and ins.ssi == SSI_USD
    at = datetime(2026, 11, 20, 18, tzinfo=UTC)
    (brk,) = book.apply_status(USD, "failed", at, reason="insufficient funds")
    assert brk.type is BreakType.SETTLEMENT_FAILED
    assert brk.level is Severity.CRITICAL
    assert brk.keys == {"counterparty": "LP1", "currency": "USD", "value_date": "2026-11-20", "version": "1"}
    assert "insufficient funds" in brk.summary
    (failed,) = book.instructions()
    assert (failed.state, failed.failed_at, failed.failure_reason) == (
        InstructionState.FAILED, at, "insufficient funds"
    )


def test_zero_net_is_not_instructed() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(500), BEFORE)
    book.on_net_change(EUR, Decimal(0), BEFORE)            # traded back flat
    assert book.run_cut_offs(AFTER, REF) == ([], [])
    (ins,) = book.instructions()
    assert ins.state is InstructionState.PENDING and ins.amount == 0 and ins.direction is None
    # a key that was never non-zero has no instruction at all
    assert book.on_net_change(USD, Decimal(0), BEFORE) == []
    assert book.history(USD) == ()


def test_missing_ssi_stays_pending_with_a_break() -> None:
    book = SettlementBook()
    book.on_net_change(USD, Decimal(-5), BEFORE)
    book.on_net_change(NetKey("LP2", "EUR", VD), Decimal(7), BEFORE)
    book.on_net_change(NetKey("LP9", "EUR", VD), Decimal(9), BEFORE)
    done, breaks = book.run_cut_offs(AFTER, ref(SSI_EUR))
    assert done == []
    assert [b.type for b in breaks] == [BreakType.SSI_MISSING] * 3
    assert [b.keys["counterparty"] for b in breaks] == ["LP1", "LP2", "LP9"]
    assert "unknown counterparty" in breaks[2].summary
    assert breaks[0].level is Severity.CRITICAL
    assert all(i.state is InstructionState.PENDING for i in book.instructions())
    # SSI set up later: the next run instructs
    done, breaks = book.run_cut_offs(AFTER + timedelta(hours=1), REF)
    assert [i.key for i in done] == [USD] and len(breaks) == 2


def test_ssi_version_valid_on_the_value_date() -> None:
    v2 = dataclasses.replace(SSI_EUR, account="NEW", version=2, valid_from=VD + timedelta(days=1))
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(1), BEFORE)
    (ins,), _ = book.run_cut_offs(AFTER, ref(SSI_EUR, v2))
    assert ins.ssi == SSI_EUR


def test_fill_after_instruction_is_a_break_and_an_adjustment() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(1_500_000), BEFORE)
    book.run_cut_offs(CUT, REF)
    late = AFTER + timedelta(minutes=5)
    (brk,) = book.on_net_change(EUR, Decimal(2_000_000), late)
    assert brk.type is BreakType.AFTER_CUT_OFF
    assert brk.keys == {"counterparty": "LP1", "currency": "EUR", "value_date": "2026-11-20"}
    assert brk.ours["instructed"] == "1500000" and brk.theirs["net"] == "2000000"
    v1, v2 = book.history(EUR)
    assert (v1.state, v1.amount) == (InstructionState.INSTRUCTED, Decimal(1_500_000))   # untouched
    assert (v2.state, v2.amount, v2.version, v2.adjustment) == (
        InstructionState.PENDING, Decimal(500_000), 2, True
    )
    # another change before the next run moves the adjustment, not a third instruction
    (again,) = book.on_net_change(EUR, Decimal(1_400_000), late)
    assert again.break_id == brk.break_id and again.theirs["adjustment"] == "-100000"
    assert [i.amount for i in book.history(EUR)] == [Decimal(1_500_000), Decimal(-100_000)]
    assert book.net(EUR) == Decimal(1_400_000)
    # the cut-off has passed: the next run instructs the adjustment
    (adj,), _ = book.run_cut_offs(late, REF)
    assert (adj.version, adj.direction, adj.state) == (2, Direction.PAY, InstructionState.INSTRUCTED)
    # two instructed: a status must say which
    with pytest.raises(IllegalTransition, match="pass version"):
        book.apply_status(EUR, "settled", late)
    book.apply_status(EUR, "settled", late, version=1)
    book.apply_status(EUR, "settled", late)                  # the only INSTRUCTED one left
    assert [i.state for i in book.history(EUR)] == [InstructionState.SETTLED] * 2


def test_a_net_change_before_the_run_goes_into_the_pending_instruction() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(100), BEFORE)
    assert book.on_net_change(EUR, Decimal(150), AFTER) == []   # past cut-off time, not yet sent
    (ins,), _ = book.run_cut_offs(AFTER, REF)
    assert ins.amount == Decimal(150) and ins.version == 1


def test_same_net_again_is_a_no_op() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(100), BEFORE)
    book.run_cut_offs(AFTER, REF)
    assert book.on_net_change(EUR, Decimal("100.00"), AFTER) == []
    assert len(book.history(EUR)) == 1


# -- illegal transitions ---------------------------------------------------------------


def test_illegal_transitions() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(100), BEFORE)
    message = "cannot settle instruction LP1/EUR/2026-11-20/v1: it is pending"
    with pytest.raises(IllegalTransition, match=message):
        book.apply_status(EUR, "settled", AFTER)
    with pytest.raises(IllegalTransition, match="no instruction for this key"):
        book.apply_status(USD, "settled", AFTER)
    with pytest.raises(IllegalTransition, match="no version 2"):
        book.apply_status(EUR, "settled", AFTER, version=2)
    book.run_cut_offs(AFTER, REF)
    book.apply_status(EUR, "settled", AFTER)
    with pytest.raises(IllegalTransition, match=r"cannot fail instruction .* it is settled"):
        book.apply_status(EUR, "failed", AFTER, reason="late")
    with pytest.raises(ValueError, match="unknown settlement status"):
        book.apply_status(EUR, "bounced", AFTER)  # type: ignore[arg-type]  # an unknown status on purpose
    with pytest.raises(ValueError, match="timezone-aware"):
        book.apply_status(EUR, "settled", datetime(2026, 11, 20, 10))
    assert issubclass(IllegalTransition, ValueError)


def test_instruction_transitions_directly() -> None:
    pending = Instruction(EUR, Decimal(0))
    with pytest.raises(IllegalTransition, match="amount is zero"):
        pending.instruct(SSI_EUR, AFTER)
    sent = pending.with_amount(Decimal(5), BEFORE).instruct(SSI_EUR, AFTER)
    with pytest.raises(IllegalTransition, match="change the amount"):
        sent.with_amount(Decimal(6), AFTER)
    failed = sent.fail(AFTER, "rejected")
    with pytest.raises(IllegalTransition, match=r"cannot settle .* it is failed"):
        failed.settle(AFTER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        failed.state = InstructionState.SETTLED  # type: ignore[misc]  # assigning to a frozen field on purpose


# -- wiring and persistence ---------------------------------------------------------------


def test_net_book_feeds_the_settlement_book() -> None:
    nets = NetBook()
    book = SettlementBook()
    b1 = trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000")
    b2 = trade("b2", "LP1", "EUR/USD", True, "500000", "1.1010")
    nets.apply(b1)
    assert book.on_net_changes(nets.take_changes(), BEFORE) == []
    nets.apply(b2)
    assert book.on_net_changes(nets.take_changes(), BEFORE) == []
    done, _ = book.run_cut_offs(AFTER, REF)
    assert [(i.key.currency, i.amount, i.direction) for i in done] == [
        ("EUR", Decimal(1_500_000), Direction.RECEIVE),
        ("USD", Decimal("-1650500.00"), Direction.PAY),
    ]
    # a cancel after cut-off: both currencies break, adjustments reverse b2
    nets.apply(reversal(b2, "b2-rev"))
    breaks = book.on_net_changes(nets.take_changes(), AFTER)
    assert [b.type for b in breaks] == [BreakType.AFTER_CUT_OFF] * 2
    assert [book.history(k)[-1].amount for k in (EUR, USD)] == [Decimal(-500_000), Decimal("550500.00")]


def test_rebuild_from_stored_instructions() -> None:
    book = SettlementBook()
    book.on_net_change(EUR, Decimal(10), BEFORE)
    book.run_cut_offs(AFTER, REF)
    book.on_net_change(EUR, Decimal(12), AFTER)
    copy = SettlementBook(reversed(book.instructions()))
    assert copy.instructions() == book.instructions()
    assert copy.net(EUR) == Decimal(12)
    with pytest.raises(ValueError, match="versions"):
        SettlementBook([Instruction(EUR, Decimal(1), version=2)])
    with pytest.raises(ValueError, match="only the latest"):
        SettlementBook([Instruction(EUR, Decimal(1)), Instruction(EUR, Decimal(1), version=2)])


# -- property: instructions always add up to the net ----------------------------------------

_ops = st.one_of(
    st.tuples(st.just("net"), st.sampled_from([EUR, USD]), st.integers(-5, 5)),
    st.tuples(st.just("run"), st.booleans()),
    st.tuples(st.just("status"), st.sampled_from([EUR, USD]), st.sampled_from(["settled", "failed"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ops, max_size=30))
def test_instructions_add_up_to_the_last_net(ops: list[tuple[object, ...]]) -> None:
    book = SettlementBook()
    last: dict[NetKey, Decimal] = {}
    for op in ops:
        if op[0] == "net":
            key, amount = op[1], Decimal(op[2])  # type: ignore[arg-type]  # a net op draws an int
            assert isinstance(key, NetKey)
            went_out = any(i.state is not InstructionState.PENDING for i in book.history(key))
            breaks = book.on_net_change(key, amount, AFTER)
            changed = amount != last.get(key, Decimal(0))
            assert len(breaks) == (1 if went_out and changed else 0)
            last[key] = amount
        elif op[0] == "run":
            done, _ = book.run_cut_offs(AFTER if op[1] else BEFORE, REF)
            assert all(i.amount != 0 for i in done)
        else:
            key, status = op[1], op[2]
            assert isinstance(key, NetKey)
            with contextlib.suppress(IllegalTransition):
                book.apply_status(key, status, AFTER)  # type: ignore[arg-type]  # a status op draws settled or failed
        for key in (EUR, USD):
            history = book.history(key)
            assert book.net(key) == last.get(key, Decimal(0))
            assert sum((i.amount for i in history), Decimal(0)) == last.get(key, Decimal(0))
            assert [i.version for i in history] == list(range(1, len(history) + 1))
            assert all(i.state is not InstructionState.PENDING for i in history[:-1])
            assert all(i.adjustment == (i.version > 1) for i in history)
