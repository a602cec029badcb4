"""Deterministic FX fill scenarios for the LP and platform simulators.

The same (seed, count, pairs, start, fault rates) always gives the same
sequence of events, so an LP simulator and a platform simulator started as
separate processes describe the same fills.  Each event is one execution as
the LP reports it and as the trading platform records it; content faults
(wrong price, quantity, side or value date on one side, a fill missing on one
side, an ExecID reused with other content, a late fill) are decided here from
the content random stream, so both simulators agree on them.  Wire faults
(duplicates, PossDup resends, sequence gaps, garbled messages, disconnects)
are decided by each simulator from its own stream (``wire_faults``).

Prices follow a per-pair random walk around realistic mids; quantities are
round amounts in the base currency; orders fill in one to three partial
fills; a share of trades are forwards (1W, 1M, 3M) with LastSpotRate and
LastForwardPoints; cancels (ExecType H) and corrections (G) refer to an
earlier fill through ExecRefID.  SettlDate is the value date the domain
computes (``stp.valuedates``) for the trade date and SettlType.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from stp.valuedates import CurrencyPair, fx_trade_date, value_date

# Realistic mids (late 2026 levels are not known; these are plausible).
MIDS: dict[str, float] = {
    "EUR/USD": 1.0850, "GBP/USD": 1.2700, "USD/JPY": 151.50, "USD/CHF": 0.8800,
    "AUD/USD": 0.6550, "NZD/USD": 0.6000, "USD/CAD": 1.3600, "EUR/GBP": 0.8550,
    "EUR/JPY": 164.40, "GBP/JPY": 192.40, "EUR/CHF": 0.9550, "AUD/JPY": 99.20,
    "USD/TRY": 34.250, "EUR/SEK": 11.450, "USD/SGD": 1.3450, "USD/MXN": 18.20,
}
DEFAULT_PAIRS = ("EUR/USD", "GBP/USD", "USD/JPY", "USD/CHF", "AUD/USD", "NZD/USD",
                 "USD/CAD", "EUR/GBP", "EUR/JPY", "GBP/JPY", "EUR/CHF", "AUD/JPY")
ORDER_SIZES = (100_000, 250_000, 500_000, 1_000_000, 1_000_000, 2_000_000, 3_000_000,
               5_000_000, 10_000_000)
FORWARD_TENORS = ("W1", "M1", "M3")
TENOR_MONTHS = {"W1": 0.25, "M1": 1.0, "M3": 3.0}
MISMATCH_FAULTS = frozenset({"price", "quantity", "side", "value_date"})


def price_decimals(symbol: str) -> int:
    quote = symbol[-3:]
    return 3 if quote in ("JPY", "TRY", "MXN") else 5


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability per event of each injected fault (0 disables it)."""

    price: float = 0.0            # LastPx differs between LP and platform
    quantity: float = 0.0         # LastQty differs
    side: float = 0.0             # Side differs
    value_date: float = 0.0       # SettlDate differs
    missing_lp: float = 0.0       # the LP never reports the fill
    missing_platform: float = 0.0  # the platform never reports it
    execid_reuse: float = 0.0     # the LP sends another fill under an earlier ExecID
    late: float = 0.0             # the LP reports the fill at the end of the stream
    duplicate: float = 0.0        # resent again with PossResend=Y (new MsgSeqNum)
    possdup: float = 0.0          # resent again with PossDupFlag=Y (same MsgSeqNum)
    seq_gap: float = 0.0          # the message is lost on the wire (seq gap)
    garbled: float = 0.0          # the message goes out with a bad checksum
    disconnect: float = 0.0       # the connection is dropped after the message

    CONTENT = ("price", "quantity", "side", "value_date", "missing_lp", "missing_platform",
               "execid_reuse", "late")
    WIRE = ("duplicate", "possdup", "seq_gap", "garbled", "disconnect")

    @classmethod
    def parse(cls, spec: str | None) -> FaultRates:
        """``"price=0.01,garbled=0.001"``; ``"all=0.01"`` sets every fault."""
        if not spec:
            return cls()
        values: dict[str, float] = {}
        names = {f.name for f in fields(cls)}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, rate_text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep:
                raise ValueError(f"fault spec {item!r}: expected name=rate")
            rate = float(rate_text)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {name} must be within 0..1, got {rate}")
            if name == "all":
                values.update(dict.fromkeys(names, rate))
            elif name in names:
                values[name] = rate
            else:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
        return cls(**values)

    def any_content(self) -> bool:
        return any(getattr(self, n) for n in self.CONTENT)


