"""FX trade dates, spot dates and value dates (FIX SettlType 63)."""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo

from stp.calendars import BusinessCalendar, calendar_for, joint_calendar

__all__ = [
    "T1_PAIRS",
    "USD_HOLIDAY_T1_CURRENCIES",
    "CurrencyPair",
    "default_spot_lag",
    "fx_trade_date",
    "is_good_value_date",
    "spot_date",
    "value_date",
]

#: Pairs that settle spot at T+1 (either orientation of the symbol).
T1_PAIRS: Final = MappingProxyType(
    {
        "USD/CAD": 1,
        "USD/TRY": 1,
        "USD/PHP": 1,
        "USD/RUB": 1,
        "USD/KZT": 1,
        "USD/PKR": 1,
    }
)

#: In pairs with these currencies a USD holiday is not a business day for T+1.
USD_HOLIDAY_T1_CURRENCIES: Final = frozenset({"ARS", "CLP", "MXN"})

_DEFAULT_SPOT_LAG: Final = 2
_ROLL_NEW_YORK: Final = time(17, 0)
_ROLL_AUCKLAND: Final = time(7, 0)
_TENOR: Final = re.compile(r"([DWMY])([1-9][0-9]{0,3})")


def default_spot_lag(base: str, quote: str) -> int:
    """Return the market spot lag of a pair: 1 for T1_PAIRS, else 2."""
    lag = T1_PAIRS.get(f"{base}/{quote}")
    if lag is None:
        lag = T1_PAIRS.get(f"{quote}/{base}", _DEFAULT_SPOT_LAG)
    return lag


def _check_code(ccy: str) -> None:
    if not (isinstance(ccy, str) and len(ccy) == 3 and ccy.isascii()):
        raise ValueError(f"not a currency code: {ccy!r}")
    if not (ccy.isalpha() and ccy.isupper()):
        raise ValueError(f"not a currency code: {ccy!r}")


