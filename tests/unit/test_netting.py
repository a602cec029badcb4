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
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    changes = book.take_changes()
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
    assert book.nets == {EUR: Decimal("1500000"), USD: Decimal("-1650500.00")}
    # one change per net for the batch: before it, after it, its last booking
    assert book.take_changes() == [
        NetChange(EUR, Decimal(0), Decimal("1500000"), "b2"),
        NetChange(USD, Decimal(0), Decimal("-1650500.00"), "b2"),
    ]


def test_buy_and_sell_offset() -> None:
    book = NetBook()
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    book.apply(trade("b2", "LP1", "EUR/USD", False, "1000000", "1.1002"))
    # Bought EUR from the LP at 1.1000, sold back at 1.1002: EUR flat, we receive 200 USD.
    assert book.nets == {EUR: 0, USD: Decimal("200.00")}     # a zero net is kept
    assert book.take_changes()[0] == NetChange(EUR, Decimal(0), Decimal(0), "b2")


def test_cancel_removes_its_trade_and_zero_nets_are_kept() -> None:
    book = NetBook()
    b1 = trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000")
    b2 = trade("b2", "LP1", "EUR/USD", True, "250000", "1.1004")
    book.apply(b1)
    book.apply(b2)
    book.take_changes()
    book.apply(reversal(b1, "b1-rev"))
    changes = book.take_changes()
    assert [(c.key, c.before, c.after) for c in changes] == [
        (EUR, Decimal(1250000), Decimal(250000)),
        (USD, Decimal("-1375100.00"), Decimal("-275100.00")),
    ]
    book.apply(reversal(b2, "b2-rev"))
    assert book.nets == {EUR: 0, USD: 0}
    assert not book.nets[USD].is_signed()     # no negative zero


def test_a_batch_gives_one_change_per_net_in_the_order_they_first_moved() -> None:
    book = NetBook({EUR: Decimal(7)})
    book.apply(trade("b1", "LP1", "USD/JPY", True, "1000", "150.00", vd=VD2))
    book.apply(trade("b2", "LP1", "EUR/USD", True, "1000", "1.1000"))
    book.apply(trade("b3", "LP1", "USD/JPY", False, "1000", "150.00", vd=VD2))
    # a booking whose postings on a key cancel out: the key is created and counts as moved
    cancels = Booking("b4", "LP1", (Posting("GBP", "lp:LP1", Decimal(5), VD),
                                    Posting("GBP", "lp:LP1", Decimal(-5), VD)))
    book.apply(cancels)
    usd2, jpy2, gbp = NetKey("LP1", "USD", VD2), NetKey("LP1", "JPY", VD2), NetKey("LP1", "GBP", VD)
    assert book.take_changes() == [
        NetChange(usd2, Decimal(0), Decimal(0), "b3"),
        NetChange(jpy2, Decimal(0), Decimal("0.00"), "b3"),
        NetChange(EUR, Decimal(7), Decimal(1007), "b2"),
        NetChange(USD, Decimal(0), Decimal("-1100.00"), "b2"),
        NetChange(gbp, Decimal(0), Decimal(0), "b4"),
    ]
    assert book.take_changes() == []               # a new batch
    book.apply(trade("b5", "LP1", "EUR/USD", True, "1000", "1.1000"))
    book.abort_batch()                             # forgets the record, not the move
    assert book.take_changes() == [] and book.nets[EUR] == Decimal(2007)


def test_nets_per_counterparty_value_date_and_currency() -> None:
    book = NetBook()
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    book.apply(trade("b2", "LP2", "EUR/USD", False, "2000000", "1.1000"))
    book.apply(trade("b3", "LP1", "USD/JPY", True, "1000000", "150.00", vd=VD2))
    assert book.nets[NetKey("LP2", "EUR", VD)] == Decimal(-2000000)
    later = {NetKey("LP1", "USD", VD2), NetKey("LP1", "JPY", VD2)}
    assert set(book.for_date(VD2)) == later
    assert set(book.for_date(VD)) == {EUR, USD, NetKey("LP2", "EUR", VD), NetKey("LP2", "USD", VD)}


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
    book.apply(internal)
    assert book.take_changes() == []
    assert book.nets == {}


def test_the_book_moves_the_nets_it_is_given() -> None:
    nets = {EUR: Decimal(10)}
    book = NetBook(nets)
    book.apply(trade("b1", "LP1", "EUR/USD", True, "1000000", "1.1000"))
    assert book.nets is nets and nets == {EUR: Decimal(1000010), USD: Decimal("-1100000.00")}


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
    assert book.nets == {}
    assert book.take_changes() == []


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
    # any order: a reversal may even arrive before its trade
    events = data.draw(st.permutations(events), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(events))), label="batch ends") | {len(events)})

    book = NetBook()
    start = 0
    for end in cuts:                      # batch by batch
        before = dict(book.nets)
        for booking in events[start:end]:
            book.apply(booking)
        changes = book.take_changes()
        batch = events[start:end]
        touched = [k for b in batch for k in contributions(b)]
        assert [c.key for c in changes] == list(dict.fromkeys(touched))
        for change in changes:
            assert change.before == before.get(change.key, 0)
            assert change.after == book.nets[change.key]
            assert change.booking_id == [b.booking_id for b in batch if change.key in contributions(b)][-1]
        start = end

    expected: dict[NetKey, Decimal] = {}
    for booking in events:
        for posting in booking.postings:
            if posting.party.startswith("lp:"):
                key = NetKey(posting.party[3:], posting.ledger, posting.value_date or VD)
                expected[key] = expected.get(key, Decimal(0)) - posting.amount
    assert book.nets == expected
    for key, amount in book.nets.items():
        assert amount == -sum(
            (p.amount for b in events for p in b.postings
             if p.party == f"lp:{key.counterparty}" and p.ledger == key.currency
             and p.value_date == key.value_date),
            Decimal(0),
        )
        if cancelled == set(range(len(bookings))):
            assert amount == 0
