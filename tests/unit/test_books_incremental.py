"""The position and net books, kept booking by booking, against the same state from scratch.

Random sequences of bookings as the booking stage makes them (``book_fill``
for trades, cancels and corrections, ``allocate`` moving a house booking to
a client, cash bookings and their reversals, negative balance credits) go
through ``PositionBook`` and ``NetBook`` in random batches.  Whatever the
batches, the books end where one fresh book of each given every booking at
once ends, and where a direct recomputation from the list of bookings does
(position quantity = signed sum of base amounts per (account, pair), the
same per value date, nets = sums of ``contributions``), in exact Decimals;
each batch's record names exactly what its bookings moved, so the rows a
caller writes from it reproduce the state.  Reversing every booking brings
every quantity and net back to zero, in any order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stp.allocation import Houses, allocate
from stp.booking import Booking, BookingKind, book_cash, book_fill, book_negative_balance_credit, reverse
from stp.fills import ExecKind, Side
from stp.netting import NetBook, NetKey, contributions, exact_context
from stp.positions import Position, PositionBook
from tests.unit.test_booking import PRICES, QUANTITIES, SPOT, make_fill

D = Decimal
K = TypeVar("K")
_Key = tuple[str, str]

SESSIONS = ("LP1", "LP2")
HOUSES = Houses.for_sessions(SESSIONS)
CLIENTS = ("ACC1", "ACC2")
ACCOUNTS = frozenset({*CLIENTS, *HOUSES.accounts})
SYMBOLS = ("EUR/USD", "USD/JPY", "EUR/GBP")
DATES = (SPOT, date(2026, 11, 23), date(2026, 12, 18))
STEPS = ("trade", "trade", "trade", "cancel", "correct", "allocate", "cash", "cash_reversal", "credit")
CASH_AMOUNTS = st.builds(lambda amount, out: -amount if out else amount,
                         st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2), st.booleans())

_EXACT = exact_context()          # Inexact trapped: the recomputation proves the sums exact


@st.composite
def fill_fields(draw: st.DrawFn, session: str) -> dict[str, object]:
    symbol = draw(st.sampled_from(SYMBOLS))
    return {"symbol": symbol, "side": draw(st.sampled_from(Side)), "qty": draw(QUANTITIES),
            "px": draw(PRICES[symbol]), "currency": draw(st.sampled_from(symbol.split("/"))),
            "account": draw(st.sampled_from((*CLIENTS, HOUSES.of(session)))), "session": session,
            "settl_date": draw(st.sampled_from(DATES))}


@st.composite
def booking_sequences(draw: st.DrawFn, max_steps: int = 30) -> list[Booking]:
    """Bookings in the order a booking stage would make them: a cancel or a
    correction reverses an active trade booking, an allocation an active
    house booking, a cash reversal an unreversed cash booking."""
    out: list[Booking] = []
    active: dict[tuple[str, str], Booking] = {}       # fill key -> its active trade booking
    cash: list[Booking] = []                          # cash bookings not reversed
    for n in range(draw(st.integers(min_value=1, max_value=max_steps))):
        step = draw(st.sampled_from(STEPS))
        on_house = [k for k, b in active.items() if HOUSES.is_house(b.account)]
        if (step in ("cancel", "correct") and not active) or (step == "allocate" and not on_house) \
                or (step == "cash_reversal" and not cash):
            step = "trade"
        if step == "trade":
            fields = draw(fill_fields(draw(st.sampled_from(SESSIONS))))
            fill = make_fill(f"E{n}", **fields)  # type: ignore[arg-type]  # fields drawn as a dict[str, object]
            bookings = book_fill(fill, None).bookings       # none if the amounts round to zero
            for b in bookings:
                assert b.fill_key is not None
                active[b.fill_key] = b
        elif step in ("cancel", "correct"):
            key = draw(st.sampled_from(sorted(active)))
            kind = ExecKind.CANCEL if step == "cancel" else ExecKind.CORRECT
            fields = draw(fill_fields(key[0]))
            fill = make_fill(f"E{n}", kind=kind, exec_ref_id=key[1], **fields)  # type: ignore[arg-type]  # drawn dict
            bookings = book_fill(fill, active[key]).bookings
            if bookings:                                    # a correction that cannot book: a break
                del active[key]
            for b in bookings[1:]:
                assert b.fill_key is not None
                active[b.fill_key] = b
        elif step == "allocate":
            key = draw(st.sampled_from(sorted(on_house)))
            bookings = allocate(active[key], draw(st.sampled_from(CLIENTS)), ACCOUNTS, HOUSES, key)
            active[key] = bookings[1]
        elif step == "cash":
            b = book_cash(f"C{n}", draw(st.sampled_from(CLIENTS)), draw(st.sampled_from(("USD", "EUR"))),
                          draw(CASH_AMOUNTS), draw(st.sampled_from((*DATES, None))))
            cash.append(b)
            bookings = (b,)
        elif step == "cash_reversal":
            b = cash.pop(draw(st.integers(min_value=0, max_value=len(cash) - 1)))
            bookings = (reverse(b),)
        else:
            bookings = (book_negative_balance_credit(f"N{n}", draw(st.sampled_from(CLIENTS)), "USD",
                                                     draw(CASH_AMOUNTS).copy_abs()),)
        out += bookings
    return out


def batches(bookings: list[Booking], data: st.DataObject) -> list[list[Booking]]:
    """The bookings cut into consecutive batches at random (one batch of all of them possible)."""
    ends = data.draw(st.sets(st.integers(min_value=1, max_value=max(len(bookings), 1))), label="batch ends")
    out, start = [], 0
    for end in sorted(ends | {len(bookings)}):
        out.append(bookings[start:end])
        start = end
    return out


# -- from scratch ---------------------------------------------------------------------------------

def _signed_trade(b: Booking) -> tuple[_Key, date | None, Decimal, Decimal] | None:
    """(account, pair), value date, signed base and quote amounts of a booking with a trade."""
    t = b.trade
    if t is None:
        return None
    assert b.account is not None and b.pair is not None
    if b.sign > 0:
        return (b.account, b.pair), t.value_date, t.base_amount, t.quote_amount
    return (b.account, b.pair), t.value_date, _EXACT.minus(t.base_amount), _EXACT.minus(t.quote_amount)


def quantities(bookings: list[Booking]) -> tuple[dict[_Key, Decimal], dict[_Key, Decimal],
                                                  dict[_Key, dict[date | None, Decimal]]]:
    """Per (account, pair): the quantity, the quote flow and the quantity per value
    date, as signed sums of the trades' booked amounts."""
    quantity: dict[_Key, Decimal] = {}
    flow: dict[_Key, Decimal] = {}
    dated: dict[_Key, dict[date | None, Decimal]] = {}
    add = _EXACT.add
    for b in bookings:
        signed = _signed_trade(b)
        if signed is None:
            continue
        key, vd, base, quote = signed
        quantity[key] = add(quantity.get(key, D(0)), base)
        flow[key] = add(flow.get(key, D(0)), quote)
        by_date = dated.setdefault(key, {})
        by_date[vd] = add(by_date.get(vd, D(0)), base)
    return quantity, flow, dated