@dataclass(frozen=True, slots=True)
class CurrencyPair:
    """A currency pair and its spot lag in business days.

    Direct construction keeps ``spot_lag=2`` unless given; ``parse`` applies
    the market default (T1_PAIRS).
    """

    base: str
    quote: str
    spot_lag: int = _DEFAULT_SPOT_LAG

    def __post_init__(self) -> None:
        _check_code(self.base)
        _check_code(self.quote)
        if self.base == self.quote:
            raise ValueError(f"base and quote are the same: {self.base}")
        lag = self.spot_lag
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
            raise ValueError(f"spot_lag must be an int >= 0, not {lag!r}")

    @property
    def symbol(self) -> str:
        """Return the symbol as "BASE/QUOTE"."""
        return f"{self.base}/{self.quote}"

    @property
    def currencies(self) -> tuple[str, str]:
        """Return (base, quote)."""
        return (self.base, self.quote)

    @classmethod
    def parse(cls, symbol: str, spot_lag: int | None = None) -> CurrencyPair:
        """Parse "EUR/USD" or "EURUSD" (case-insensitive, surrounding blanks ok)."""
        text = symbol.strip().upper()
        if "/" in text:
            base, _, quote = text.partition("/")
        elif len(text) == 6:
            base, quote = text[:3], text[3:]
        else:
            raise ValueError(f"cannot parse currency pair {symbol!r}")
        if spot_lag is None:
            spot_lag = default_spot_lag(base, quote)
        return cls(base, quote, spot_lag)


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def fx_trade_date(ts: datetime, pair: CurrencyPair | None = None) -> date:
    """Return the FX trade date of a timezone-aware timestamp.

    The day rolls at 17:00 America/New_York; for pairs with NZD at 07:00
    Pacific/Auckland (the trade date is then the Auckland date from 07:00).
    A trade date falling on Saturday or Sunday (weekend trading, or after the
    Friday roll) moves to the following Monday. Holidays do not move it.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("fx_trade_date needs a timezone-aware datetime")
    if pair is not None and "NZD" in pair.currencies:
        local = ts.astimezone(_zone("Pacific/Auckland"))
        day = local.date()
        if local.time() < _ROLL_AUCKLAND:
            day -= timedelta(days=1)
    else:
        local = ts.astimezone(_zone("America/New_York"))
        day = local.date()
        if local.time() >= _ROLL_NEW_YORK:
            day += timedelta(days=1)
    if day.weekday() >= 5:
        day += timedelta(days=7 - day.weekday())
    return day


def _good_calendar(pair: CurrencyPair) -> BusinessCalendar:
    return joint_calendar(pair.base, pair.quote, "USD")


def is_good_value_date(d: date, pair: CurrencyPair) -> bool:
    """Return True if ``d`` is a business day for both currencies and for USD."""
    return _good_calendar(pair).is_business_day(d)


def _spot(trade_date: date, pair: CurrencyPair, lag: int) -> date:
    usd_counts = not USD_HOLIDAY_T1_CURRENCIES.isdisjoint(pair.currencies)
    candidates = [trade_date]
    for ccy in pair.currencies:
        if ccy == "USD":
            continue
        own = calendar_for(ccy)
        intermediate = joint_calendar(ccy, "USD") if usd_counts else own
        d = trade_date
        for step in range(lag):
            d = (own if step == lag - 1 else intermediate).next_business_day(d)
        candidates.append(d)
    return _good_calendar(pair).roll_forward(max(candidates))


@functools.lru_cache(maxsize=1 << 16)
def spot_date(trade_date: date, pair: CurrencyPair) -> date:
    """Return the spot date of a trade.

    The lag is counted in business days on each non-USD currency's own
    calendar (a USD holiday on an intermediate day does not delay spot, except
    in pairs with ARS, CLP or MXN); the later date is taken and rolled forward
    to a business day of both currencies and USD.
    """
    return _spot(trade_date, pair, pair.spot_lag)


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def _month_end(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def _modified_following(d: date, cal: BusinessCalendar) -> date:
    rolled = cal.roll_forward(d)
    if rolled.month != d.month:
        rolled = cal.roll_backward(d)
    return rolled


def _tenor_date(spot: date, unit: str, n: int, cal: BusinessCalendar) -> date:
    if unit == "D":
        return cal.add_business_days(spot, n)
    if unit == "W":
        return _modified_following(spot + timedelta(weeks=n), cal)
    months = n if unit == "M" else 12 * n
    target = _add_months(spot, months)
    if spot == cal.roll_backward(_month_end(spot)):
        return cal.roll_backward(_month_end(target))
    return _modified_following(target, cal)


def value_date(
    trade_date: date,
    pair: CurrencyPair,
    settl_type: str = "0",
    settl_date: date | None = None,
) -> date:
    """Return the value date for a FIX SettlType (tag 63).

    "0"/"" spot, "1" cash (T+0), "2" tom, "3" T+2, "C" spot-next, "B" broken
    date (``settl_date``, which must be a good value date on or after the
    trade date), "Dn" business days after spot, "Wn"/"Mn"/"Yn" calendar
    periods after spot (month-end rule, modified following). Every result is a
    good value date (both currencies and USD open). ``settl_date`` is used only
    for "B". Anything else raises ValueError.
    """
    if settl_type != "B":
        return _value_date(trade_date, pair, settl_type)
    return _value_date_uncached(trade_date, pair, settl_type, settl_date)


@functools.lru_cache(maxsize=1 << 16)
def _value_date(trade_date: date, pair: CurrencyPair, settl_type: str) -> date:
    """Calendars do not change while the process runs: one computation per
    (trade date, pair, SettlType) (the pipeline asks for every fill)."""
    return _value_date_uncached(trade_date, pair, settl_type, None)


def _value_date_uncached(trade_date: date, pair: CurrencyPair, settl_type: str,
                         settl_date: date | None) -> date:
    cal = _good_calendar(pair)
    if settl_type in ("", "0"):
        return spot_date(trade_date, pair)
    if settl_type == "1":
        return cal.roll_forward(trade_date)
    if settl_type == "2":
        return cal.next_business_day(trade_date)
    if settl_type == "3":
        return _spot(trade_date, pair, 2)
    if settl_type == "C":
        return cal.next_business_day(spot_date(trade_date, pair))
    if settl_type == "B":
        if settl_date is None:
            raise ValueError("SettlType B (broken date) needs a SettlDate")
        if settl_date < trade_date:
            msg = f"broken date {settl_date} is before trade date {trade_date}"
            raise ValueError(msg)
        if not cal.is_business_day(settl_date):
            msg = f"broken date {settl_date} is not a good value date for {pair.symbol}"
            raise ValueError(msg)
        return settl_date
    match = _TENOR.fullmatch(settl_type)
    if match is None:
        raise ValueError(f"unsupported SettlType {settl_type!r}")
    spot = spot_date(trade_date, pair)
    return _tenor_date(spot, match.group(1), int(match.group(2)), cal)
