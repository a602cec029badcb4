"""stp.positions: average-cost positions, realised P&L, the incremental PositionBook."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stp.booking import Booking, BookingKind, Ledger, TradeAmounts, book_cash, book_fill, book_trade, reverse
from stp.breaks import BreakType
from stp.currency import minor_units
from stp.fills import ExecKind, Side
from stp.positions import Position, PositionBook, PositionMoves, apply_trade, replay
from tests.unit.test_booking import PRICES, QUANTITIES, SPOT, make_fill

D = Decimal


def trade(exec_id: str, side: Side, qty: str, px: str, symbol: str = "EUR/USD", account: str = "ACC1",
          settl_date: date = SPOT) -> Booking:
    return book_trade(make_fill(exec_id, symbol=symbol, side=side, qty=qty, px=px, account=account,
                                settl_date=settl_date))


def amounts_of(*bookings: Booking) -> list[TradeAmounts]:
    out = []
    for b in bookings:
        assert b.trade is not None
        out.append(b.trade)
    return out


BUY1 = trade("E1", Side.BUY, "1000000", "1.10")
BUY2 = trade("E2", Side.BUY, "1000000", "1.20")
SELL = trade("E3", Side.SELL, "1500000", "1.25")


# -- average cost and realised P&L ---------------------------------------------------------------

def test_average_cost_and_realised_pnl() -> None:
    p = replay(amounts_of(BUY1, BUY2))
    assert (p.account, p.pair) == ("ACC1", "EUR/USD")
    assert p.quantity == D("2000000") and p.average_price == D("1.15")
    assert p.cost == D("2300000.00") and p.realised_pnl == 0
    p = replay(amounts_of(BUY1, BUY2, SELL))
    assert p.quantity == D("500000") and p.average_price == D("1.15")
    assert p.realised_pnl == D("150000.00") and str(p.realised_pnl) == "150000.00"
    assert p.cost == D("575000.00")
    assert p.unrealised_pnl(D("1.16")) == D("5000.00")


def test_crossing_zero_realises_closed_part_and_opens_rest_at_new_price() -> None:
    p = replay(amounts_of(BUY1, trade("E2", Side.SELL, "3000000", "1.20")))
    assert p.realised_pnl == D("100000.00")
    assert p.quantity == D("-2000000") and p.average_price == D("1.20") and p.cost == D("-2400000.00")
    p = apply_trade(p, amounts_of(trade("E3", Side.BUY, "2500000", "1.15"))[0])
    # short 2M at 1.20 bought back at 1.15: +100,000; then long 0.5M at 1.15
    assert p.realised_pnl == D("200000.00")
    assert p.quantity == D("500000") and p.average_price == D("1.15")


def test_short_reduction_and_flat() -> None:
    p = replay(amounts_of(trade("E1", Side.SELL, "1000000", "1.20"), trade("E2", Side.BUY, "400000", "1.10")))
    assert p.realised_pnl == D("40000.00") and p.quantity == D("-600000") and p.average_price == D("1.20")
    p = apply_trade(p, amounts_of(trade("E3", Side.BUY, "600000", "1.25"))[0])
    assert p.quantity == 0 and p.average_price is None and p.cost == 0
    assert p.realised_pnl == D("10000.00")                      # 40,000 - 30,000
    assert p.unrealised_pnl(D("2")) == 0


def test_non_terminating_average() -> None:
    p = replay(amounts_of(trade("E1", Side.BUY, "1000000", "1.1"), trade("E2", Side.BUY, "2000000", "1.2")))
    assert p.average_price == D("1.1666666666666666666666666666666666667")   # 38 digits
    assert p.cost == D("3500000.00")


@pytest.mark.parametrize(("qty", "pnl"), [("500", "0"), ("1500", "2"), ("2500", "2")])
def test_jpy_pnl_is_rounded_half_even_to_yen(qty: str, pnl: str) -> None:
    # price difference 0.001: 500 x 0.001 = 0.5 -> 0; 1.5 -> 2; 2.5 -> 2
    p = replay(amounts_of(trade("E1", Side.BUY, qty, "150.000", symbol="USD/JPY"),
                          trade("E2", Side.SELL, qty, "150.001", symbol="USD/JPY")))
    assert p.realised_pnl == D(pnl) and p.realised_pnl.as_tuple().exponent == 0
    assert p.quote_currency == "JPY"


def test_sign_minus_one_applies_the_opposite_trade() -> None:
    p = apply_trade(None, amounts_of(BUY1)[0], sign=-1)
    assert p.quantity == D("-1000000") and p.average_price == D("1.10")
    with pytest.raises(ValueError):
        apply_trade(None, amounts_of(BUY1)[0], sign=2)


def test_apply_trade_and_replay_check_their_inputs() -> None:
    with pytest.raises(ValueError):
        replay([])
    with pytest.raises(ValueError):
        replay(amounts_of(BUY1, trade("E9", Side.BUY, "1", "150", symbol="USD/JPY")))
    with pytest.raises(ValueError):
        replay(amounts_of(BUY1, trade("E9", Side.BUY, "1", "1.1", account="ACC2")))


# -- PositionBook --------------------------------------------------------------------------------

EURUSD = ("ACC1", "EUR/USD")


def test_book_reversal_applies_the_opposite_trade_at_its_price() -> None:
    book = PositionBook()
    for b in (BUY1, BUY2, SELL):
        book.apply(b)
    assert book.positions[EURUSD] == replay(amounts_of(BUY1, BUY2, SELL))
    # long 0.5M at 1.15 (realised 50,000); reversing the 1.20 buy sells 1M at 1.20:
    # 0.5M closes (+25,000), 0.5M opens short at 1.20
    after = book.apply(reverse(BUY2))
    assert after == book.positions[EURUSD]
    assert after is not None
    assert after.quantity == D("-500000") and after.average_price == D("1.20")
    assert after.realised_pnl == D("175000.00")
    # against a restatement without the reversed trade (short 0.5M at 1.25,
    # realised 150,000): the same total P&L at any mark, split differently
    restated = replay(amounts_of(BUY1, SELL))
    for mark in (D("1.0"), D("1.2345"), D("1.5")):
        assert after.realised_pnl + after.unrealised_pnl(mark) == \
            restated.realised_pnl + restated.unrealised_pnl(mark)
    # the open position in each currency is the restatement's exactly: the
    # reversal takes the 1.20 buy's amounts out, whatever the average says
    assert (after.quantity, after.quote_flow) == (restated.quantity, restated.quote_flow)
    assert after.quote_flow == sum((t.quote_amount for t in amounts_of(BUY1, SELL)), D(0))


def test_book_correction_via_book_fill() -> None:
    book = PositionBook()
    book.apply(BUY1)
    correct = make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1", qty="3000000", px="1.1")
    result = book_fill(correct, BUY1)
    for b in result.bookings:
        book.apply(b)
    p = book.positions[EURUSD]
    assert p.quantity == D("3000000") and p.realised_pnl == 0


def test_book_by_value_date_keeps_zero_quantities() -> None:
    later = date(2026, 12, 18)
    book = PositionBook()
    book.apply(BUY1)
    book.apply(trade("E2", Side.SELL, "400000", "1.11", settl_date=later))
    book.apply(trade("E3", Side.BUY, "5", "150", symbol="USD/JPY"))
    book.apply(trade("E4", Side.BUY, "7", "1.1", account="ACC2"))
    assert book.dated[EURUSD] == {SPOT: D("1000000"), later: D("-400000")}
    assert set(book.positions) == {EURUSD, ("ACC1", "USD/JPY"), ("ACC2", "EUR/USD")}
    assert book.positions[("ACC2", "EUR/USD")].quantity == 7
    book.apply(reverse(BUY1))
    # the value date's quantity is back to zero and stays, 0 (its stored row is overwritten with 0)
    assert book.dated[EURUSD] == {SPOT: D(0), later: D("-400000")}
    assert not book.dated[EURUSD][SPOT].is_signed()


def test_book_keeps_a_flat_position_after_its_last_trade_is_reversed() -> None:
    book = PositionBook()
    book.apply(BUY1)
    flat = book.apply(reverse(BUY1))
    assert flat is not None and flat.quantity == 0 and flat.average_price is None and flat.realised_pnl == 0
    assert book.positions == {EURUSD: flat}
    assert book.dated == {EURUSD: {SPOT: D(0)}}


def test_book_ignores_cash_and_trusts_its_caller() -> None:
    book = PositionBook()
    cash = book_cash("C1", "ACC1", "USD", D(100), None)
    assert book.apply(cash) is None and book.apply(reverse(cash)) is None
    assert book.positions == {} and book.dated == {} and book.take_moved() == PositionMoves((), ())
    # no trades are kept: a reversal is the opposite trade, whether or not the
    # trade was applied (the booking stage only reverses an active booking)
    short = book.apply(reverse(BUY1))
    assert short == apply_trade(None, amounts_of(BUY1)[0], sign=-1)
    # and a booking applied twice counts twice (each booking is applied once)
    book.apply(BUY1)
    book.apply(BUY1)
    assert book.positions[EURUSD].quantity == D("1000000")
    # a trade whose account is not the position's: refused, nothing changes
    other = replace(BUY2, trade=replace(amounts_of(BUY2)[0], account="ACC2"))
    before = (dict(book.positions), {k: dict(v) for k, v in book.dated.items()})
    with pytest.raises(ValueError):
        book.apply(other)
    assert (book.positions, book.dated) == before


def test_book_records_what_each_batch_moved() -> None:
    later = date(2026, 12, 18)
    book = PositionBook()
    jpy = trade("E4", Side.BUY, "5", "150", symbol="USD/JPY")
    undated = replace(BUY2, trade=replace(amounts_of(BUY2)[0], value_date=None))
    for b in (jpy, BUY1, trade("E2", Side.SELL, "400000", "1.11", settl_date=later), reverse(jpy),
              undated, book_cash("C1", "ACC1", "USD", D(100), SPOT)):
        book.apply(b)
    # each key once, in the order it first moved; a quantity without a value date is not recorded
    assert book.take_moved() == PositionMoves(
        (("ACC1", "USD/JPY"), EURUSD),
        (("ACC1", "USD/JPY", SPOT), ("ACC1", "EUR/USD", SPOT), ("ACC1", "EUR/USD", later)))
    assert book.dated[EURUSD][None] == D("1000000")
    assert book.take_moved() == PositionMoves((), ())               # a new batch
    book.apply(SELL)
    book.abort_batch()                                               # forgets the record, not the move
    assert book.take_moved() == PositionMoves((), ())
    assert book.positions[EURUSD].quantity == D("100000")


def test_book_moves_the_state_it_is_given() -> None:
    positions = {EURUSD: replay(amounts_of(BUY1))}
    dated: dict[tuple[str, str], dict[date | None, D]] = {EURUSD: {SPOT: D("1000000")}}
    book = PositionBook(positions, dated)
    book.apply(BUY2)
    assert book.positions is positions and book.dated is dated
    assert positions[EURUSD] == replay(amounts_of(BUY1, BUY2)) and dated[EURUSD] == {SPOT: D("2000000")}


# -- properties: random trades, cancels and corrections ------------------------------------------

SYMBOLS = ("EUR/USD", "USD/JPY", "EUR/GBP", "USD/CAD")
DATES = (SPOT, date(2026, 11, 19), date(2026, 12, 18))


@st.composite
def fill_fields(draw: st.DrawFn) -> dict[str, object]:
    symbol = draw(st.sampled_from(SYMBOLS))
    base, quote = symbol.split("/")
    return {"symbol": symbol, "side": draw(st.sampled_from(Side)), "qty": draw(QUANTITIES),
            "px": draw(PRICES[symbol]), "currency": draw(st.sampled_from((base, quote))),
            "account": draw(st.sampled_from(("ACC1", "ACC2", "ACC2", None))) if draw(st.booleans())
            else "ACC1", "settl_date": draw(st.sampled_from(DATES))}


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_trades_cancels_and_corrections(data: st.DataObject) -> None:
    ledger, book = Ledger(), PositionBook()
    active: dict[tuple[str, str], Booking] = {}       # fill key -> active trade booking, booking order
    keys_seen: list[tuple[str, str]] = []
    bookings: list[Booking] = []
    for n in range(data.draw(st.integers(min_value=1, max_value=40))):
        session = data.draw(st.sampled_from(("LP1", "LP2")))
        kind = data.draw(st.sampled_from((ExecKind.TRADE, ExecKind.TRADE, ExecKind.CANCEL, ExecKind.CORRECT)))
        ref: tuple[str, str] | None = None
        if kind is not ExecKind.TRADE:
            ref = data.draw(st.sampled_from([*keys_seen, (session, "UNKNOWN")]))
            session = ref[0]
        fill = make_fill(f"E{n}", session=session, kind=kind, exec_ref_id=ref[1] if ref else None,
                         **data.draw(fill_fields()))  # type: ignore[arg-type]  # fill_fields draws each keyword's own type
        original = active.get(ref) if ref else None
        result = book_fill(fill, original)
        event(f"{kind.name} {'with' if original else 'without'} original")
        if kind is not ExecKind.TRADE and original is None:
            assert result.bookings == ()
            assert [b.type for b in result.breaks] == [BreakType.UNKNOWN_REFERENCE]
        elif fill.account is None and kind is not ExecKind.CANCEL:
            assert result.bookings == ()
            assert [b.type for b in result.breaks] == [BreakType.UNKNOWN_ACCOUNT]
        else:
            assert result.breaks == ()
            expected = {ExecKind.TRADE: [BookingKind.TRADE], ExecKind.CANCEL: [BookingKind.REVERSAL],
                        ExecKind.CORRECT: [BookingKind.REVERSAL, BookingKind.TRADE]}[kind]
            assert [b.kind for b in result.bookings] == expected
        for b in result.bookings:
            assert ledger.apply(b) is True
            book.apply(b)
            bookings.append(b)
            if b.kind is BookingKind.TRADE:
                assert b.fill_key is not None
                active[b.fill_key] = b
                keys_seen.append(b.fill_key)
            else:
                assert original is not None and b.reverses == original.booking_id
                assert original.fill_key is not None
                del active[original.fill_key]
            check_invariants(ledger, book, bookings, list(active.values()))


def check_invariants(ledger: Ledger, book: PositionBook, bookings: list[Booking],
                     active: list[Booking]) -> None:
    sums: dict[str, Decimal] = {}
    for b in bookings:
        for p in b.postings:
            sums[p.ledger] = sums.get(p.ledger, D(0)) + p.amount
    assert all(total == 0 for total in sums.values())
    assert all(ledger.total(ccy) == 0 for ccy in ledger.currencies())
    groups: dict[tuple[str, str], list[TradeAmounts]] = {}
    client: dict[tuple[str, str], Decimal] = {}
    for b in active:
        t = b.trade
        assert t is not None
        groups.setdefault((t.account, t.pair.symbol), []).append(t)
        for ccy, amount in ((t.pair.base, t.base_amount), (t.pair.quote, t.quote_amount)):
            client[(ccy, t.account)] = client.get((ccy, t.account), D(0)) + amount
    for (ccy, account), amount in client.items():
        assert ledger.balance(ccy, f"client:{account}") == amount
    # incremental = the bookings replayed in order on a fresh book (trades,
    # and reversals as the opposite trade at the original price)
    fresh = PositionBook()
    for b in bookings:
        fresh.apply(b)
    replayed = fresh.positions
    assert book.positions == replayed and book.dated == fresh.dated
    for (account, pair), position in replayed.items():
        trades = groups.get((account, pair), [])
        # the quantity is the sum of the active fills, and so is the quote flow
        assert position.quantity == sum((t.base_amount for t in trades), D(0))
        assert position.quote_flow == sum((t.quote_amount for t in trades), D(0))
        # total P&L at a mark equals a restatement from the active fills alone,
        # within one minor unit per realisation (each is rounded)
        minor = D(1).scaleb(-minor_units(pair.rpartition("/")[2]))
        realisations = sum(1 for b in bookings if b.trade is not None and b.account == account
                           and b.pair == pair)
        if trades:
            restated = replay(trades)
            mark = trades[-1].price
            total = position.realised_pnl + position.unrealised_pnl(mark)
            assert abs(total - restated.realised_pnl - restated.unrealised_pnl(mark)) <= minor * realisations
        else:
            # everything reversed: flat, and no P&L was made (only rounding)
            assert position.quantity == 0 and position.average_price is None
            assert abs(position.realised_pnl) <= minor * realisations
        dated: dict[date | None, Decimal] = {}
        for t in trades:
            dated[t.value_date] = dated.get(t.value_date, D(0)) + t.base_amount
        # every date traded stays, the dates of active trades with their sum, the others 0
        kept = book.dated[(account, pair)]
        assert {d: q for d, q in kept.items() if q} == {d: q for d, q in dated.items() if q}
        assert set(dated) <= set(kept)


@given(st.lists(st.tuples(st.sampled_from(Side), QUANTITIES, PRICES["USD/JPY"]), min_size=1, max_size=30))
@settings(max_examples=200)
def test_position_quantity_and_pnl_shape(trades: list[tuple[Side, Decimal, Decimal]]) -> None:
    amounts = amounts_of(*(book_trade(make_fill(f"E{i}", symbol="USD/JPY", side=s, qty=q, px=p))
                           for i, (s, q, p) in enumerate(trades)))
    position: Position | None = None
    for t in amounts:
        position = apply_trade(position, t)
        assert position.realised_pnl == position.realised_pnl.quantize(D(1))
        assert (position.average_price is None) == (position.quantity == 0)
        if position.average_price is not None:
            low = min(t.price for t in amounts)
            high = max(t.price for t in amounts)
            assert low <= position.average_price <= high
    assert position == replay(amounts)
    assert position is not None and position.quantity == sum((t.base_amount for t in amounts), D(0))