def nets_of(bookings: list[Booking]) -> dict[NetKey, Decimal]:
    """Every key the bookings contribute to, with the sum of their contributions."""
    nets: dict[NetKey, Decimal] = {}
    for b in bookings:
        for key, amount in contributions(b).items():
            nets[key] = _EXACT.add(nets.get(key, D(0)), amount)
    return nets


def fresh_books(bookings: list[Booking]) -> tuple[PositionBook, NetBook]:
    """A fresh book of each, every booking applied in one batch."""
    positions, nets = PositionBook(), NetBook()
    for b in bookings:
        positions.apply(b)
        nets.apply(b)
    return positions, nets


def exactly(amounts: Mapping[K, Decimal]) -> dict[K, str]:
    """The amounts as text: equal Decimals with the same exponent (and sign of zero)."""
    return {k: str(v) for k, v in amounts.items()}


# -- properties -----------------------------------------------------------------------------------

@given(booking_sequences(), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_books_in_batches_equal_a_fresh_book_and_the_sums_from_scratch(
        bookings: list[Booking], data: st.DataObject) -> None:
    book, net_book = PositionBook(), NetBook()
    # what a caller persists from each batch's record: the rows
    rows: dict[_Key, Position] = {}
    dated_rows: dict[tuple[str, str, date], Decimal] = {}
    net_rows: dict[NetKey, Decimal] = {}
    for batch in batches(bookings, data):
        nets_before = dict(net_book.nets)
        for b in batch:
            position = book.apply(b)
            if b.trade is None:
                assert position is None
            else:
                assert b.account is not None and b.pair is not None
                assert position == book.positions[(b.account, b.pair)]
            net_book.apply(b)
        # the batch's record: each key its bookings moved, once, in the order it first moved
        moved = book.take_moved()
        traded = [(s[0], s[1]) for s in map(_signed_trade, batch) if s is not None]
        assert moved.positions == tuple(dict.fromkeys(key for key, _ in traded))
        assert moved.dated == tuple(dict.fromkeys((*key, vd) for key, vd in traded if vd is not None))
        changes = net_book.take_changes()
        assert [c.key for c in changes] == list(dict.fromkeys(k for b in batch for k in contributions(b)))
        for change in changes:
            assert change.before == nets_before.get(change.key, 0)
            assert change.after == net_book.nets[change.key]
            assert change.booking_id == [b.booking_id for b in batch if change.key in contributions(b)][-1]
        for key in moved.positions:
            rows[key] = book.positions[key]
        for account, pair, vd in moved.dated:
            dated_rows[(account, pair, vd)] = book.dated[(account, pair)][vd]
        for change in changes:
            net_rows[change.key] = change.after
    # incremental = all at once on a fresh book
    fresh, fresh_nets = fresh_books(bookings)
    assert book.positions == fresh.positions
    assert {k: exactly(v) for k, v in book.dated.items()} == {k: exactly(v) for k, v in fresh.dated.items()}
    assert exactly(net_book.nets) == exactly(fresh_nets.nets)
    # = the sums from scratch, exactly (zero quantities and nets included: nothing is dropped)
    quantity, flow, dated = quantities(bookings)
    assert exactly({k: p.quantity for k, p in book.positions.items()}) == exactly(quantity)
    assert exactly({k: p.quote_flow for k, p in book.positions.items()}) == exactly(flow)
    assert {k: exactly(v) for k, v in book.dated.items()} == {k: exactly(v) for k, v in dated.items()}
    assert exactly(net_book.nets) == exactly(nets_of(bookings))
    # the rows written batch by batch are the state
    assert rows == book.positions
    assert dated_rows == {(*k, vd): q for k, by_date in book.dated.items() for vd, q in by_date.items()
                          if vd is not None}
    assert net_rows == net_book.nets


@given(booking_sequences(), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reversing_every_booking_brings_every_quantity_and_net_back_to_zero(
        bookings: list[Booking], data: st.DataObject) -> None:
    reversed_ids = {b.reverses for b in bookings if b.kind is BookingKind.REVERSAL}
    undo = [reverse(b) for b in bookings
            if b.kind is not BookingKind.REVERSAL and b.booking_id not in reversed_ids]
    undo = data.draw(st.permutations(undo), label="reversals")
    book, net_book = fresh_books(bookings + undo)
    quantity, _, dated = quantities(bookings)
    assert set(book.positions) == set(quantity)              # flat positions stay
    assert {k: set(v) for k, v in book.dated.items()} == {k: set(v) for k, v in dated.items()}
    for position in book.positions.values():
        assert position.quantity == 0 and position.quote_flow == 0 and position.average_price is None
        assert not position.quantity.is_signed() and position.cost == 0
    assert all(q == 0 and not q.is_signed() for by_date in book.dated.values() for q in by_date.values())
    assert set(net_book.nets) == set(nets_of(bookings))       # zero nets stay
    assert all(n == 0 and not n.is_signed() for n in net_book.nets.values())


@given(booking_sequences(), st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quantities_and_nets_do_not_depend_on_the_order_of_the_bookings(
        bookings: list[Booking], data: st.DataObject) -> None:
    """(The average price and the realised P&L do: they follow the path.)
    A reversal may even come before its trade: the books hold no trades to check it against."""
    shuffled = data.draw(st.permutations(bookings), label="order")
    book, net_book = fresh_books(shuffled)
    quantity, flow, dated = quantities(bookings)
    assert {k: p.quantity for k, p in book.positions.items()} == quantity
    assert {k: p.quote_flow for k, p in book.positions.items()} == flow
    assert book.dated == dated
    assert net_book.nets == nets_of(bookings)
