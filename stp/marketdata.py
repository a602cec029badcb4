"""Market data from an LP: MarketDataSnapshotFullRefresh (35=W) as a quote.  Pure.

An LP may stream prices besides its fills; margin marks positions to the
latest price per pair, whichever came last, a fill or a quote.  A snapshot
gives ``Symbol`` (55) and a repeating group ``NoMDEntries`` (268) of
``MDEntryType`` (269: 0 bid, 1 offer) and ``MDEntryPx`` (270); the quote's
price is the mid of the best bid and offer, or the one side given.  A
snapshot that cannot be used (unknown symbol, no price, a crossed book, a
price that is not a positive FIX decimal) is a ``QuoteRejection``: the
engine answers it with a BusinessMessageReject and keeps it in the journal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from stp.currency import is_known_currency
from stp.valuedates import CurrencyPair

BID, OFFER = "0", "1"
_FIX_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# BusinessRejectReason (380)
UNKNOWN_SECURITY = "2"
CONDITIONALLY_REQUIRED_FIELD_MISSING = "5"
OTHER = "0"


@dataclass(frozen=True, slots=True)
class Quote:
    session: str
    symbol: str                 # EUR/USD
    bid: Decimal | None
    offer: Decimal | None
    received_at: datetime

    @property
    def price(self) -> Decimal:
        """The mid of bid and offer, or the side given."""
        if self.bid is not None and self.offer is not None:
            return (self.bid + self.offer) / 2
        value = self.bid if self.bid is not None else self.offer
        assert value is not None
        return value


@dataclass(frozen=True, slots=True)
class QuoteRejection:
    reason: str                 # BusinessRejectReason (380)
    text: str


def parse_snapshot(fields: Sequence[tuple[int, str]], session: str, received_at: datetime,
                   known_symbols: frozenset[str] | None = None) -> Quote | QuoteRejection:
    symbol_text = next((v for t, v in fields if t == 55), None)
    if not symbol_text:
        return QuoteRejection(CONDITIONALLY_REQUIRED_FIELD_MISSING, "Symbol (55) missing")
    try:
        pair = CurrencyPair.parse(symbol_text)
    except (ValueError, KeyError):
        return QuoteRejection(UNKNOWN_SECURITY, f"unknown symbol {symbol_text!r}")
    if not (is_known_currency(pair.base) and is_known_currency(pair.quote)):
        return QuoteRejection(UNKNOWN_SECURITY, f"unknown symbol {symbol_text!r}")
    symbol = pair.symbol
    if known_symbols is not None and symbol not in known_symbols:
        return QuoteRejection(UNKNOWN_SECURITY, f"symbol {symbol_text!r} is not traded here")
    best: dict[str, Decimal] = {}
    entry_type: str | None = None
    for tag, value in fields:
        if tag == 269:
            entry_type = value
        elif tag == 270 and entry_type in (BID, OFFER):
            if _FIX_DECIMAL.fullmatch(value) is None or Decimal(value) <= 0:
                return QuoteRejection(OTHER, f"MDEntryPx (270) {value!r} is not a positive price")
            px = Decimal(value)
            side = entry_type
            current = best.get(side)
            if current is None or (px > current if side == BID else px < current):
                best[side] = px
            entry_type = None
    if not best:
        return QuoteRejection(CONDITIONALLY_REQUIRED_FIELD_MISSING, "no bid or offer (269=0/1 with 270)")
    bid, offer = best.get(BID), best.get(OFFER)
    if bid is not None and offer is not None and bid > offer:
        return QuoteRejection(OTHER, f"crossed quote: bid {bid} above offer {offer}")
    return Quote(session, symbol, bid, offer, received_at)
