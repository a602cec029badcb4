"""Confirmation: validation of each fill, then matching LP fills against the platform's.

Pure: no I/O, no clock (the caller passes ``now``), no event loop.

Validation (``Validator``)
    One fill at a time, against reference data and what was seen before:

    * the pair is in the reference data (UNKNOWN_PAIR; the price and value date
      checks are then skipped, the rest still runs);
    * side is buy or sell, LastQty and LastPx positive (INVALID_FILL);
    * trades only: LastPx within the pair's ``price_tolerance`` (a fraction) of
      the pair's reference price (PRICE_OUT_OF_TOLERANCE).  The first price of a
      pair becomes the reference if it is within the pair's absolute bounds
      (``PairSettings.limits`` min_px..max_px; outside them it breaks and sets
      nothing); every price that passes moves the reference, a price that
      fails does not (one bad price must not make the next good one fail).
      The intake refuses (DontKnowTrade) what is beyond the limits before it
      gets here (``stp.limits``): this is the second line.
      ``set_reference_price`` resets it after a real market gap;
    * SettlDate (VALUE_DATE_MISMATCH): for SettlType ""/"0"/"1"/"2"/"3"/"C" and
      the tenors (Dn, Wn, Mn, Yn) it must equal ``valuedates.value_date`` of the
      trade date (TradeDate, else the FX trade date of TransactTime, else of
      the receipt time).  A missing SettlDate is accepted: the engine uses the
      computed date (``value_date_of``).  For "6" and "B" (forward / broken date)
      the SettlDate is required and must be a good value date on or after spot.
      The pair's configured ``PairSettings.pair`` (its spot lag) is used;
    * CumQty / LeavesQty (INVALID_FILL), see ``Validator`` for the rule that
      tolerates fills of one order arriving in any order.

    Cancels and corrections skip the price check and keep all the others.

Matching (``Matcher``)
    An LP fill is confirmed when the platform session configured for it
    reports the same fill: same key (``MatchKey`` per platform session), same
    ExecKind (trades match trades, cancels cancels, corrections corrections),
    and account, pair, side, LastQty, LastPx, SettlDate equal (quantities and
    prices within absolute tolerances).  For cancels and corrections matched by
    ExecID, ExecRefID is compared too.  Anything left unmatched after the window
    becomes an UNMATCHED_LP / UNMATCHED_PLATFORM break and is forgotten.

In breaks of the matcher "ours" is the platform (the broker's own record) and
"theirs" the LP; in validation breaks "ours" is what the engine expected and
"theirs" what the fill says.  Break values are strings (Decimal and ISO dates as
text) so they serialise exactly.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

from stp.breaks import Break, BreakType
from stp.breaks import settles as _settles
from stp.fills import ExecKind, Fill, Side
from stp.frozen import fast_init
from stp.reference import PairSettings, ReferenceData
from stp.valuedates import CurrencyPair, fx_trade_date, is_good_value_date, spot_date, value_date

__all__ = [
    "COMPARED_FIELDS",
    "Difference",
    "MatchKey",
    "MatchResult",
    "MatchState",
    "Matcher",
    "Validator",
]

_SIDES: Final = frozenset(Side)
_ZERO: Final = Decimal(0)
# SettlDate given by date rather than computed from the SettlType.
_BY_DATE: Final = frozenset({"6", "B"})


# --------------------------------------------------------------------------- validation


@dataclass(slots=True)
class _OrderState:
    """What the validator remembers of one order (session, OrderID).

    ``intervals``: the trades seen, each as the half-open slice (CumQty - LastQty,
    CumQty] of the order's cumulative quantity, sorted by start; ``by_exec``
    the same keyed by ExecID; ``filled`` their total.  ``amended``: a cancel or
    correction was seen, CumQty is then re-based by the venue and only the
    per-fill checks run for the rest of the order.
    """

    intervals: list[tuple[Decimal, Decimal, str]] = field(default_factory=list)
    by_exec: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    filled: Decimal = _ZERO
    amended: bool = False


class Validator:
    """Validates fills one at a time (``validate``); empty list = valid.

    CumQty rule.  Each trade of an order covers the slice (CumQty - LastQty,
    CumQty] of the order's quantity, and the trades of one order cover disjoint
    slices, whatever order they arrive in.  So a trade is INVALID_FILL when

    * CumQty < LastQty (its slice would start below zero), or CumQty > OrderQty,
      or LastQty > OrderQty;
    * LeavesQty is negative, or LeavesQty is neither 0 nor OrderQty - CumQty when
      OrderQty and CumQty are given (0 is accepted: IOC remainders and venues
      that send 151=0 on a partial fill), or LeavesQty + LastQty > OrderQty;
    * its slice overlaps the slice of another trade of the same order already
      accepted (e.g. two fills claiming the same CumQty, or a CumQty that the
      quantities already seen make impossible).

    Reordering never trips this (true slices are disjoint), while a CumQty that
    can never be right does as soon as the contradicting fill is seen; when the
    fills arrive in order, an accepted set of slices with no gap is exactly
    "CumQty = sum of the order's LastQty so far".  A gap (a fill not yet seen) is
    not a break here: a missing fill shows up in matching.  Invalid trades are
    not remembered, so one bad CumQty does not make later good ones fail.  After
    a cancel or correction of the order the venue re-bases CumQty: only the
    per-fill checks run from then on.  Cancels and corrections get the per-fill
    checks except CumQty >= LastQty (a cancel's CumQty is after the bust).

    Memory is bounded: prices are kept for reference pairs only; order states
    are kept for at most ``max_orders`` orders (least recently used evicted) and
    an order is forgotten once its accepted trades cover its OrderQty.  Losing
    an order's state only loses detection, it never causes a false alarm.  The
    intake deduplicates by (session, ExecID) before this; a repeated ExecID is
    ignored by the slice check.
    """

    def __init__(self, reference: ReferenceData, *, max_orders: int = 100_000) -> None:
        if max_orders < 1:
            raise ValueError("max_orders must be at least 1")
        self._reference = reference
        self._max_orders = max_orders
        self._last_px: dict[str, Decimal] = {}
        self._orders: OrderedDict[tuple[str, str], _OrderState] = OrderedDict()
        # (trade date, symbol, SettlType) -> value date, for SettlTypes other than
        # "6"/"B" (bounded: cleared when full)
        self._value_dates: dict[tuple[date, str, str], date] = {}

    # -- state access ---------------------------------------------------------

    @property
    def order_count(self) -> int:
        """Orders currently remembered (at most ``max_orders``)."""
        return len(self._orders)

    def reference_price(self, symbol: str) -> Decimal | None:
        return self._last_px.get(symbol)

    def set_reference_price(self, symbol: str, price: Decimal | None) -> None:
        """Set (or with None clear) the reference price of a pair, e.g. after a market gap."""
        if price is None:
            self._last_px.pop(symbol, None)
        elif symbol in self._reference.pairs:
            self._last_px[symbol] = price

    def forget_order(self, session: str, order_id: str) -> None:
        self._orders.pop((session, order_id), None)

    def trade_date_of(self, fill: Fill) -> date:
        """TradeDate, else the FX trade date of TransactTime, else of the receipt time."""
        if fill.trade_date is not None:
            return fill.trade_date
        pair = self._pair_of(fill)
        return fx_trade_date(fill.transact_time or fill.received_at, pair)

    def value_date_of(self, fill: Fill) -> date | None:
        """The value date the engine settles the fill on, None if it cannot be told.

        SettlDate for "6"/"B", else the date computed from the SettlType.
        """
        if fill.settl_type in _BY_DATE:
            return fill.settl_date
        try:
            return value_date(self.trade_date_of(fill), self._pair_of(fill), fill.settl_type)
        except (KeyError, ValueError):
            return None

    def _pair_of(self, fill: Fill) -> CurrencyPair:
        return self._reference.pair_for(fill.pair)

    # -- validation -----------------------------------------------------------

    def validate(self, fill: Fill) -> list[Break]:
        """All breaks of one fill (empty: valid).  Updates the price and order state."""
        breaks: list[Break] = []
        symbol = fill.pair.symbol
        settings = self._reference.pairs.get(symbol)
        if settings is None:
            breaks.append(_break(BreakType.UNKNOWN_PAIR, fill, "pair",
                                 f"{fill.session} {fill.exec_id}: pair {symbol} is not "
                                 f"in the reference data", theirs={"pair": symbol}))
        basic_ok = self._check_basics(fill, breaks)
        if settings is not None:
            if basic_ok and fill.kind is ExecKind.TRADE:
                self._check_price(fill, symbol, settings, breaks)
            self._check_value_date(fill, symbol, settings, breaks)
        self._check_quantities(fill, breaks)
        return breaks

    def _check_basics(self, fill: Fill, breaks: list[Break]) -> bool:
        ok = True
        side = fill.side
        if side is not Side.BUY and side is not Side.SELL and side not in _SIDES:
            breaks.append(_break(BreakType.INVALID_FILL, fill, "side",
                                 f"{fill.session} {fill.exec_id}: side {fill.side!r} is neither buy "
                                 f"nor sell", theirs={"side": str(fill.side)}))
            ok = False
        if not fill.last_qty > 0:
            breaks.append(_break(BreakType.INVALID_FILL, fill, "last_qty",
                                 f"{fill.session} {fill.exec_id}: LastQty {fill.last_qty} is not "
                                 f"positive", theirs={"last_qty": str(fill.last_qty)}))
            ok = False
        if not fill.last_px > 0:
            breaks.append(_break(BreakType.INVALID_FILL, fill, "last_px",
                                 f"{fill.session} {fill.exec_id}: LastPx {fill.last_px} is not "
                                 f"positive", theirs={"last_px": str(fill.last_px)}))
            ok = False
        return ok

    def _check_price(self, fill: Fill, symbol: str, settings: PairSettings, breaks: list[Break]) -> None:
        reference = self._last_px.get(symbol)
        px = fill.last_px
        if reference is None:
            limits = settings.limits
            if not limits.min_px <= px <= limits.max_px:
                # no reference yet: an absurd first price must not become it
                breaks.append(_break(
                    BreakType.PRICE_OUT_OF_TOLERANCE, fill, "price",
                    f"{fill.session} {fill.exec_id}: {symbol} price {px} is outside the bounds "
                    f"{limits.min_px}..{limits.max_px} (no reference price yet)",
                    ours={"min_px": str(limits.min_px), "max_px": str(limits.max_px)},
                    theirs={"last_px": str(px)}))
                return
            self._last_px[symbol] = px
            return
        allowed = reference * settings.price_tolerance
        if abs(px - reference) <= allowed:
            self._last_px[symbol] = px
            return
        breaks.append(_break(
            BreakType.PRICE_OUT_OF_TOLERANCE, fill, "price",
            f"{fill.session} {fill.exec_id}: {symbol} price {px} is more than "
            f"{settings.price_tolerance} of the last price {reference} away",
            ours={"last_px": str(reference), "tolerance": str(settings.price_tolerance)},
            theirs={"last_px": str(px)}))

    def _check_value_date(self, fill: Fill, symbol: str, settings: PairSettings,
                          breaks: list[Break]) -> None:
        pair = settings.pair
        given = fill.settl_date
        try:
            trade_date = self.trade_date_of(fill)
        except ValueError as exc:
            self._mismatch(fill, pair, f"no trade date: {exc}", None, breaks)
            return
        settl_type = fill.settl_type
        try:
            if settl_type in _BY_DATE:
                spot = spot_date(trade_date, pair)
                if given is None:
                    self._mismatch(fill, pair, "SettlDate (64) missing", None, breaks)
                elif given < spot:
                    self._mismatch(fill, pair, f"SettlDate {given} is before spot {spot}", spot, breaks)
                elif not is_good_value_date(given, pair):
                    self._mismatch(fill, pair, f"SettlDate {given} is not a good value date", None, breaks)
                return
            # value_date() of this validator's pair for the symbol, remembered
            # here by plain keys (its own cache hashes the CurrencyPair)
            memo_key = (trade_date, symbol, settl_type)
            expected = self._value_dates.get(memo_key)
            if expected is None:
                expected = value_date(trade_date, pair, settl_type)
                if len(self._value_dates) >= 4096:
                    self._value_dates.clear()
                self._value_dates[memo_key] = expected
        except (KeyError, ValueError) as exc:       # unknown calendar, unsupported SettlType
            self._mismatch(fill, pair, f"cannot compute the value date: {exc}", None, breaks)
            return
        if given is not None and given != expected:
            self._mismatch(fill, pair, f"SettlDate {given} is not the value date {expected} "
                           f"(trade date {trade_date})", expected, breaks)

    @staticmethod
    def _mismatch(fill: Fill, pair: CurrencyPair, reason: str, expected: date | None,
                  breaks: list[Break]) -> None:
        breaks.append(_break(
            BreakType.VALUE_DATE_MISMATCH, fill, "value_date",
            f"{fill.session} {fill.exec_id}: {pair.symbol} SettlType {fill.settl_type!r}: {reason}",
            ours={"value_date": _text(expected)},
            theirs={"settl_date": _text(fill.settl_date), "settl_type": fill.settl_type}))

    def _check_quantities(self, fill: Fill, breaks: list[Break]) -> None:
        problems: list[str] = []
        cum, leaves, order_qty, last = fill.cum_qty, fill.leaves_qty, fill.order_qty, fill.last_qty
        trade = fill.kind is ExecKind.TRADE
        if cum is not None and cum < 0:
            problems.append(f"CumQty {cum} is negative")
        if leaves is not None and leaves < 0:
            problems.append(f"LeavesQty {leaves} is negative")
        if order_qty is not None:
            if last > order_qty:
                problems.append(f"LastQty {last} exceeds OrderQty {order_qty}")
            if cum is not None and cum > order_qty:
                problems.append(f"CumQty {cum} exceeds OrderQty {order_qty}")
            if (cum is not None and leaves is not None and leaves != 0
                    and leaves != order_qty - cum):
                problems.append(f"LeavesQty {leaves} is not OrderQty {order_qty} - CumQty {cum}")
            if trade and leaves is not None and leaves + last > order_qty:
                problems.append(f"LeavesQty {leaves} + LastQty {last} exceed OrderQty {order_qty}")
        if trade and cum is not None and cum < last:
            problems.append(f"CumQty {cum} is below LastQty {last}")

        key = (fill.session, fill.order_id)
        state = self._orders.get(key)
        if state is not None:
            self._orders.move_to_end(key)
        if not trade:
            if state is None:
                state = self._remember(key)
            state.amended = True
            state.intervals.clear()
            state.by_exec.clear()
        elif not problems and cum is not None and last > 0 and (state is None or not state.amended):
            overlap = _overlap(state, cum - last, cum, fill.exec_id) if state is not None else None
            if overlap is not None:
                other, (start, end) = overlap
                problems.append(f"CumQty {cum} with LastQty {last} overlaps fill {other} "
                                f"(CumQty {end}, LastQty {end - start}) of the same order")
            else:
                if state is None:
                    state = self._remember(key)
                _record(state, cum - last, cum, fill.exec_id)
                if order_qty is not None and state.filled >= order_qty:
                    del self._orders[key]           # complete: nothing left to contradict
        if problems:
            breaks.append(_break(
                BreakType.INVALID_FILL, fill, "quantities",
                f"{fill.session} {fill.exec_id} order {fill.order_id}: " + "; ".join(problems),
                theirs={"last_qty": str(last), "cum_qty": _text(cum), "leaves_qty": _text(leaves),
                        "order_qty": _text(order_qty)}))

    def _remember(self, key: tuple[str, str]) -> _OrderState:
        state = _OrderState()
        self._orders[key] = state
        while len(self._orders) > self._max_orders:
            self._orders.popitem(last=False)
        return state


def _overlap(state: _OrderState, start: Decimal, end: Decimal,
             exec_id: str) -> tuple[str, tuple[Decimal, Decimal]] | None:
    """Another accepted trade whose slice overlaps (start, end], if any."""
    if exec_id in state.by_exec:
        return None                                 # the same fill again: not a contradiction
    intervals = state.intervals
    i = bisect_left(intervals, start, key=lambda t: t[0])
    for j in (i - 1, i):
        if 0 <= j < len(intervals):
            s, e, other = intervals[j]
            if s < end and start < e:
                return other, (s, e)
    return None


def _record(state: _OrderState, start: Decimal, end: Decimal, exec_id: str) -> None:
    if exec_id in state.by_exec:
        return
    i = bisect_left(state.intervals, start, key=lambda t: t[0])
    state.intervals.insert(i, (start, end, exec_id))
    state.by_exec[exec_id] = (start, end)
    state.filled += end - start


# --------------------------------------------------------------------------- matching


class MatchKey(StrEnum):
    """The field a platform session's fills are matched to LP fills by."""

    EXEC_ID = "exec_id"        # unique per fill: a disagreement is reported at once
    CL_ORD_ID = "cl_ord_id"    # shared by the partial fills of an order
    ORDER_ID = "order_id"      # shared by the partial fills of an order


class MatchState(StrEnum):
    RECEIVED = "received"      # waiting for the other side
    CONFIRMED = "confirmed"
    MISMATCHED = "mismatched"


#: Fields compared between an LP fill and the platform's (plus ExecRefID for
#: cancels/corrections matched by ExecID).
COMPARED_FIELDS: Final = ("account", "pair", "side", "last_qty", "last_px", "settl_date")


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    lp: object
    platform: object


@fast_init
@dataclass(frozen=True, slots=True)
class MatchResult:
    state: MatchState
    fill: Fill                           # the fill just added
    counterpart: Fill | None = None      # the other side's fill, when paired
    differences: tuple[Difference, ...] = ()
    break_: Break | None = None          # MISMATCH when mismatched

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(d.field for d in self.differences)


_BucketKey = tuple[str, ExecKind, str]       # platform session, kind, key value


@dataclass(eq=False, slots=True)
class _Entry:
    seq: int
    fill: Fill
    is_lp: bool
    at: datetime
    buckets: tuple[_BucketKey, ...]
    alive: bool = True


class Matcher:
    """Matches LP fills with the platform's record of them.

    ``key_by_platform``: platform session -> "exec_id" | "cl_ord_id" | "order_id".
    ``lp_for_platform``: platform session -> the LP session whose fills it
    reports; None (or a platform session missing from it) means every LP
    session.  An LP session no platform reports for is confirmed at once.

    Pairing: a new fill is confirmed with the oldest waiting fill of the other
    side in the same bucket (platform session, ExecKind, key value) that agrees
    on every compared field.  If none agrees:

    * key "exec_id" (one fill per key): it is paired at once with the waiting
      fill that differs in the fewest fields -> "mismatched";
    * key "cl_ord_id"/"order_id" (partial fills share the key and may arrive in
      any order): it waits ("received"), as its own counterpart may still come.
      When it expires, it is paired with an expired waiting fill of the other
      side in its bucket (fewest differences) -> MISMATCH break; if the bucket
      only holds younger fills of the other side it waits for them, but never
      beyond twice the window; with nothing to pair with -> UNMATCHED break.

    Entries older than ``window`` (strictly) are resolved by ``expire``; memory
    is bounded by the fills received within about two windows.  A fill without
    a value for its key field cannot be matched and expires as unmatched.
    Account and SettlDate are compared only when both sides give them (the LP
    may not know the client account; the validator accepts a missing SettlDate);
    with ``client_accounts``, the LP's account only when it is one of them (an
    LP names the broker's own account at the LP as often as a client's).
    """

    def __init__(self, window: timedelta, price_tolerance: Decimal, qty_tolerance: Decimal,
                 key_by_platform: Mapping[str, str],
                 lp_for_platform: Mapping[str, str] | None = None, *,
                 client_accounts: Container[str] | None = None) -> None:
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        if price_tolerance < 0 or qty_tolerance < 0:
            raise ValueError("tolerances cannot be negative")
        self.window = window
        self.client_accounts = client_accounts
        self.price_tolerance = price_tolerance
        self.qty_tolerance = qty_tolerance
        self._modes: dict[str, MatchKey] = {p: MatchKey(k) for p, k in key_by_platform.items()}
        lp_map = dict(lp_for_platform or {})
        unknown = sorted(set(lp_map) - set(self._modes))
        if unknown:
            raise ValueError(f"lp_for_platform names platform sessions without a key: {unknown}")
        self._lp_for_platform = lp_map
        self._any_lp = tuple(p for p in self._modes if p not in lp_map)
        self._platforms: dict[str, tuple[str, ...]] = {}        # LP session -> platforms_for()
        self._lp_index: dict[_BucketKey, list[_Entry]] = {}
        self._platform_index: dict[_BucketKey, list[_Entry]] = {}
        self._heap: list[tuple[datetime, int, _Entry]] = []
        self._held: list[_Entry] = []
        self._seq = 0
        self._pending = 0

    # -- configuration --------------------------------------------------------

    def platforms_for(self, lp_session: str) -> tuple[str, ...]:
        """The platform sessions that report the fills of an LP session."""
        platforms = self._platforms.get(lp_session)
        if platforms is None:
            mapped = tuple(p for p, lp in self._lp_for_platform.items() if lp == lp_session)
            platforms = mapped + self._any_lp
            if len(self._platforms) < 1024:         # the configuration does not change
                self._platforms[lp_session] = platforms
        return platforms

    def requires_platform(self, lp_session: str) -> bool:
        return bool(self.platforms_for(lp_session))

    @property
    def pending_count(self) -> int:
        """Fills waiting for their counterpart."""
        return self._pending

    def __len__(self) -> int:
        return self._pending

    def waiting_lp_fills(self) -> list[tuple[Fill, datetime]]:
        """The LP fills waiting for their counterpart, with when they arrived,
        oldest first."""
        entries = [e for _, _, e in self._heap if e.alive and e.is_lp]
        entries += [e for e in self._held if e.alive and e.is_lp]
        entries.sort(key=lambda e: (e.at, e.seq))
        return [(e.fill, e.at) for e in entries]

    # -- arrivals ---------------------------------------------------------------

    def add_lp(self, fill: Fill, now: datetime) -> MatchResult:
        """Add a validated LP fill."""
        platforms = self.platforms_for(fill.session)
        if not platforms:
            return MatchResult(MatchState.CONFIRMED, fill)
        buckets: list[_BucketKey] = []
        for platform in platforms:
            value = _key_value(fill, self._modes[platform])
            if value is not None:
                buckets.append((platform, fill.kind, value))
        return self._arrive(fill, True, now, tuple(buckets))

    def add_platform(self, fill: Fill, now: datetime) -> MatchResult:
        """Add a validated platform fill (its ``session`` must be a configured platform)."""
        mode = self._modes.get(fill.session)
        if mode is None:
            raise ValueError(f"{fill.session!r} is not a configured platform session")
        value = _key_value(fill, mode)
        buckets = () if value is None else ((fill.session, fill.kind, value),)
        return self._arrive(fill, False, now, buckets)

    def _arrive(self, fill: Fill, is_lp: bool, now: datetime,
                buckets: tuple[_BucketKey, ...]) -> MatchResult:
        candidates = self._candidates(buckets, not is_lp)
        exact: _Entry | None = None
        immediate: tuple[int, _Entry, tuple[Difference, ...]] | None = None
        for bucket, other in candidates:
            diffs = self._compare(fill if is_lp else other.fill, other.fill if is_lp else fill, bucket)
            if not diffs:
                exact = other
                break
            if self._modes[bucket[0]] is MatchKey.EXEC_ID and (
                    immediate is None or len(diffs) < immediate[0]):
                immediate = (len(diffs), other, diffs)
        if exact is not None:
            self._consume(exact)
            return MatchResult(MatchState.CONFIRMED, fill, exact.fill)
        if immediate is not None:
            _, other, diffs = immediate
            self._consume(other)
            lp, platform = (fill, other.fill) if is_lp else (other.fill, fill)
            return MatchResult(MatchState.MISMATCHED, fill, other.fill, diffs,
                               _mismatch_break(lp, platform, diffs))
        self._seq += 1
        entry = _Entry(self._seq, fill, is_lp, now, buckets)
        index = self._lp_index if is_lp else self._platform_index
        for bucket in buckets:
            index.setdefault(bucket, []).append(entry)
        heapq.heappush(self._heap, (now, entry.seq, entry))
        self._pending += 1
        return MatchResult(MatchState.RECEIVED, fill)

    def _candidates(self, buckets: Iterable[_BucketKey], lp_side: bool) -> list[tuple[_BucketKey, _Entry]]:
        """Waiting fills of one side in the given buckets, oldest first, each once."""
        index = self._lp_index if lp_side else self._platform_index
        seen: set[int] = set()
        out: list[tuple[_BucketKey, _Entry]] = []
        for bucket in buckets:
            for entry in index.get(bucket, ()):
                if entry.alive and entry.seq not in seen:
                    seen.add(entry.seq)
                    out.append((bucket, entry))
        out.sort(key=lambda be: (be[1].at, be[1].seq))
        return out

    def _consume(self, entry: _Entry) -> None:
        if not entry.alive:
            return
        entry.alive = False
        self._pending -= 1
        index = self._lp_index if entry.is_lp else self._platform_index
        for bucket in entry.buckets:
            waiting = index.get(bucket)
            if waiting is None:
                continue
            waiting[:] = [e for e in waiting if e is not entry]
            if not waiting:
                del index[bucket]

    def _compare(self, lp: Fill, platform: Fill, bucket: _BucketKey) -> tuple[Difference, ...]:
        diffs: list[Difference] = []
        if lp.account is not None and platform.account is not None and lp.account != platform.account \
                and (self.client_accounts is None or lp.account in self.client_accounts):
            diffs.append(Difference("account", lp.account, platform.account))
        if lp.pair.symbol != platform.pair.symbol:
            diffs.append(Difference("pair", lp.pair.symbol, platform.pair.symbol))
        if lp.side != platform.side:
            diffs.append(Difference("side", lp.side, platform.side))
        if abs(lp.last_qty - platform.last_qty) > self.qty_tolerance:
            diffs.append(Difference("last_qty", lp.last_qty, platform.last_qty))
        if abs(lp.last_px - platform.last_px) > self.price_tolerance:
            diffs.append(Difference("last_px", lp.last_px, platform.last_px))
        if (lp.settl_date is not None and platform.settl_date is not None
                and lp.settl_date != platform.settl_date):
            diffs.append(Difference("settl_date", lp.settl_date, platform.settl_date))
        if (lp.kind is not ExecKind.TRADE and self._modes[bucket[0]] is MatchKey.EXEC_ID
                and lp.exec_ref_id != platform.exec_ref_id):
            diffs.append(Difference("exec_ref_id", lp.exec_ref_id, platform.exec_ref_id))
        return tuple(diffs)

    # -- expiry -------------------------------------------------------------------

    def expire(self, now: datetime) -> list[Break]:
        """Resolve fills waiting longer than the window: UNMATCHED_* or MISMATCH breaks."""
        due = list(self._held)
        self._held = []
        while self._heap and now - self._heap[0][0] > self.window:
            _, _, entry = heapq.heappop(self._heap)
            if entry.alive:
                due.append(entry)
        due.sort(key=lambda e: (e.at, e.seq))
        breaks: list[Break] = []
        for entry in due:
            if not entry.alive:
                continue
            candidates = self._candidates(entry.buckets, not entry.is_lp)
            if not candidates:
                self._consume(entry)
                breaks.append(_unmatched_break(entry.fill, entry.is_lp, self._key_text(entry)))
                continue
            pool = [bc for bc in candidates if now - bc[1].at > self.window]
            if not pool and now - entry.at > 2 * self.window:
                pool = candidates
            if not pool:
                self._held.append(entry)
                continue
            best: tuple[int, _Entry, tuple[Difference, ...]] | None = None
            for bucket, other in pool:
                lp, platform = (entry.fill, other.fill) if entry.is_lp else (other.fill, entry.fill)
                diffs = self._compare(lp, platform, bucket)
                if best is None or len(diffs) < best[0]:
                    best = (len(diffs), other, diffs)
            assert best is not None
            _, other, diffs = best
            self._consume(entry)
            self._consume(other)
            if diffs:
                lp, platform = (entry.fill, other.fill) if entry.is_lp else (other.fill, entry.fill)
                breaks.append(_mismatch_break(lp, platform, diffs))
        return breaks

    def _key_text(self, entry: _Entry) -> str:
        if entry.buckets:
            return ", ".join(f"{self._modes[b[0]].value}={b[2]}" for b in entry.buckets[:1])
        if entry.is_lp:
            modes = {self._modes[p].value for p in self.platforms_for(entry.fill.session)}
        else:
            modes = {self._modes[entry.fill.session].value}
        return "no " + "/".join(sorted(modes)) + " to match on"


def _key_value(fill: Fill, mode: MatchKey) -> str | None:
    if mode is MatchKey.EXEC_ID:
        return fill.exec_id or None
    if mode is MatchKey.CL_ORD_ID:
        return fill.cl_ord_id or None
    return fill.order_id or None


# --------------------------------------------------------------------------- breaks


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _fill_keys(fill: Fill) -> dict[str, str]:
    keys = {"session": fill.session, "exec_id": fill.exec_id, "order_id": fill.order_id}
    if fill.cl_ord_id:
        keys["cl_ord_id"] = fill.cl_ord_id
    if fill.account:
        keys["account"] = fill.account
    return keys


def _break(kind: BreakType, fill: Fill, rule: str, summary: str, *,
           ours: dict[str, object] | None = None, theirs: dict[str, object] | None = None) -> Break:
    keys = _fill_keys(fill)
    keys["rule"] = rule
    return Break(kind, keys, summary, dict(ours or {}), dict(theirs or {}), **_settles(fill))


def _fill_values(fill: Fill) -> dict[str, object]:
    return {"kind": fill.kind.name.lower(), "exec_id": fill.exec_id, "order_id": fill.order_id,
            "cl_ord_id": fill.cl_ord_id, "account": fill.account, "pair": fill.pair.symbol,
            "side": _text(fill.side), "last_qty": _text(fill.last_qty), "last_px": _text(fill.last_px),
            "settl_date": _text(fill.settl_date)}


def _mismatch_break(lp: Fill, platform: Fill, diffs: tuple[Difference, ...]) -> Break:
    keys = {"session": lp.session, "exec_id": lp.exec_id,
            "platform_session": platform.session, "platform_exec_id": platform.exec_id}
    text = "; ".join(f"{d.field} LP {_text(d.lp)} platform {_text(d.platform)}" for d in diffs)
    return Break(BreakType.MISMATCH, keys,
                 f"{lp.session} {lp.exec_id} vs {platform.session} {platform.exec_id} "
                 f"({lp.kind.name.lower()}): {text}",
                 ours={d.field: _text(d.platform) for d in diffs},
                 theirs={d.field: _text(d.lp) for d in diffs}, **_settles(lp))


def _unmatched_break(fill: Fill, is_lp: bool, key_text: str) -> Break:
    kind = BreakType.UNMATCHED_LP if is_lp else BreakType.UNMATCHED_PLATFORM
    missing = "platform record" if is_lp else "LP fill"
    summary = (f"{fill.session} {fill.exec_id} ({fill.kind.name.lower()}, {key_text}): "
               f"no {missing} within the matching window")
    values = _fill_values(fill)
    if is_lp:
        return Break(kind, _fill_keys(fill), summary, theirs=values, **_settles(fill))
    return Break(kind, _fill_keys(fill), summary, ours=values, **_settles(fill))
