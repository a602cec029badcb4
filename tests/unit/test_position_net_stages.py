"""handlers.book.PositionKeeper and handlers.net.NetStage: the rows a batch writes.

The stages are the stp books (``PositionBook``, ``NetBook``) plus the rows:
one per position, value date quantity and net the batch moved, with its
final amount, in the order it first moved, zero amounts written as zero.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from adapters.db.rows import ChangesWriter
from handlers.book import PositionKeeper
from handlers.net import NetStage
from stp.booking import book_cash, book_trade, reverse
from stp.changes import BatchChanges
from stp.fills import Side
from stp.netting import NetChange, NetKey
from tests.unit.test_booking import SPOT, make_fill

D = Decimal
LATER = date(2026, 12, 18)
BUY = book_trade(make_fill("E1", qty="1000000", px="1.10"))
SELL = book_trade(make_fill("E2", side=Side.SELL, qty="400000", px="1.20", settl_date=LATER))
JPY = book_trade(make_fill("E3", symbol="USD/JPY", qty="5", px="150", session="LP2", account="ACC2"))
CASH = book_cash("C1", "ACC1", "USD", D(100), SPOT)
WRITER = ChangesWriter(qmark=True, sqlite=False)


def rows(w: BatchChanges, table: str) -> list[tuple[object, ...]]:
    """The rows ``w`` writes to ``table``, in the order they are written."""
    return dict(WRITER.rows(w))[table]


def test_position_rows_of_a_batch() -> None:
    keeper = PositionKeeper({}, {})
    w = BatchChanges()
    for b in (JPY, BUY, SELL, CASH):
        keeper.apply(b)
    keeper.end_batch(w, 7)
    assert rows(w, "positions") == [
        ("ACC2", "USD/JPY", "5.00", "150", "0", "-750", 7),
        ("ACC1", "EUR/USD", "600000.00", "1.10", "40000.00", "-620000.00", 7),
    ]
    assert list(w.positions) == [("ACC2", "USD/JPY"), ("ACC1", "EUR/USD")]
    assert rows(w, "position_value_dates") == [
        ("ACC2", "USD/JPY", SPOT, "5.00"),
        ("ACC1", "EUR/USD", SPOT, "1000000.00"),
        ("ACC1", "EUR/USD", LATER, "-400000.00"),
    ]
    # the next batch writes what it moved only; a quantity back to zero is written as 0
    w = BatchChanges()
    keeper.apply(reverse(BUY))
    keeper.end_batch(w, 8)
    assert rows(w, "positions") == [("ACC1", "EUR/USD", "-400000.00", "1.10", "40000.00", "480000.00", 8)]
    assert rows(w, "position_value_dates") == [("ACC1", "EUR/USD", SPOT, "0.00")]
    keeper.apply(SELL)
    keeper.abort_batch()
    w = BatchChanges()
    keeper.end_batch(w, 9)
    assert rows(w, "positions") == [] and rows(w, "position_value_dates") == []


def test_net_rows_and_changes_of_a_batch() -> None:
    eur = NetKey("LP1", "EUR", SPOT)
    stage = NetStage({eur: D("-1000000")})
    w = BatchChanges()
    for b in (BUY, JPY, CASH, reverse(JPY)):
        stage.apply(b)
    changes = stage.end_batch(w, 7)
    usd, usd2, jpy = NetKey("LP1", "USD", SPOT), NetKey("LP2", "USD", SPOT), NetKey("LP2", "JPY", SPOT)
    assert changes == [NetChange(eur, D("-1000000"), D(0), "T:LP1:E1"),
                       NetChange(usd, D(0), D("-1100000.00"), "T:LP1:E1"),
                       NetChange(usd2, D(0), D(0), "R:T:LP2:E3"),
                       NetChange(jpy, D(0), D(0), "R:T:LP2:E3")]
    assert rows(w, "nets") == [
        ("LP1", "EUR", SPOT, "0.00", 7),
        ("LP1", "USD", SPOT, "-1100000.00", 7),
        ("LP2", "USD", SPOT, "0.00", 7),
        ("LP2", "JPY", SPOT, "0", 7),
    ]
    assert list(w.nets) == [eur, usd, usd2, jpy]
    assert stage.for_date(SPOT) == {eur: 0, usd: D("-1100000.00"), usd2: 0, jpy: 0}
    assert stage.end_batch(BatchChanges(), 8) == []
