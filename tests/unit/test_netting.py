"""stp.netting: nets per (counterparty, currency, value date), incremental."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.netting import NetBook, NetChange, NetKey, NettingError, contributions

VD = date(2026, 11, 20)          # a Friday
VD2 = date(2026, 11, 23)


# Structurally what stp.booking provides (the tests must not import it).
@dataclass(frozen=True, slots=True)
class Posting:
    ledger: str
    party: str
    amount: Decimal
    value_date: date | None


@dataclass(frozen=True, slots=True)
class Booking:
    booking_id: str
    counterparty: str | None
    postings: tuple[Posting, ...]


def trade(
    booking_id: str,
    lp: str,
    symbol: str,
    client_buys: bool,
    qty: str,
    px: str,
    vd: date = VD,
    account: str = "A1",
) -> Booking:
    """Balanced postings of a fill: the client and the LP, opposite sides."""
    base, quote = symbol.split("/")
    q = Decimal(qty)
    counter = (q * Decimal(px)).quantize(Decimal("0.01"))
    sign = 1 if client_buys else -1
    client = f"client:{account}"
    party = f"lp:{lp}"
    return Booking(
        booking_id,
        lp,
        (
            Posting(base, client, sign * q, vd),
            Posting(quote, client, -sign * counter, vd),
            Posting(base, party, -sign * q, vd),
            Posting(quote, party, sign * counter, vd),
        ),
    )


def reversal(booking: Booking, booking_id: str) -> Booking:
    return Booking(
        booking_id,
        booking.counterparty,
        tuple(Posting(p.ledger, p.party, -p.amount, p.value_date) for p in booking.postings),
    )


EUR = NetKey("LP1", "EUR", VD)
USD = NetKey("LP1", "USD", VD)


def test_client_buy_means_we_receive_base_and_pay_quote() -> None:
    book = NetBook()
    changes = book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    assert changes == [
        NetChange(EUR, Decimal(0), Decimal("1000000"), "b1"),
        NetChange(USD, Decimal(0), Decimal("-1100000.00"), "b1"),
    ]
    assert changes[1].delta == Decimal("-1100000.00")


def test_two_trades_same_lp_pair_and_value_date_net_to_one_amount_per_currency() -> None:
    book = NetBook()
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    book.apply(trade("b2", "LP1", "EUR/USD", True, "500000", "1.1010"))
    # LP side: -1,500,000 EUR, +1,100,000 + 550,500 USD -> we receive EUR, pay USD.
    assert book.nets() == {EUR: Decimal("1500000"), USD: Decimal("-1650500.00")}
    assert book.trades(USD) == {"b1": Decimal("-1100000.00"), "b2": Decimal("-550500.00")}


def test_buy_and_sell_offset() -> None:
    book = NetBook()
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    book.apply(trade("b2", "LP1", "EUR/USD", False, "1000000", "1.1002"))
    # Bought EUR from the LP at 1.1000, sold back at 1.1002: EUR flat, we receive 200 USD.
    assert book.net(EUR) == 0
    assert book.net(USD) == Decimal("200.00")
    assert EUR in book.nets()            # a zero net is kept


def test_cancel_removes_its_trade_and_zero_nets_are_kept() -> None:
    book = NetBook()
    b1 = trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000")
    b2 = trade("b2", "LP1", "EUR/USD", True, "250000", "1.1004")
    book.apply(b1)
    book.apply(b2)
    changes = book.apply(reversal(b1, "b1-rev"))
    assert [(c.key, c.after) for c in changes] == [(EUR, Decimal(250000)), (USD, Decimal("-275100.00"))]
    book.apply(reversal(b2, "b2-rev"))
    assert book.nets() == {EUR: 0, USD: 0}
    assert not book.net(USD).is_signed()     # no negative zero


def test_nets_per_counterparty_value_date_and_currency() -> None:
    book = NetBook()
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    book.apply(trade("b2", "LP2", "EUR/USD", False, "2000000", "1.1000"))
    book.apply(trade("b3", "LP1", "USD/JPY", True, "1000000", "150.00", vd=VD2))
    assert book.net(NetKey("LP2", "EUR", VD)) == Decimal(-2000000)
    later = {NetKey("LP1", "USD", VD2), NetKey("LP1", "JPY", VD2)}
    assert set(book.nets(counterparty="LP1")) == {EUR, USD, *later}
    assert set(book.nets(value_date=VD2)) == later
    assert book.nets(counterparty="LP1", value_date=VD, currency="USD") == {USD: Decimal("-1100000.00")}
    assert list(book.nets()) == sorted(book.nets())


def test_only_lp_postings_count() -> None:
    internal = Booking(
        "x1",
        None,
        (
            Posting("EUR", "client:A1", Decimal(5), VD),
            Posting("EUR", "bank:client-money", Decimal(-5), None),
        ),
    )
    book = NetBook()
    assert book.apply(internal) == []
    assert book.nets() == {}


def test_same_booking_twice_is_a_no_op_different_content_is_an_error() -> None:
    book = NetBook()
    b1 = trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000")
    book.apply(b1)
    assert book.apply(b1) == []
    assert book.net(EUR) == Decimal(1000000)
    with pytest.raises(NettingError, match="different content"):
        book.apply(trade("b1", "LP1", "EUR/USD", True, "2000000", "1.1000"))
    assert book.net(EUR) == Decimal(1000000)


@pytest.mark.parametrize(
    ("posting", "counterparty", "message"),
    [
        (Posting("EUR", "lp:LP1", Decimal(1), None), "LP1", "no value date"),
        (Posting("EUR", "lp:LP2", Decimal(1), VD), "LP1", "not the booking's counterparty"),
        (Posting("EUR", "lp:", Decimal(1), VD), None, "without a session"),
        (Posting("EUR", "lp:LP1", Decimal("NaN"), VD), "LP1", "not a finite Decimal"),
        (Posting("EUR", "lp:LP1", 1.5, VD), "LP1", "not a finite Decimal"),  # type: ignore[arg-type]  # a float on purpose: the check under test
    ],
)
def test_unnettable_bookings_raise_and_change_nothing(
    posting: Posting, counterparty: str | None, message: str
) -> None:
    book = NetBook()
    good = Posting("USD", "lp:LP1", Decimal(1), VD)
    with pytest.raises(NettingError, match=message):
        book.apply(Booking("bad", counterparty, (good, posting)))
    assert book.nets() == {}
    assert "bad" not in book


def test_counterparty_may_be_given_with_the_lp_prefix() -> None:
    booking = Booking("b1", "lp:LP1", (Posting("EUR", "lp:LP1", Decimal(-3), VD),))
    assert contributions(booking) == {EUR: Decimal(3)}


# -- property: incremental nets == nets from scratch ---------------------------

_LPS = ("LP1", "LP2")
_SYMBOLS = ("EUR/USD", "USD/JPY", "GBP/USD", "EUR/GBP")
_DATES = (VD, VD2)

_trades = st.builds(
    lambda lp, sym, buy, qty, px, vd: (lp, sym, buy, str(qty * 1000), str(px), vd),
    st.sampled_from(_LPS),
    st.sampled_from(_SYMBOLS),
    st.booleans(),
    st.integers(1, 10_000),
    st.decimals("0.5", "200", places=4),
    st.sampled_from(_DATES),
)


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(_trades, min_size=1, max_size=20),
    data=st.data(),
)
def test_incremental_nets_equal_nets_from_scratch(
    specs: list[tuple[str, str, bool, str, str, date]], data: st.DataObject
) -> None:
    bookings = [trade(f"b{n}", *spec) for n, spec in enumerate(specs)]
    cancelled = data.draw(st.sets(st.sampled_from(range(len(bookings)))), label="cancelled")
    events = bookings + [reversal(bookings[n], f"b{n}-rev") for n in sorted(cancelled)]
    # any order: a reversal may even arrive before its trade, a retry anywhere
    events = data.draw(st.permutations(events), label="order")
    retries = data.draw(st.lists(st.sampled_from(events), max_size=3), label="retries")

    book = NetBook()
    for booking in [*events, *retries]:
        before = book.nets()
        changes = book.apply(booking)
        for change in changes:
            assert change.before == before.get(change.key, 0)
            assert change.after == book.net(change.key)

    expected: dict[NetKey, Decimal] = {}
    for booking in events:
        for posting in booking.postings:
            if posting.party.startswith("lp:"):
                key = NetKey(posting.party[3:], posting.ledger, posting.value_date or VD)
                expected[key] = expected.get(key, Decimal(0)) - posting.amount
    nets = book.nets()
    assert {k: v for k, v in nets.items() if v} == {k: v for k, v in expected.items() if v}
    for key, amount in nets.items():
        assert amount == expected[key]
        assert amount == -sum(
            (p.amount for b in events for p in b.postings
             if p.party == f"lp:{key.counterparty}" and p.ledger == key.currency
             and p.value_date == key.value_date),
            Decimal(0),
        )
        assert amount == sum(book.trades(key).values(), Decimal(0))
        if cancelled == set(range(len(bookings))):
            assert amount == 0