@dataclass(slots=True)
class SimFill:
    """One execution report's content (treated as immutable; not frozen
    because frozen dataclasses are several times slower to build)."""

    exec_id: str
    exec_type: str                 # F trade, G correction, H cancel
    exec_ref_id: str | None
    order_id: str
    cl_ord_id: str
    account: str
    symbol: str
    side: str                      # 1 buy, 2 sell (the client's side)
    currency: str                  # dealt currency (LastQty is in it)
    order_qty: Decimal
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal
    ord_status: str
    transact_time: datetime
    trade_date: date
    settl_type: str
    settl_date: date
    spot_rate: Decimal | None = None
    forward_points: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    index: int
    lp: SimFill | None             # what the LP reports (None: missing on the LP side)
    platform: SimFill | None       # what the platform records (None: missing there)
    faults: tuple[str, ...] = ()   # content faults that apply to this event
    fault_side: str | None = None  # "lp" or "platform": whose record a mismatch fault altered

    def injected_by(self, role: str) -> tuple[str, ...]:
        """The content faults the simulator playing ``role`` injects here."""
        out = []
        for name in self.faults:
            if name in MISMATCH_FAULTS:
                if self.fault_side == role:
                    out.append(name)
            elif name == "missing_platform":
                if role == "platform":
                    out.append(name)
            elif role == "lp":       # missing_lp, execid_reuse, late
                out.append(name)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class _PairInfo:
    """Per-pair constants, computed once per scenario."""

    symbol: str
    decimals: int
    nzd: bool
    tick: float
    avg_quantum: Decimal

    @classmethod
    def of(cls, pair: CurrencyPair) -> _PairInfo:
        dp = price_decimals(pair.symbol)
        return cls(pair.symbol, dp, "NZD" in pair.currencies, 10.0 ** -dp, Decimal(10) ** -(dp + 2))


@dataclass(slots=True)
class _Order:
    order_id: str
    cl_ord_id: str
    account: str
    pair: CurrencyPair
    info: _PairInfo
    side: str
    qty: Decimal
    remaining_fills: list[Decimal]
    cum: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    settl_type: str = "0"


@dataclass(slots=True)
class Scenario:
    seed: int
    count: int
    pairs: tuple[str, ...] = DEFAULT_PAIRS
    start: datetime = field(default_factory=lambda: default_start())
    faults: FaultRates = field(default_factory=FaultRates)
    lp_name: str = "LP1"
    accounts: int = 20
    step_seconds: float = 0.05
    cancel_rate: float = 0.01
    correct_rate: float = 0.01
    forward_rate: float = 0.15

    def events(self) -> Iterator[ScenarioEvent]:
        return _generate(self)


def default_start(today: date | None = None) -> datetime:
    """08:00 UTC of today: the default start of a scenario's TransactTimes."""
    d = today or datetime.now(UTC).date()
    return datetime(d.year, d.month, d.day, 8, 0, tzinfo=UTC)


