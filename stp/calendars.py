"""Settlement business calendars per currency, keyed by FpML business centre.

Holidays and weekends come from the ``holidays`` package; nothing is
hand-written here except the choice of source per business centre. A day is a
business day when no source marks it as a weekend day or a holiday. Weekend
days moved to working days (``weekend_workdays``, e.g. CN, HU, RU) are
ignored: settlement does not happen on them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta
from functools import cache
from types import MappingProxyType
from typing import Final

import holidays
from holidays import HolidayBase

__all__ = [
    "CENTRE_CURRENCIES",
    "CURRENCY_CENTRES",
    "BusinessCalendar",
    "UnknownCalendar",
    "business_centres",
    "calendar_for",
    "centre_calendar",
    "joint_calendar",
    "supported_currencies",
]

HolidaySource = Callable[[int], HolidayBase]
"""Builds the ``holidays`` object of one business centre for one year."""

_DAY: Final = timedelta(days=1)


class UnknownCalendar(KeyError):
    """No settlement calendar is defined for a currency or business centre."""


def _country(
    country: str,
    subdiv: str | None = None,
    categories: tuple[str, ...] = ("public",),
) -> HolidaySource:
    def build(year: int) -> HolidayBase:
        return holidays.country_holidays(
            country, subdiv=subdiv, years=year, categories=categories
        )

    return build


def _market(market: str) -> HolidaySource:
    def build(year: int) -> HolidayBase:
        return holidays.financial_holidays(market, years=year)

    return build


# FpML business centre -> holiday sources (closed if any source is closed).
_CENTRE_SOURCES: Final[Mapping[str, tuple[HolidaySource, ...]]] = MappingProxyType(
    {
        # Federal Reserve: Saturday holidays not moved, Sunday ones moved to Monday.
        "USNY": (_market("XFED"),),
        # TARGET: 1 Jan, Good Friday, Easter Monday, 1 May, 25-26 Dec.
        "EUTA": (_market("XECB"),),
        "GBLO": (_country("GB", "ENG"),),
        # Public holidays plus bank holidays 31 Dec, 2-3 Jan.
        "JPTO": (_country("JP", categories=("public", "bank")),),
        "CHZU": (_country("CH", "ZH"),),
        # Ontario public + federal (Truth and Reconciliation, Remembrance Day);
        # the TSX calendar adds the Civic Holiday.
        "CATO": (
            _country("CA", "ON", ("public", "government")),
            _market("XTSE"),
        ),
        # NSW public holidays plus the August Bank Holiday.
        "AUSY": (_country("AU", "NSW", ("public", "bank")),),
        "NZAU": (_country("NZ", "AUK"),),
        "NZWE": (_country("NZ", "WGN"),),
        # De facto: Midsummer Eve, Christmas Eve, New Year's Eve.
        "SEST": (_country("SE", categories=("public", "de_facto")),),
        # Oslo Bors: public holidays plus Christmas Eve and New Year's Eve.
        "NOOS": (_market("XOSL"),),
        # Optional: 1 May, Constitution Day, Christmas Eve, New Year's Eve.
        "DKCO": (_country("DK", categories=("public", "optional")),),
        "SGSI": (_country("SG"),),
        # HKEX: general holidays, Saturday-Sunday weekend (HK() has Sunday only).
        "HKHK": (_market("XHKG"),),
        # Mexican public holidays plus the BMV's Holy Thursday, Good Friday, 12 Dec.
        "MXMC": (_country("MX"), _market("XMEX")),
        "ZAJO": (_country("ZA"),),
        "TRIS": (_country("TR"),),
        "PLWA": (_country("PL"),),
        "CZPR": (_country("CZ"),),
        "HUBU": (_country("HU"),),
        # Friday-Saturday weekend before 2022, Saturday-Sunday since (from AE()).
        "AEDU": (_country("AE"),),
        "SARI": (_country("SA"),),
        "ILTA": (_country("IL"),),
        "ARBA": (_country("AR", categories=("public", "bank")),),
        "CLSA": (_country("CL", categories=("public", "bank")),),
        "PHMA": (_country("PH"),),
        "RUMO": (_country("RU"),),
        "KZAL": (_country("KZ"),),
        "PKKA": (_country("PK"),),
        "KWKC": (_country("KW"),),
        "BHMA": (_country("BH"),),
        "QADO": (_country("QA", categories=("public", "bank")),),
    }
)

#: Currency -> FpML business centres whose holidays close it (first = primary).
CURRENCY_CENTRES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "USD": ("USNY",),
        "EUR": ("EUTA",),
        "GBP": ("GBLO",),
        "JPY": ("JPTO",),
        "CHF": ("CHZU",),
        "CAD": ("CATO",),
        "AUD": ("AUSY",),
        "NZD": ("NZAU", "NZWE"),
        "SEK": ("SEST",),
        "NOK": ("NOOS",),
        "DKK": ("DKCO",),
        "SGD": ("SGSI",),
        "HKD": ("HKHK",),
        "CNH": ("HKHK",),
        "MXN": ("MXMC",),
        "ZAR": ("ZAJO",),
        "TRY": ("TRIS",),
        "PLN": ("PLWA",),
        "CZK": ("CZPR",),
        "HUF": ("HUBU",),
        "AED": ("AEDU",),
        "SAR": ("SARI",),
        "ILS": ("ILTA",),
        "ARS": ("ARBA",),
        "CLP": ("CLSA",),
        "PHP": ("PHMA",),
        "RUB": ("RUMO",),
        "KZT": ("KZAL",),
        "PKR": ("PKKA",),
        "KWD": ("KWKC",),
        "BHD": ("BHMA",),
        "QAR": ("QADO",),
    }
)

#: FpML business centre -> currencies settled there.
CENTRE_CURRENCIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        centre: tuple(c for c, cs in CURRENCY_CENTRES.items() if centre in cs)
        for centre in _CENTRE_SOURCES
    }
)


class BusinessCalendar:
    """Business days of one or more business centres; closed days cached per year."""

    __slots__ = ("_closed", "_lock", "_parts", "_sources", "centres", "code")

    code: str
    centres: tuple[str, ...]

    def __init__(
        self,
        code: str,
        centres: tuple[str, ...],
        sources: Iterable[HolidaySource] = (),
        parts: Iterable[BusinessCalendar] = (),
    ) -> None:
        self.code = code
        self.centres = centres
        self._sources = tuple(sources)
        self._parts = tuple(parts)
        self._closed: dict[int, frozenset[date]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.code!r}, centres={self.centres!r})"

    def closed_days(self, year: int) -> frozenset[date]:
        """Return the weekend days and holidays of ``year``."""
        closed = self._closed.get(year)
        if closed is None:
            with self._lock:
                closed = self._closed.get(year)
                if closed is None:
                    closed = self._compute(year)
                    self._closed[year] = closed
        return closed

    def _compute(self, year: int) -> frozenset[date]:
        days = [date(year, 1, 1) + timedelta(days=i) for i in range(366)]
        days = [d for d in days if d.year == year]
        closed: set[date] = set()
        for source in self._sources:
            hols = source(year)
            closed.update(d for d in hols if d.year == year)
            closed.update(d for d in days if hols.is_weekend(d))
        for part in self._parts:
            closed.update(part.closed_days(year))
        return frozenset(closed)

    def is_business_day(self, d: date) -> bool:
        """Return True if ``d`` is neither a weekend day nor a holiday."""
        return d not in self.closed_days(d.year)

    def roll_forward(self, d: date) -> date:
        """Return the first business day on or after ``d``."""
        while not self.is_business_day(d):
            d += _DAY
        return d

    def roll_backward(self, d: date) -> date:
        """Return the last business day on or before ``d``."""
        while not self.is_business_day(d):
            d -= _DAY
        return d

    def next_business_day(self, d: date) -> date:
        """Return the first business day strictly after ``d``."""
        return self.roll_forward(d + _DAY)

    def previous_business_day(self, d: date) -> date:
        """Return the last business day strictly before ``d``."""
        return self.roll_backward(d - _DAY)

    def add_business_days(self, d: date, n: int) -> date:
        """Move ``n`` business days from ``d`` (backwards if negative; 0 returns d)."""
        for _ in range(n):
            d = self.next_business_day(d)
        for _ in range(-n):
            d = self.previous_business_day(d)
        return d


def supported_currencies() -> frozenset[str]:
    """Return the currencies that have a settlement calendar."""
    return frozenset(CURRENCY_CENTRES)


def business_centres(ccy: str) -> tuple[str, ...]:
    """Return the FpML business centres of ``ccy`` (primary first)."""
    try:
        return CURRENCY_CENTRES[ccy]
    except KeyError:
        raise UnknownCalendar(f"no settlement calendar for currency {ccy!r}") from None


@cache
def centre_calendar(centre: str) -> BusinessCalendar:
    """Return the memoised calendar of one FpML business centre, e.g. "GBLO"."""
    try:
        sources = _CENTRE_SOURCES[centre]
    except KeyError:
        raise UnknownCalendar(f"unknown business centre {centre!r}") from None
    return BusinessCalendar(centre, (centre,), sources)


@cache
def calendar_for(ccy: str) -> BusinessCalendar:
    """Return the memoised settlement calendar of ``ccy``.

    ``code`` is the primary business centre (NZD: "NZAU"); ``centres`` lists all
    of them (NZD: Auckland and Wellington, closed if either is).
    """
    centres = business_centres(ccy)
    if len(centres) == 1:
        return centre_calendar(centres[0])
    parts = [centre_calendar(c) for c in centres]
    return BusinessCalendar(centres[0], centres, parts=parts)


def joint_calendar(*ccys: str) -> BusinessCalendar:
    """Return the memoised calendar closed whenever any of ``ccys`` is closed."""
    return _joint(tuple(sorted(set(ccys))))


@cache
def _joint(ccys: tuple[str, ...]) -> BusinessCalendar:
    if not ccys:
        raise ValueError("joint_calendar needs at least one currency")
    if len(ccys) == 1:
        return calendar_for(ccys[0])
    centres = tuple(dict.fromkeys(c for ccy in ccys for c in business_centres(ccy)))
    parts = [centre_calendar(c) for c in centres]
    return BusinessCalendar("+".join(centres), centres, parts=parts)
