"""The intake's tables' rows: a journal entry, a fill, a conflict and a quote
become their rows here, and a stored fill its ``Fill`` again (the fills
table both ways, in one place).  Column orders: ``repository.JOURNAL_COLUMNS``,
``FILL_COLUMNS``, ``CONFLICT_COLUMNS``, ``PRICE_COLUMNS``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.db.rows import stored_date, text
from stp.fills import ExecKind, Fill, Side
from stp.intake import Conflict, JournalEntry
from stp.marketdata import Quote
from stp.timestamps import datetime_to_us
from stp.valuedates import CurrencyPair


def _us(dt: datetime | None) -> int | None:
    """Exact integer microseconds since the epoch."""
    return None if dt is None else datetime_to_us(dt)


def journal_row(j: JournalEntry, committed_us: int) -> tuple[Any, ...]:
    """A journal row in ``repository.JOURNAL_COLUMNS`` order."""
    return (j.journal_id, j.session, j.seq, j.msg_type, j.received_us, committed_us, j.poss_dup, j.exec_id,
            j.outcome, j.reason, j.raw, j.raw_encoding, j.raw_size, j.raw_truncated)


def fill_row(f: Fill, fill_id: int, journal_id: int) -> tuple[Any, ...]:
    """A fills row in ``repository.FILL_COLUMNS`` order (read back by
    ``fill_from_row``); decimals as their exact text."""
    return (fill_id, journal_id, f.session, f.exec_id, f.kind.value, f.exec_ref_id, f.order_id,
            f.cl_ord_id, f.account, f.symbol, f.side.value, f.currency, str(f.last_qty),
            str(f.last_px), text(f.cum_qty), text(f.leaves_qty), text(f.avg_px),
            text(f.order_qty), f.trade_date, f.settl_type, f.settl_date, _us(f.transact_time),
            _us(f.received_at), text(f.spot_rate), text(f.forward_points), f.content_hash)


def conflict_row(c: Conflict) -> tuple[Any, ...]:
    return (c.conflict_id, c.journal_id, c.session, c.exec_id, c.original_hash, c.conflicting_hash,
            c.received_us)


def price_row(q: Quote, journal_id: int, received_us: int) -> tuple[Any, ...]:
    """A market_prices row in ``repository.PRICE_COLUMNS`` order."""
    return (q.symbol, q.session, text(q.bid), text(q.offer), str(q.price), journal_id, received_us)


# -- the fills row back as the typed event ---------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = {kind.value: kind for kind in ExecKind}
_SIDES = {side.value: side for side in Side}
_PAIRS: dict[str, CurrencyPair] = {}            # symbol -> parsed pair (bounded: a few dozen)


def _pair(symbol: str) -> CurrencyPair:
    pair = _PAIRS.get(symbol)
    if pair is None:
        pair = CurrencyPair.parse(symbol)
        if len(_PAIRS) < 4096:
            _PAIRS[symbol] = pair
    return pair


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


def fill_from_row(r: tuple[Any, ...]) -> Fill:
    """A stored fill back as the typed event (``fill_row``'s columns after the journal id).

    Per fill read back (the post-trade process reads every fill so): the
    enum members and parsed pairs are looked up, not rebuilt; microseconds
    since the epoch become timedelta(days, seconds, microseconds) given
    positionally (the same value; keywords cost half as much again)."""
    return Fill(
        session=r[0], exec_id=r[1], kind=_KINDS.get(r[2]) or ExecKind(r[2]), exec_ref_id=r[3],
        order_id=r[4], cl_ord_id=r[5], account=r[6], pair=_pair(r[7]),
        side=_SIDES.get(r[8]) or Side(r[8]), currency=r[9],
        last_qty=Decimal(r[10]), last_px=Decimal(r[11]), cum_qty=_dec(r[12]), leaves_qty=_dec(r[13]),
        avg_px=_dec(r[14]), order_qty=_dec(r[15]), trade_date=stored_date(r[16]), settl_type=r[17],
        settl_date=stored_date(r[18]),
        transact_time=None if r[19] is None else _EPOCH + timedelta(0, 0, int(r[19])),
        received_at=_EPOCH + timedelta(0, 0, int(r[20])), spot_rate=_dec(r[21]),
        forward_points=_dec(r[22]), content_hash=r[23])
