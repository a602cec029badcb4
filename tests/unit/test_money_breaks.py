"""Money rules in the margin book (unpriced amounts, withdrawals, negative
balance protection), breaks that come back as new occurrences, and the
retry delays of failing commits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stp.backoff import Backoff
from stp.booking import HOUSE_NBP, BookingKind, book_negative_balance_credit, check_booking, client_party
from stp.breaks import BreakState, BreakType, occurrence_after_detection, occurrence_id
from stp.margin import MarginBook, PositionView, unpriced_break
from stp.reference import Account, LeverageGroup

D = Decimal
GROUPS = {"retail": LeverageGroup("retail"),
          "unprotected": LeverageGroup("unprotected", negative_balance_protection=False)}


def book(*accounts: Account) -> MarginBook:
    return MarginBook({a.account_id: a for a in accounts}, GROUPS)


def pos(account: str, pair: str, quantity: str | int, avg: str) -> PositionView:
    return PositionView(account, pair, D(quantity), D(avg), -D(quantity) * D(avg))


# -- unpriced cash and P&L ------------------------------------------------------


def test_cash_in_a_currency_without_a_rate_makes_the_margin_unpriced_not_zero() -> None:
    m = book(Account("A", "USD", "retail", D("10000")))
    m.on_price("EUR/USD", D("1.10"))
    m.on_position(pos("A", "EUR/USD", 100_000, "1.10"))         # used 3,666.67: level 272.73%
    assert m.snapshot("A").state == "ok"
    m.set_balance_amounts("A", {"USD": D("10000"), "TRY": D("-300000")})   # a TRY loss, no USD/TRY rate
    s = m.snapshot("A")
    assert s.state == "unpriced" and s.margin_level is None
    assert s.unpriced_balance == ("TRY",) and s.unpriced_currencies == ("TRY",)
    assert s.priced_state == "ok"                     # what was decided before, kept for later
    assert m.accounts_depending_on("USD/TRY") == {"A"}
    assert m.withdrawal_refusal("A", "USD", D("1")) is not None
    # the rate arrives: 300,000 TRY = 10,000 USD, equity 0: stop-out, with both crossings
    events = m.on_price("USD/TRY", D("30"))
    s = m.snapshot("A")
    assert s.state == "stop_out" and s.balance == D("0.00") and s.margin_level == D("0.00")
    assert [e.kind for e in events] == ["margin_call", "stop_out"]
    assert s == m.recompute("A")
    # and a rate move revalues the balance, without a position change
    m.on_price("USD/TRY", D("60"))
    assert m.snapshot("A").balance == D("5000.00")


def test_an_unpriced_account_decides_nothing_until_priced() -> None:
    m = book(Account("A", "USD", "retail", D("10000")))
    m.on_price("EUR/USD", D("1.10"))
    m.on_position(pos("A", "EUR/USD", 100_000, "1.10"))
    assert m.set_balance_amounts("A", {"USD": D("100"), "SEK": D("5")}) == []    # level would be 2.73%
    assert m.snapshot("A").state == "unpriced"
    assert m.on_price("EUR/USD", D("1.00")) == []     # still no SEK/USD: no call on a partial figure
    # realised P&L in the position's quote currency converts through the pair's own price
    m2 = book(Account("B", "EUR", "retail", D("1000")))
    m2.set_balance_amounts("B", {"EUR": D("1000"), "JPY": D("16000")})
    assert m2.snapshot("B").state == "unpriced"
    m2.on_price("EUR/JPY", D("160"))
    assert m2.snapshot("B").state == "ok" and m2.snapshot("B").balance == D("1100.00")


def test_restoring_an_unpriced_state_decides_from_scratch() -> None:
    m = book(Account("A", "USD", "retail", D("10000")))
    assert m.restore_states({"A": "unpriced"}) == []
    assert m.snapshot("A").state == "ok"


def test_the_unpriced_break_names_the_account_and_currency() -> None:
    m = book(Account("A", "USD", "retail", D("10000")))
    m.set_balance_amounts("A", {"USD": D("1"), "TRY": D("5")})
    brk = unpriced_break("A", "USD", "TRY", m.snapshot("A"))
    assert brk.type is BreakType.MARGIN_UNPRICED and brk.keys == {"account": "A", "currency": "TRY"}
    assert brk.level.value == "high"


# -- withdrawals ----------------------------------------------------------------


def test_withdrawals_are_limited_to_free_margin_or_the_balance() -> None:
    m = book(Account("A", "USD", "retail", D("10000")), Account("F", "USD", "retail", D("500.00")))
    m.on_price("EUR/USD", D("1.10"))
    m.on_position(pos("A", "EUR/USD", 100_000, "1.10"))
    free = m.snapshot("A").free_margin
    assert free == D("6333.33")
    assert m.withdrawal_refusal("A", "USD", free) is None
    refusal = m.withdrawal_refusal("A", "USD", free + D("0.01"))
    assert refusal is not None and "free margin" in refusal and "6333.33" in refusal
    # in another currency: valued at the latest rate (5,757.57 EUR = 6,333.33 USD)
    assert m.withdrawal_refusal("A", "EUR", D("5757.57")) is None
    assert m.withdrawal_refusal("A", "EUR", D("5757.58")) is not None
    assert "no GBP/USD rate" in (m.withdrawal_refusal("A", "GBP", D("1")) or "")
    # without positions: the balance
    assert m.withdrawal_refusal("F", "USD", D("500.00")) is None
    assert "balance" in (m.withdrawal_refusal("F", "USD", D("500.01")) or "")


# -- negative balance protection ------------------------------------------------


def test_negative_balance_protection_credits_a_flat_account_back_to_zero() -> None:
    m = book(Account("A", "USD", "retail", D("100")), Account("U", "USD", "unprotected", D("100")))
    for account in ("A", "U"):
        m.on_position(pos(account, "EUR/USD", 100_000, "1.10"))
        m.set_balance(account, D("-900.00"))          # a realised loss beyond the balance
    assert m.negative_balance_adjustment("A") is None    # a position is still open
    for account in ("A", "U"):
        m.on_position(pos(account, "EUR/USD", 0, "1.10"))
    assert m.negative_balance_adjustment("A") == D("900.00")
    assert m.negative_balance_adjustment("U") is None    # the group does not protect
    m.set_balance("A", D("0"))
    assert m.negative_balance_adjustment("A") is None


def test_the_negative_balance_credit_is_a_balanced_booking_against_the_house() -> None:
    b = book_negative_balance_credit("NBP:A:7", "A", "USD", D("900.00"))
    check_booking(b)
    assert b.kind is BookingKind.ADJUSTMENT
    assert {(p.party, p.amount) for p in b.postings} == {(client_party("A"), D("900.00")),
                                                          (HOUSE_NBP, D("-900.00"))}
    for bad in (D("0"), D("-1"), D("0.001")):
        with pytest.raises(ValueError):
            book_negative_balance_credit("NBP:A:8", "A", "USD", bad)


# -- breaks that come back -------------------------------------------------------


def test_a_resolved_break_detected_again_is_a_new_occurrence() -> None:
    assert occurrence_after_detection(BreakState.RESOLVED, 1) == (2, True)
    assert occurrence_after_detection(BreakState.RESOLVED, 2) == (3, True)
    assert occurrence_after_detection(BreakState.OPEN, 2) == (2, False)
    assert occurrence_after_detection(BreakState.ACKNOWLEDGED, 1) == (1, False)
    with pytest.raises(ValueError):
        occurrence_after_detection("closed", 1)
    assert occurrence_id("abc", 1) == "abc"
    assert occurrence_id("abc", 3) == "abc-3"
    with pytest.raises(ValueError):
        occurrence_id("abc", 0)


# -- retry delays ------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_restarts_after_a_success() -> None:
    b = Backoff(0.5, 30.0)
    assert [b.next() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    b.reset()
    assert b.next() == 0.5
    for _ in range(500):
        b.next()                                      # no overflow however long it fails
    assert b.next() == 30.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_backoff_tells_the_delay_after_so_many_failures_without_counting_one() -> None:
    b = Backoff(1.0, 30.0)
    assert [b.delay(n) for n in (0, 1, 2, 4, 5, 1000)] == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0]
    assert b.delay(-1) == 1.0 and b.failures == 0
