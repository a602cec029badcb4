"""Fills: one typed event for every execution an LP or platform reports.

``normalise`` turns the fields of an ExecutionReport (FIX.4.2 ExecTransType
form or FIX.4.4 ExecType form) or a TradeCaptureReport into a ``Fill``, or
into a ``Rejection`` carrying the DontKnowTrade reason (DKReason, tag 127)
and a text that names the problem, or into ``NotAFill`` for a valid report
that is not a trade (an order acknowledgement, a status).  Pure: no I/O.

Quantities and prices are ``Decimal`` built from the wire strings, never
from floats.  The content hash covers every business field and excludes
session fields (sequence numbers, PossDup, SendingTime), so a resend of the
same report hashes the same and any change of content does not.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

from stp.currency import is_known_currency
from stp.frozen import fast_init
from stp.valuedates import CurrencyPair


class ExecKind(StrEnum):
    TRADE = "F"
    CORRECT = "G"
    CANCEL = "H"


class Side(StrEnum):
    BUY = "1"
    SELL = "2"


# DKReason (127)
DK_UNKNOWN_SYMBOL = "A"
DK_WRONG_SIDE = "B"
DK_QUANTITY_EXCEEDS_ORDER = "C"
DK_NO_MATCHING_ORDER = "D"
DK_PRICE_EXCEEDS_LIMIT = "E"
DK_CALCULATION_DIFFERENCE = "F"
DK_OTHER = "Z"


@fast_init
@dataclass(frozen=True, slots=True)
class Fill:
    session: str                 # the LP or platform session that reported it
    exec_id: str
    kind: ExecKind
    exec_ref_id: str | None      # the fill a correction or cancel refers to
    order_id: str
    cl_ord_id: str | None
    account: str | None
    pair: CurrencyPair
    side: Side
    currency: str                # dealt currency: LastQty is in it
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal | None
    leaves_qty: Decimal | None
    avg_px: Decimal | None
    order_qty: Decimal | None
    trade_date: date | None
    settl_type: str
    settl_date: date | None
    transact_time: datetime | None
    received_at: datetime
    spot_rate: Decimal | None = None
    forward_points: Decimal | None = None
    content_hash: str = ""

    @property
    def symbol(self) -> str:
        return self.pair.symbol


@dataclass(frozen=True, slots=True)
class Rejection:
    """A report that cannot be turned into a fill: answer with a DontKnowTrade."""

    dk_reason: str
    text: str
    exec_id: str | None = None


@dataclass(frozen=True, slots=True)
class NotAFill:
    """A valid report that is not a trade (kept in the journal, not booked)."""

    text: str
    exec_id: str | None = None


class _Invalid(Exception):
    def __init__(self, dk_reason: str, text: str) -> None:
        super().__init__(text)
        self.dk_reason = dk_reason
        self.text = text


# Tags that identify or describe the business content of a report.
CONTENT_TAGS = (1, 6, 11, 14, 15, 17, 19, 20, 31, 32, 37, 38, 39, 54, 55, 60, 63, 64, 75, 150, 151,
                194, 195, 460, 487, 571, 572, 880)
_FIX42_TRANS = {"0": ExecKind.TRADE, "1": ExecKind.CANCEL, "2": ExecKind.CORRECT}
_FIX42_STATUS = "3"                               # ExecTransType Status: not a trade
_FIX44_KINDS = {"F": ExecKind.TRADE, "G": ExecKind.CORRECT, "H": ExecKind.CANCEL}
_FIX42_FILL_STATES = frozenset({"1", "2"})      # ExecType partial fill, fill


def content_hash(fields: Mapping[int, str]) -> str:
    """Hash of the business fields' values in CONTENT_TAGS order ("" if absent)."""
    get = fields.get
    text = "\x01".join([get(t, "") for t in CONTENT_TAGS])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def normalise(fields: Mapping[int, str], session: str, received_at: datetime,
              known_symbols: frozenset[str] | None = None) -> Fill | Rejection | NotAFill:
    """A Fill, a Rejection (DontKnowTrade) or NotAFill for one report."""
    msg_type = fields.get(35, "8")
    exec_id = fields.get(17)
    try:
        if msg_type == "AE":
            kind = _trade_capture_kind(fields)
        else:
            kind_or_none = _execution_kind(fields)
            if kind_or_none is None:
                return NotAFill(f"ExecType {fields.get(150)} is not a trade", exec_id)
            kind = kind_or_none
        return _build(fields, kind, session, received_at, known_symbols)
    except _Invalid as exc:
        return Rejection(exc.dk_reason, exc.text, exec_id)