def _generate(sc: Scenario) -> Iterator[ScenarioEvent]:
    rng = random.Random(f"content-{sc.seed}")
    pairs = [CurrencyPair.parse(p) for p in sc.pairs]
    infos = {p.symbol: _PairInfo.of(p) for p in pairs}
    for p in pairs:
        if p.symbol not in MIDS:
            raise ValueError(f"no reference price for {p.symbol}; known: {', '.join(sorted(MIDS))}")
    mids = {p.symbol: MIDS[p.symbol] for p in pairs}
    value_dates: dict[tuple[date, str, str], date] = {}
    recent: deque[SimFill] = deque(maxlen=512)
    sent_on_time: deque[SimFill] = deque(maxlen=512)   # LP fills sent unaltered, in order
    open_orders: list[_Order] = []
    tag = f"{sc.seed:x}"
    lp = sc.lp_name
    order_no = 0
    exec_no = 0
    rates = sc.faults
    step = timedelta(seconds=sc.step_seconds)
    now = sc.start

    content_faults = rates.any_content()
    trade_dates: dict[tuple[int, bool], date] = {}

    def trade_date_of(ts: datetime, minute: int, pair: CurrencyPair, nzd: bool) -> date:
        # The roll is on a whole hour: the trade date is constant within a minute.
        key = (minute, nzd)
        td = trade_dates.get(key)
        if td is None:
            if len(trade_dates) > 4096:
                trade_dates.clear()
            td = trade_dates[key] = fx_trade_date(ts, pair)
        return td

    def settle(trade_date: date, pair: CurrencyPair, symbol: str, settl_type: str) -> date:
        key = (trade_date, symbol, settl_type)
        vd = value_dates.get(key)
        if vd is None:
            vd = value_dates[key] = value_date(trade_date, pair, settl_type)
        return vd

    def new_exec_id() -> str:
        nonlocal exec_no
        exec_no += 1
        return f"{lp}-E{tag}-{exec_no:08d}"

    random_ = rng.random
    gauss = rng.gauss
    epoch = now.timestamp()
    for index in range(sc.count):
        now = now + step
        epoch += sc.step_seconds
        roll = rng.random()
        fill: SimFill
        if roll < sc.cancel_rate + sc.correct_rate and recent:
            # a fill is cancelled or corrected once; a correction is a live
            # fill again (it can be corrected or cancelled in turn)
            original = recent[int(random_() * len(recent))]
            recent.remove(original)
            if roll < sc.cancel_rate:
                fill = _cancel(original, new_exec_id(), now)
            else:
                fill = _correct(original, new_exec_id(), now, rng)
                recent.append(fill)
        else:
            if not open_orders or random_() < 0.4:
                order_no += 1
                open_orders.append(_new_order(rng, pairs, infos, lp, tag, order_no, sc))
            order = open_orders[0] if random_() < 0.7 else \
                open_orders[int(random_() * len(open_orders))]
            pair = order.pair
            info = order.info
            symbol = info.symbol
            dp = info.decimals
            mid = mids[symbol] * (1.0 + gauss(0.0, 0.00003))
            mids[symbol] = mid
            half_spread = info.tick * (1 + int(random_() * 3))
            spot = Decimal(f"{mid + (half_spread if order.side == '1' else -half_spread):.{dp}f}")
            last_qty = order.remaining_fills.pop(0)
            trade_date = trade_date_of(now, int(epoch) // 60, pair, info.nzd)
            points: Decimal | None = None
            if order.settl_type != "0":
                points = Decimal(f"{mid * 0.0004 * TENOR_MONTHS[order.settl_type]:.{dp}f}")
                price = spot + points
            else:
                price = spot
            order.cum += last_qty
            order.notional += last_qty * price
            avg_px = (order.notional / order.cum).quantize(info.avg_quantum)
            leaves = order.qty - order.cum
            # positional: this runs once per fill (field order of SimFill)
            fill = SimFill(
                new_exec_id(), "F", None, order.order_id, order.cl_ord_id, order.account,
                symbol, order.side, pair.base, order.qty, last_qty, price, order.cum, leaves,
                avg_px, "2" if leaves == 0 else "1", now, trade_date, order.settl_type,
                settle(trade_date, pair, symbol, order.settl_type),
                spot if points is not None else None, points)
            if not order.remaining_fills:
                open_orders.remove(order)
            recent.append(fill)
        if content_faults:
            event = _apply_content_faults(index, fill, rates, rng, sent_on_time)
            if event.lp is fill and "late" not in event.faults:
                sent_on_time.append(fill)
            yield event
        else:
            yield ScenarioEvent(index, fill, fill)


def _new_order(rng: random.Random, pairs: list[CurrencyPair], infos: dict[str, _PairInfo], lp: str,
               tag: str, order_no: int, sc: Scenario) -> _Order:
    r = rng.random
    pair = pairs[int(r() * len(pairs))]
    qty = ORDER_SIZES[int(r() * len(ORDER_SIZES))]
    parts = (1, 1, 1, 2, 2, 3)[int(r() * 6)]
    fills: list[Decimal] = []
    remaining: int = qty
    for _ in range(parts - 1):
        share = int(remaining * (0.2 + 0.4 * r()) / 1000) * 1000
        if share <= 0 or share >= remaining:
            break
        fills.append(Decimal(share))
        remaining -= share
    fills.append(Decimal(remaining))
    settl_type = FORWARD_TENORS[int(r() * 3)] if r() < sc.forward_rate else "0"
    return _Order(order_id=f"{lp}-O{tag}-{order_no:07d}", cl_ord_id=f"C{tag}-{order_no:07d}",
                  account=f"ACC{1 + int(r() * sc.accounts):03d}", pair=pair, info=infos[pair.symbol],
                  side="1" if r() < 0.5 else "2", qty=Decimal(qty), remaining_fills=fills,
                  settl_type=settl_type)


def _cancel(original: SimFill, exec_id: str, now: datetime) -> SimFill:
    cum = original.cum_qty - original.last_qty
    return replace(original, exec_id=exec_id, exec_type="H", exec_ref_id=original.exec_id,
                   cum_qty=cum, leaves_qty=original.order_qty - cum,
                   ord_status="1" if cum else "4", transact_time=now)


def _correct(original: SimFill, exec_id: str, now: datetime, rng: random.Random) -> SimFill:
    dp = price_decimals(original.symbol)
    tick = Decimal(10) ** -dp * rng.choice((-3, -2, -1, 1, 2, 3))
    # a forward's price stays LastSpotRate + LastForwardPoints: correct the spot
    spot = original.spot_rate + tick if original.spot_rate is not None else None
    return replace(original, exec_id=exec_id, exec_type="G", exec_ref_id=original.exec_id,
                   last_px=original.last_px + tick, spot_rate=spot, transact_time=now)


def _apply_content_faults(index: int, fill: SimFill, rates: FaultRates, rng: random.Random,
                          sent_on_time: deque[SimFill]) -> ScenarioEvent:
    # One draw per fault type, always in the same order, so that switching one
    # fault on or off does not move the others.
    draws = {name: rng.random() for name in FaultRates.CONTENT}
    which_side = rng.random()
    lp: SimFill | None = fill
    platform: SimFill | None = fill
    faults: list[str] = []
    if draws["missing_lp"] < rates.missing_lp:
        return ScenarioEvent(index, None, fill, ("missing_lp",))
    if draws["missing_platform"] < rates.missing_platform:
        return ScenarioEvent(index, fill, None, ("missing_platform",))
    if draws["execid_reuse"] < rates.execid_reuse and sent_on_time:
        # The LP reports a new fill under the ExecID of an earlier one it has
        # already sent; the platform knows the new fill under its own id.
        earlier = sent_on_time[0]
        if earlier.exec_id != fill.exec_id:
            return ScenarioEvent(index, replace(fill, exec_id=earlier.exec_id), fill, ("execid_reuse",))
    altered = fill
    dp = price_decimals(fill.symbol)
    if draws["price"] < rates.price:
        altered = replace(altered, last_px=altered.last_px + Decimal(10) ** -dp * 50)
        faults.append("price")
    if draws["quantity"] < rates.quantity:
        altered = replace(altered, last_qty=altered.last_qty + 1000)
        faults.append("quantity")
    if draws["side"] < rates.side:
        altered = replace(altered, side="2" if altered.side == "1" else "1")
        faults.append("side")
    if draws["value_date"] < rates.value_date:
        wrong = altered.settl_date + timedelta(days=1)
        while wrong.weekday() >= 5:
            wrong += timedelta(days=1)
        altered = replace(altered, settl_date=wrong)
        faults.append("value_date")
    side: str | None = None
    if faults:
        if which_side < 0.5:
            lp, side = altered, "lp"
        else:
            platform, side = altered, "platform"
    if draws["late"] < rates.late:
        faults.append("late")
    return ScenarioEvent(index, lp, platform, tuple(faults), side)


def wire_faults(rates: FaultRates, rng: random.Random) -> tuple[str, ...]:
    """The wire faults for one message, from a simulator's own stream."""
    out: list[str] = []
    for name in FaultRates.WIRE:
        if rng.random() < getattr(rates, name):
            out.append(name)
    return tuple(out)
