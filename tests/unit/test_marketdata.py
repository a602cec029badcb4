from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from stp.marketdata import Quote, QuoteRejection, parse_snapshot

AT = datetime(2030, 1, 7, 8, tzinfo=UTC)


def fields(text: str) -> list[tuple[int, str]]:
    return [(int(t), v) for t, _, v in (p.partition("=") for p in text.split("|") if p)]


def test_mid_of_the_best_bid_and_offer() -> None:
    q = parse_snapshot(fields("35=W|55=EUR/USD|268=4|269=0|270=1.08490|269=0|270=1.08495|"
                              "269=1|270=1.08510|269=1|270=1.08505"), "LP1", AT, frozenset({"EUR/USD"}))
    assert isinstance(q, Quote)
    assert (q.symbol, q.bid, q.offer, q.price) == ("EUR/USD", Decimal("1.08495"), Decimal("1.08505"),
                                                   Decimal("1.08500"))


def test_one_side_only_and_other_entry_types_ignored() -> None:
    q = parse_snapshot(fields("55=USDJPY|268=2|269=2|270=150.000|269=1|270=151.512"), "LP1", AT)
    assert isinstance(q, Quote) and q.symbol == "USD/JPY" and q.bid is None and q.price == Decimal("151.512")


@pytest.mark.parametrize(("text", "reason", "words"), [
    ("268=1|269=0|270=1.1", "5", "Symbol"),
    ("55=EUR/XXQ|268=1|269=0|270=1.1", "2", "unknown symbol"),
    ("55=EUR/SEK|268=1|269=0|270=11.4", "2", "not traded here"),
    ("55=EUR/USD|268=1|269=2|270=1.1", "5", "no bid or offer"),
    ("55=EUR/USD|268=1|269=0|270=abc", "0", "not a positive price"),
    ("55=EUR/USD|268=1|269=0|270=0", "0", "not a positive price"),
    ("55=EUR/USD|268=2|269=0|270=1.2|269=1|270=1.1", "0", "crossed"),
])
def test_unusable_snapshots_are_rejected_with_a_reason(text: str, reason: str, words: str) -> None:
    r = parse_snapshot(fields(text), "LP1", AT, frozenset({"EUR/USD"}))
    assert isinstance(r, QuoteRejection) and r.reason == reason and words in r.text
