"""stp.booking: fills -> balanced, immutable double-entry bookings; the Ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.booking import (
    CLIENT_MONEY,
    Booking,
    BookingKind,
    Ledger,
    Posting,
    book_cash,
    book_fill,
    book_trade,
    check_booking,
    reverse,
)
from stp.breaks import BreakType
from stp.fills import ExecKind, Fill, Side
from stp.valuedates import CurrencyPair

RECEIVED = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
TRADE_DATE = date(2026, 11, 18)
SPOT = date(2026, 11, 20)
D = Decimal


def make_fill(exec_id: str = "E1", *, symbol: str = "EUR/USD", side: Side = Side.BUY,
              qty: str | Decimal = "1000000", px: str | Decimal = "1.1000", currency: str | None = None,
              kind: ExecKind = ExecKind.TRADE, exec_ref_id: str | None = None,
              account: str | None = "ACC1", session: str = "LP1", settl_date: date | None = SPOT) -> Fill:
    """A Fill built directly (no wire format)."""
    pair = CurrencyPair.parse(symbol)
    return Fill(session=session, exec_id=exec_id, kind=kind, exec_ref_id=exec_ref_id,
                order_id=f"O-{exec_id}", cl_ord_id=None, account=account, pair=pair, side=side,
                currency=currency or pair.base, last_qty=D(qty), last_px=D(px), cum_qty=None,
                leaves_qty=None, avg_px=None, order_qty=None, trade_date=TRADE_DATE, settl_type="0",
                settl_date=settl_date, transact_time=RECEIVED, received_at=RECEIVED)


def amounts(booking: Booking) -> dict[tuple[str, str], Decimal]:
    return {(p.ledger, p.party): p.amount for p in booking.postings}


def ledger_sums(bookings: list[Booking]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for b in bookings:
        for p in b.postings:
            sums[p.ledger] = sums.get(p.ledger, D(0)) + p.amount
    return sums


# -- known answers -------------------------------------------------------------------------------

def test_client_buys_eurusd() -> None:
    b = book_trade(make_fill())
    assert b.booking_id == "T:LP1:E1"
    assert b.kind is BookingKind.TRADE and b.fill_key == ("LP1", "E1") and b.reverses is None
    assert (b.account, b.counterparty, b.pair) == ("ACC1", "LP1", "EUR/USD")
    assert amounts(b) == {
        ("EUR", "client:ACC1"): D("1000000.00"), ("EUR", "lp:LP1"): D("-1000000.00"),
        ("USD", "client:ACC1"): D("-1100000.00"), ("USD", "lp:LP1"): D("1100000.00"),
    }
    assert str(amounts(b)[("USD", "client:ACC1")]) == "-1100000.00"
    assert all(p.value_date == SPOT for p in b.postings)
    t = b.trade
    assert t is not None
    assert (t.base_amount, t.quote_amount, t.price, t.side) == (D(1000000), D(-1100000), D("1.1"), Side.BUY)
    assert (t.account, t.counterparty, t.pair.symbol, t.value_date) == ("ACC1", "LP1", "EUR/USD", SPOT)


def test_client_sells_usdjpy_rounds_jpy_to_zero_decimals() -> None:
    b = book_trade(make_fill(symbol="USD/JPY", side=Side.SELL, qty="1000003", px="151.234"))
    # 151.234 x 1,000,003 = 151,234,453.702
    assert amounts(b) == {
        ("USD", "client:ACC1"): D("-1000003.00"), ("USD", "lp:LP1"): D("1000003.00"),
        ("JPY", "client:ACC1"): D("151234454"), ("JPY", "lp:LP1"): D("-151234454"),
    }
    assert amounts(b)[("JPY", "lp:LP1")].as_tuple().exponent == 0


@pytest.mark.parametrize(("px", "jpy"), [("150.5", "150500150"), ("151.5", "151500152")])
def test_jpy_half_even_ties(px: str, jpy: str) -> None:
    # 1,000,001 x 150.5 = 150,500,150.5 -> even 150,500,150; x 151.5 = 151,500,151.5 -> 151,500,152
    b = book_trade(make_fill(symbol="USD/JPY", qty="1000001", px=px))
    assert amounts(b)[("JPY", "client:ACC1")] == -D(jpy)
    assert amounts(b)[("JPY", "lp:LP1")] == D(jpy)


def test_quote_dealt_fill() -> None:
    # the client buys EUR for 1,000,000 USD at 1.1: 909,090.9090... EUR -> 909,090.91
    b = book_trade(make_fill(currency="USD", qty="1000000", px="1.1"))
    assert amounts(b) == {
        ("EUR", "client:ACC1"): D("909090.91"), ("EUR", "lp:LP1"): D("-909090.91"),
        ("USD", "client:ACC1"): D("-1000000.00"), ("USD", "lp:LP1"): D("1000000.00"),
    }
    sell = book_trade(make_fill(currency="USD", side=Side.SELL, qty="1100000", px="1.1"))
    assert amounts(sell)[("EUR", "client:ACC1")] == D("-1000000.00")
    assert amounts(sell)[("USD", "client:ACC1")] == D("1100000.00")


def test_kwd_three_decimals() -> None:
    # 0.30745 x 1,000,001 = 307,450.30745 -> 307,450.307; 10 x 0.30745 = 3.0745 -> even 3.074
    b = book_trade(make_fill(symbol="USD/KWD", qty="1000001", px="0.30745"))
    assert amounts(b)[("KWD", "client:ACC1")] == D("-307450.307")
    assert amounts(b)[("KWD", "client:ACC1")].as_tuple().exponent == -3
    tie = book_trade(make_fill(symbol="USD/KWD", qty="10", px="0.30745"))
    assert amounts(tie)[("KWD", "lp:LP1")] == D("3.074")
    # quote-dealt: 1000 KWD at 0.30745 = 3252.5614... USD
    q = book_trade(make_fill(symbol="USD/KWD", currency="KWD", qty="1000", px="0.30745"))
    assert amounts(q)[("USD", "client:ACC1")] == D("3252.56")
    assert amounts(q)[("KWD", "client:ACC1")] == D("-1000.000")


def test_amounts_ignore_the_thread_decimal_context() -> None:
    with localcontext() as ctx:
        ctx.prec = 4
        b = book_trade(make_fill(symbol="USD/JPY", side=Side.SELL, qty="1000003", px="151.234"))
    assert amounts(b)[("JPY", "client:ACC1")] == D("151234454")


def test_quantity_finer_than_minor_units_is_rounded_the_same_on_both_sides() -> None:
    b = book_trade(make_fill(qty="1000.125", px="1.1"))
    assert amounts(b)[("EUR", "client:ACC1")] == D("1000.12")
    assert amounts(b)[("EUR", "lp:LP1")] == D("-1000.12")
    check_booking(b)


def test_book_trade_rejects_cancel_and_missing_account() -> None:
    with pytest.raises(ValueError):
        book_trade(make_fill(kind=ExecKind.CANCEL, exec_ref_id="E0"))
    with pytest.raises(ValueError):
        book_trade(make_fill(account=None))


# -- cancel, correct, breaks ---------------------------------------------------------------------

def test_cancel_books_a_linked_reversal() -> None:
    original = book_trade(make_fill())
    cancel = make_fill("E2", kind=ExecKind.CANCEL, exec_ref_id="E1")
    result = book_fill(cancel, original)
    assert result.breaks == ()
    (rev,) = result.bookings
    assert rev.booking_id == "R:T:LP1:E1" and rev.kind is BookingKind.REVERSAL
    assert rev.reverses == original.booking_id and rev.fill_key == ("LP1", "E2") and rev.sign == -1
    assert rev.trade == original.trade
    assert {k: -v for k, v in amounts(original).items()} == amounts(rev)
    ledger = Ledger()
    ledger.apply(original)
    ledger.apply(rev)
    for ccy, party in amounts(original):
        assert ledger.balance(ccy, party) == 0
    assert ledger.is_reversed(original.booking_id)


def test_cancel_does_not_need_an_account() -> None:
    original = book_trade(make_fill())
    result = book_fill(make_fill("E2", kind=ExecKind.CANCEL, exec_ref_id="E1", account=None), original)
    assert [b.kind for b in result.bookings] == [BookingKind.REVERSAL] and result.breaks == ()


def test_correct_books_reversal_and_new_trade() -> None:
    original = book_trade(make_fill())
    correct = make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1", qty="2000000", px="1.1010")
    result = book_fill(correct, original)
    assert result.breaks == ()
    rev, new = result.bookings
    assert rev.booking_id == "R:T:LP1:E1" and rev.reverses == "T:LP1:E1"
    assert new.booking_id == "T:LP1:E2" and new.fill_key == ("LP1", "E2") and new.kind is BookingKind.TRADE
    assert amounts(new)[("USD", "client:ACC1")] == D("-2202000.00")
    ledger = Ledger()
    ledger.apply_all([original, *result.bookings])
    assert ledger.balance("EUR", "client:ACC1") == D("2000000.00")
    assert ledger.balance("USD", "lp:LP1") == D("2202000.00")
    assert ledger.total("EUR") == ledger.total("USD") == 0


def test_correction_of_a_correction() -> None:
    first = book_trade(make_fill())
    _, second = book_fill(make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1"), first).bookings
    rev, third = book_fill(make_fill("E3", kind=ExecKind.CORRECT, exec_ref_id="E2"), second).bookings
    assert rev.reverses == "T:LP1:E2" and third.booking_id == "T:LP1:E3"


@pytest.mark.parametrize("kind", [ExecKind.CANCEL, ExecKind.CORRECT])
def test_unknown_reference_is_a_break(kind: ExecKind) -> None:
    fill = make_fill("E9", kind=kind, exec_ref_id="E404")
    result = book_fill(fill, None)
    assert result.bookings == ()
    (brk,) = result.breaks
    assert brk.type is BreakType.UNKNOWN_REFERENCE
    assert brk.keys == {"session": "LP1", "exec_id": "E9", "exec_ref_id": "E404"}
    assert "E404" in brk.summary and "E9" in brk.summary
    assert brk.break_id == book_fill(fill, None).breaks[0].break_id


def test_original_of_another_fill_is_a_caller_error() -> None:
    other = book_trade(make_fill("E7"))
    with pytest.raises(ValueError):
        book_fill(make_fill("E2", kind=ExecKind.CANCEL, exec_ref_id="E1"), other)
    with pytest.raises(ValueError):
        book_fill(make_fill("E2", kind=ExecKind.CANCEL, exec_ref_id="E7"), reverse(other))


def test_fill_without_account_is_a_break() -> None:
    result = book_fill(make_fill(account=None), None)
    assert result.bookings == ()
    (brk,) = result.breaks
    assert brk.type is BreakType.UNKNOWN_ACCOUNT and brk.keys["exec_id"] == "E1"


def test_correction_without_account_books_nothing() -> None:
    original = book_trade(make_fill())
    result = book_fill(make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1", account=None), original)
    assert result.bookings == ()
    assert [b.type for b in result.breaks] == [BreakType.UNKNOWN_ACCOUNT]


def test_account_outside_reference_data_is_a_break() -> None:
    result = book_fill(make_fill(account="NOPE"), None, known_accounts={"ACC1"})
    assert [b.type for b in result.breaks] == [BreakType.UNKNOWN_ACCOUNT] and result.bookings == ()
    assert book_fill(make_fill(), None, known_accounts={"ACC1"}).breaks == ()


@pytest.mark.parametrize(("symbol", "qty", "currency"),
                         [("USD/JPY", "1E+40", None), ("USD/JPY", "0.4", "JPY"), ("EUR/USD", "1", "GBP")])
def test_unbookable_amount_is_an_invalid_fill_break(symbol: str, qty: str, currency: str | None) -> None:
    result = book_fill(make_fill(symbol=symbol, qty=qty, px="150", currency=currency), None)
    assert result.bookings == () and [b.type for b in result.breaks] == [BreakType.INVALID_FILL]


def test_reversal_is_not_reversed() -> None:
    with pytest.raises(ValueError):
        reverse(reverse(book_trade(make_fill())))


# -- cash ----------------------------------------------------------------------------------------

def test_cash_deposit_and_withdrawal() -> None:
    dep = book_cash("C1", "ACC1", "USD", D("50000"), SPOT)
    assert dep.kind is BookingKind.CASH and dep.booking_id == "C1" and dep.trade is None
    assert amounts(dep) == {("USD", "client:ACC1"): D("50000.00"), ("USD", CLIENT_MONEY): D("-50000.00")}
    wd = book_cash("C2", "ACC1", "USD", D("-1250.50"), SPOT)
    ledger = Ledger()
    ledger.apply_all([dep, wd])
    assert ledger.balance("USD", "client:ACC1") == D("48749.50")
    assert ledger.balance("USD", CLIENT_MONEY) == D("-48749.50")
    ledger.apply(reverse(wd))
    assert ledger.balance("USD", "client:ACC1") == D("50000.00")


@pytest.mark.parametrize(("ccy", "amount"), [("USD", "1.005"), ("JPY", "10.5"), ("USD", "0")])
def test_cash_rejects_fine_or_zero_amounts(ccy: str, amount: str) -> None:
    with pytest.raises(ValueError):
        book_cash("C1", "ACC1", ccy, D(amount), None)


# -- ledger --------------------------------------------------------------------------------------

def test_ledger_balances_per_value_date() -> None:
    later = date(2026, 12, 18)
    ledger = Ledger()
    ledger.apply(book_trade(make_fill("E1")))
    ledger.apply(book_trade(make_fill("E2", side=Side.SELL, qty="400000", px="1.1050", settl_date=later)))
    assert ledger.balance("EUR", "client:ACC1") == D("600000.00")
    assert ledger.balance_on("EUR", "client:ACC1", SPOT) == D("1000000.00")
    assert ledger.balance_on("EUR", "client:ACC1", later) == D("-400000.00")
    assert ledger.balance_on("USD", "lp:LP1", later) == D("-442000.00")
    assert ledger.balance_on("USD", "lp:LP1", date(2027, 1, 1)) == 0
    assert ledger.balances("USD") == {"client:ACC1": D("-658000.00"), "lp:LP1": D("658000.00")}
    assert set(ledger.currencies()) == {"EUR", "USD"}


def _tampered(booking: Booking, index: int, amount: str) -> Booking:
    postings = list(booking.postings)
    postings[index] = replace(postings[index], amount=D(amount))
    return replace(booking, postings=tuple(postings))


def test_ledger_rejects_unbalanced_and_unquantized_bookings() -> None:
    b = book_trade(make_fill())
    ledger = Ledger()
    with pytest.raises(ValueError, match="sum"):
        ledger.apply(_tampered(b, 0, "1000000.01"))
    unquantized = replace(b, postings=(Posting("USD", "a", D("1.005"), None),
                                       Posting("USD", "b", D("-1.005"), None)))
    with pytest.raises(ValueError, match="minor units"):
        ledger.apply(unquantized)
    with pytest.raises(ValueError):
        ledger.apply(replace(b, postings=(Posting("USD", "a", D("NaN"), None),)))
    assert ledger.currencies() == () and ledger.booking(b.booking_id) is None


def test_ledger_is_idempotent_and_rejects_conflicts() -> None:
    b = book_trade(make_fill())
    ledger = Ledger()
    assert ledger.apply(b) is True
    assert ledger.apply(book_trade(make_fill())) is False
    assert ledger.balance("EUR", "client:ACC1") == D("1000000.00")
    with pytest.raises(ValueError, match="different content"):
        ledger.apply(book_trade(make_fill(qty="2000000")))
    rev = reverse(b)
    assert ledger.apply(rev) is True and ledger.apply(rev) is False
    assert ledger.balance("EUR", "client:ACC1") == 0


def test_ledger_rejects_reversal_of_unknown_booking() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="not applied"):
        ledger.apply(reverse(book_trade(make_fill())))
    assert ledger.currencies() == ()


# -- properties ----------------------------------------------------------------------------------

PRICES = {
    "EUR/USD": st.decimals(min_value=D("0.9"), max_value=D("1.5"), places=5),
    "USD/JPY": st.decimals(min_value=D("100"), max_value=D("160"), places=3),
    "EUR/GBP": st.decimals(min_value=D("0.8"), max_value=D("0.95"), places=5),
    "USD/CAD": st.decimals(min_value=D("1.2"), max_value=D("1.45"), places=5),
    "USD/KWD": st.decimals(min_value=D("0.29"), max_value=D("0.32"), places=5),
}
QUANTITIES = st.one_of(
    st.integers(min_value=1, max_value=50_000_000).map(D),
    st.decimals(min_value=D("1"), max_value=D("10000000"), places=2),
)


@st.composite
def fills(draw: st.DrawFn, exec_id: str = "E1") -> Fill:
    symbol = draw(st.sampled_from(sorted(PRICES)))
    pair = CurrencyPair.parse(symbol)
    return make_fill(exec_id, symbol=symbol, side=draw(st.sampled_from(Side)), qty=draw(QUANTITIES),
                     px=draw(PRICES[symbol]), currency=draw(st.sampled_from(pair.currencies)))


@given(fills())
@settings(max_examples=300)
def test_every_trade_booking_balances_exactly(fill: Fill) -> None:
    b = book_trade(fill)
    check_booking(b)
    assert all(s == 0 for s in ledger_sums([b]).values())
    assert not any(p.amount.is_signed() and p.amount.is_zero() for p in b.postings)
    t = b.trade
    assert t is not None
    dealt = t.base_amount if fill.currency == fill.pair.base else t.quote_amount
    assert abs(dealt) == fill.last_qty.quantize(abs(dealt))      # dealt amount is LastQty, rounded
    buy = fill.side is Side.BUY
    assert (t.base_amount > 0) == buy and (t.quote_amount < 0) == buy and t.base_amount and t.quote_amount
    rev = reverse(b)
    assert all(s == 0 for s in ledger_sums([rev]).values())
    assert all(s == 0 for s in ledger_sums([b, rev]).values())