def _execution_kind(fields: Mapping[int, str]) -> ExecKind | None:
    exec_type = fields.get(150)
    trans = fields.get(20)
    if trans is not None:                       # FIX.4.2 and earlier
        if trans == _FIX42_STATUS:
            return None
        kind = _FIX42_TRANS.get(trans)
        if kind is None:
            raise _Invalid(DK_OTHER, f"ExecTransType (20) {trans!r} is not supported")
        if kind is ExecKind.TRADE:
            if exec_type in _FIX42_FILL_STATES or exec_type == "F":
                return kind
            return None
        return kind
    if exec_type is None:
        raise _Invalid(DK_OTHER, "ExecType (150) missing")
    return _FIX44_KINDS.get(exec_type)


def _trade_capture_kind(fields: Mapping[int, str]) -> ExecKind:
    trans = fields.get(487, "0")
    kind = {"0": ExecKind.TRADE, "1": ExecKind.CANCEL, "2": ExecKind.CORRECT}.get(trans)
    if kind is None:
        raise _Invalid(DK_OTHER, f"TradeReportTransType (487) {trans!r} is not supported")
    return kind


def _required(fields: Mapping[int, str], tag: int, name: str) -> str:
    value = fields.get(tag)
    if value is None or value == "":
        raise _Invalid(DK_OTHER, f"{name} ({tag}) missing")
    return value


# FIX Qty/Price/Amt/Float syntax: optional minus, digits, optional point and digits.
_FIX_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


@functools.lru_cache(maxsize=16_384)
def _parse_decimal(text: str) -> Decimal | None:
    """The Decimal of a FIX number, None if the text is not one.  Cached
    (bounded): quantities and prices repeat, and a Decimal is immutable."""
    return Decimal(text) if _FIX_DECIMAL.fullmatch(text) is not None else None


def _decimal(fields: Mapping[int, str], tag: int, name: str, required: bool = True) -> Decimal | None:
    text = fields.get(tag)
    if text is None or text == "":
        if required:
            raise _Invalid(DK_OTHER, f"{name} ({tag}) missing")
        return None
    value = _parse_decimal(text)
    if value is None:
        raise _Invalid(DK_OTHER, f"{name} ({tag}) is not a number: {text!r}")
    return value


@functools.lru_cache(maxsize=4096)
def _parse_date(text: str) -> date | None:
    """A FIX LocalMktDate (YYYYMMDD), None if the text is not one.  Cached
    (bounded): a day's reports share a handful of trade and value dates."""
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        return None
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _date(fields: Mapping[int, str], tag: int, name: str) -> date | None:
    text = fields.get(tag)
    if not text:
        return None
    value = _parse_date(text)
    if value is None:
        raise _Invalid(DK_OTHER, f"{name} ({tag}) is not a date: {text!r}")
    return value


def _timestamp(fields: Mapping[int, str], tag: int) -> datetime | None:
    """UTCTimestamp YYYYMMDD-HH:MM:SS[.fff...] (by hand: strptime is slow)."""
    text = fields.get(tag)
    if not text:
        return None
    try:
        if len(text) < 17 or text[8] != "-" or text[11] != ":" or text[14] != ":":
            raise ValueError(text)
        micro = 0
        if len(text) > 17:
            frac = text[18:]
            if text[17] != "." or not (1 <= len(frac) <= 9 and frac.isascii() and frac.isdigit()):
                raise ValueError(text)
            micro = int(frac[:6].ljust(6, "0"))
        return datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]),
                        int(text[12:14]), int(text[15:17]), micro, tzinfo=UTC)
    except ValueError:
        raise _Invalid(DK_OTHER, f"TransactTime ({tag}) is not a UTC timestamp: {text!r}") from None


_pair_cache: dict[str, CurrencyPair] = {}


def _pair(symbol: str, known_symbols: frozenset[str] | None) -> CurrencyPair:
    pair = _pair_cache.get(symbol)
    if pair is None:
        try:
            pair = CurrencyPair.parse(symbol)
        except (ValueError, KeyError):
            raise _Invalid(DK_UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}") from None
        if not (is_known_currency(pair.base) and is_known_currency(pair.quote)):
            raise _Invalid(DK_UNKNOWN_SYMBOL, f"unknown currency in symbol {symbol!r}")
        _pair_cache[symbol] = pair
    if known_symbols is not None and pair.symbol not in known_symbols:
        raise _Invalid(DK_UNKNOWN_SYMBOL, f"symbol {symbol!r} is not traded here")
    return pair


# Longest identifiers the engine stores (the database columns' sizes).
MAX_ID_LENGTH = 64
_ID_TAGS = ((17, "ExecID"), (19, "ExecRefID"), (37, "OrderID"), (11, "ClOrdID"), (1, "Account"),
            (571, "TradeReportID"), (572, "TradeReportRefID"))


def _check_lengths(fields: Mapping[int, str]) -> None:
    for tag, name in _ID_TAGS:
        value = fields.get(tag)
        if value is not None and len(value) > MAX_ID_LENGTH:
            raise _Invalid(DK_OTHER, f"{name} ({tag}) is longer than {MAX_ID_LENGTH} characters")
    settl_type = fields.get(63)
    if settl_type is not None and len(settl_type) > 8:
        raise _Invalid(DK_OTHER, f"SettlType (63) {settl_type[:20]!r} is not a settlement type")


def _build(fields: Mapping[int, str], kind: ExecKind, session: str, received_at: datetime,
           known_symbols: frozenset[str] | None) -> Fill:
    tcr = fields.get(35) == "AE"
    _check_lengths(fields)
    exec_id = _required(fields, 17, "ExecID")
    pair = _pair(_required(fields, 55, "Symbol"), known_symbols)
    side_text = _required(fields, 54, "Side")
    if side_text not in ("1", "2"):
        raise _Invalid(DK_WRONG_SIDE, f"Side (54) {side_text!r} is neither buy (1) nor sell (2)")
    last_qty = _decimal(fields, 32, "LastQty")
    last_px = _decimal(fields, 31, "LastPx")
    assert last_qty is not None and last_px is not None
    if last_qty <= 0:
        raise _Invalid(DK_OTHER, f"LastQty (32) must be positive, got {last_qty}")
    if last_px <= 0:
        raise _Invalid(DK_OTHER, f"LastPx (31) must be positive, got {last_px}")
    order_qty = _decimal(fields, 38, "OrderQty", required=False)
    cum_qty = _decimal(fields, 14, "CumQty", required=False)
    leaves_qty = _decimal(fields, 151, "LeavesQty", required=False)
    if order_qty is not None:
        if order_qty <= 0:
            raise _Invalid(DK_OTHER, f"OrderQty (38) must be positive, got {order_qty}")
        if last_qty > order_qty:
            raise _Invalid(DK_QUANTITY_EXCEEDS_ORDER, f"LastQty {last_qty} exceeds OrderQty {order_qty}")
        if cum_qty is not None and cum_qty > order_qty:
            raise _Invalid(DK_QUANTITY_EXCEEDS_ORDER, f"CumQty {cum_qty} exceeds OrderQty {order_qty}")
    if (cum_qty is not None and cum_qty < 0) or (leaves_qty is not None and leaves_qty < 0):
        raise _Invalid(DK_OTHER, "CumQty and LeavesQty cannot be negative")
    currency = fields.get(15) or pair.base
    if currency not in pair.currencies:
        raise _Invalid(DK_OTHER, f"Currency (15) {currency} is not a currency of {pair.symbol}")
    exec_ref_id = fields.get(572 if tcr else 19) or None
    if kind is not ExecKind.TRADE and exec_ref_id is None:
        raise _Invalid(DK_OTHER, f"{'TradeReportRefID (572)' if tcr else 'ExecRefID (19)'} "
                                 f"missing on a {kind.name.lower()}")
    order_id = fields.get(37) or (fields.get(571) if tcr else None)
    if not order_id:
        raise _Invalid(DK_OTHER, "OrderID (37) missing")
    return Fill(
        session=session, exec_id=exec_id, kind=kind, exec_ref_id=exec_ref_id,
        order_id=order_id, cl_ord_id=fields.get(11) or None, account=fields.get(1) or None,
        pair=pair, side=Side(side_text), currency=currency, last_qty=last_qty, last_px=last_px,
        cum_qty=cum_qty, leaves_qty=leaves_qty, avg_px=_decimal(fields, 6, "AvgPx", required=False),
        order_qty=order_qty, trade_date=_date(fields, 75, "TradeDate"),
        settl_type=fields.get(63) or "0", settl_date=_date(fields, 64, "SettlDate"),
        transact_time=_timestamp(fields, 60), received_at=received_at,
        spot_rate=_decimal(fields, 194, "LastSpotRate", required=False),
        forward_points=_decimal(fields, 195, "LastForwardPoints", required=False),
        content_hash=content_hash(fields))
