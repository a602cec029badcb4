"""Calendars, trade dates, spot and value dates (stp.calendars, stp.valuedates).

Every known answer states its reasoning; weekdays are written next to dates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.calendars import (
    CURRENCY_CENTRES,
    BusinessCalendar,
    UnknownCalendar,
    calendar_for,
    centre_calendar,
    joint_calendar,
    supported_currencies,
)
from stp.valuedates import (
    T1_PAIRS,
    CurrencyPair,
    default_spot_lag,
    fx_trade_date,
    is_good_value_date,
    spot_date,
    value_date,
)


def pair(symbol: str) -> CurrencyPair:
    return CurrencyPair.parse(symbol)


# --- calendars -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ccy", "code"),
    [
        ("USD", "USNY"),
        ("EUR", "EUTA"),
        ("GBP", "GBLO"),
        ("JPY", "JPTO"),
        ("CHF", "CHZU"),
        ("CAD", "CATO"),
        ("AUD", "AUSY"),
        ("NZD", "NZAU"),
        ("SEK", "SEST"),
        ("NOK", "NOOS"),
        ("DKK", "DKCO"),
        ("SGD", "SGSI"),
        ("HKD", "HKHK"),
        ("MXN", "MXMC"),
        ("ZAR", "ZAJO"),
        ("TRY", "TRIS"),
        ("PLN", "PLWA"),
        ("CZK", "CZPR"),
        ("HUF", "HUBU"),
        ("AED", "AEDU"),
        ("SAR", "SARI"),
        ("ILS", "ILTA"),
    ],
)
def test_business_centre_codes(ccy: str, code: str) -> None:
    assert calendar_for(ccy).code == code


def test_nzd_closes_on_auckland_or_wellington_holidays() -> None:
    nzd = calendar_for("NZD")
    assert nzd.centres == ("NZAU", "NZWE")
    # Wellington Anniversary Mon 2025-01-20; Auckland Anniversary Mon 2025-01-27.
    assert not centre_calendar("NZWE").is_business_day(date(2025, 1, 20))
    assert centre_calendar("NZAU").is_business_day(date(2025, 1, 20))
    assert not centre_calendar("NZAU").is_business_day(date(2025, 1, 27))
    assert centre_calendar("NZWE").is_business_day(date(2025, 1, 27))
    assert not nzd.is_business_day(date(2025, 1, 20))
    assert not nzd.is_business_day(date(2025, 1, 27))


def test_calendars_are_memoised() -> None:
    assert calendar_for("EUR") is calendar_for("EUR")
    assert joint_calendar("USD", "EUR") is joint_calendar("EUR", "USD", "EUR")
    assert joint_calendar("EUR") is calendar_for("EUR")
    assert joint_calendar("EUR", "USD").code == "EUTA+USNY"


def test_unknown_calendar() -> None:
    assert issubclass(UnknownCalendar, KeyError)
    for ccy in ("XYZ", "usd", ""):
        with pytest.raises(UnknownCalendar):
            calendar_for(ccy)
    with pytest.raises(UnknownCalendar):
        centre_calendar("XXXX")
    with pytest.raises(UnknownCalendar):
        joint_calendar("EUR", "XYZ")


def test_every_supported_currency_has_a_working_calendar() -> None:
    assert supported_currencies() == frozenset(CURRENCY_CENTRES)
    for ccy in supported_currencies():
        cal = calendar_for(ccy)
        assert isinstance(cal, BusinessCalendar)
        open_days = [
            d
            for d in (date(2025, 1, 1) + timedelta(days=i) for i in range(365))
            if cal.is_business_day(d)
        ]
        # Two weekend days a week leave 261 days; holidays take some more.
        assert 220 <= len(open_days) <= 262, ccy


@pytest.mark.parametrize(
    ("d", "name"),
    [
        (date(2025, 1, 1), "New Year's Day"),
        (date(2025, 4, 18), "Good Friday"),
        (date(2025, 4, 21), "Easter Monday"),
        (date(2025, 5, 1), "Labour Day"),
        (date(2025, 12, 25), "Christmas Day"),
        (date(2025, 12, 26), "Christmas Holiday"),
        (date(2026, 4, 3), "Good Friday"),
        (date(2026, 4, 6), "Easter Monday"),
    ],
)
def test_target_holidays(d: date, name: str) -> None:
    assert d.weekday() < 5
    assert not calendar_for("EUR").is_business_day(d), name


def test_target_is_open_on_national_holidays() -> None:
    eur = calendar_for("EUR")
    assert eur.is_business_day(date(2025, 12, 24))  # Christmas Eve, Wed
    assert eur.is_business_day(date(2025, 12, 31))  # New Year's Eve, Wed
    assert eur.is_business_day(date(2025, 10, 3))  # German Unity Day, Fri
    assert eur.is_business_day(date(2025, 7, 14))  # Bastille Day, Mon


def test_fed_saturday_holiday_not_observed_on_friday() -> None:
    usd = calendar_for("USD")
    # Independence Day 2026 is Sat 07-04: the Fed is open Fri 2026-07-03 ...
    assert usd.is_business_day(date(2026, 7, 3))
    # ... although the generic US() calendar marks that Friday as a holiday.
    assert date(2026, 7, 3) in holidays.country_holidays("US", years=2026)
    # Christmas 2021 was Sat 12-25: Fed open Fri 2021-12-24.
    assert usd.is_business_day(date(2021, 12, 24))


def test_fed_sunday_holiday_observed_on_monday() -> None:
    usd = calendar_for("USD")
    # Juneteenth 2022 was Sun 06-19: observed Mon 2022-06-20.
    assert not usd.is_business_day(date(2022, 6, 20))
    # Independence Day 2021 was Sun 07-04: observed Mon 2021-07-05.
    assert not usd.is_business_day(date(2021, 7, 5))
    # Columbus Day and Veterans Day close the Fed (not the stock market).
    assert not usd.is_business_day(date(2025, 10, 13))
    assert not usd.is_business_day(date(2025, 11, 11))
    assert usd.is_business_day(date(2025, 11, 28))  # day after Thanksgiving


def test_gulf_weekends_come_from_the_holidays_package() -> None:
    aed, sar, ils = calendar_for("AED"), calendar_for("SAR"), calendar_for("ILS")
    # AED: Fri-Sat weekend until 2021, Sat-Sun since 2022.
    assert not aed.is_business_day(date(2021, 1, 8))  # Fri
    assert aed.is_business_day(date(2021, 1, 10))  # Sun
    assert aed.is_business_day(date(2023, 1, 6))  # Fri
    assert not aed.is_business_day(date(2023, 1, 8))  # Sun
    # The class attribute alone would miss the change: only is_weekend(d) has it.
    assert holidays.country_holidays("AE").weekend == {5, 6}
    # SAR and ILS: Fri-Sat.
    for cal in (sar, ils):
        assert not cal.is_business_day(date(2025, 2, 7))  # Fri
        assert not cal.is_business_day(date(2025, 2, 8))  # Sat
        assert cal.is_business_day(date(2025, 2, 9))  # Sun


def test_hkd_weekend_is_saturday_and_sunday() -> None:
    # holidays.HK has a Sunday-only weekend; the XHKG market calendar has Sat-Sun.
    assert holidays.country_holidays("HK").weekend == {6}
    assert not calendar_for("HKD").is_business_day(date(2025, 3, 8))  # Sat


def test_other_local_holidays() -> None:
    assert not calendar_for("GBP").is_business_day(date(2025, 8, 25))  # summer BH
    assert not calendar_for("JPY").is_business_day(date(2025, 12, 31))  # bank hol
    assert not calendar_for("JPY").is_business_day(date(2025, 1, 2))  # bank hol
    assert not calendar_for("CAD").is_business_day(date(2025, 7, 1))  # Canada Day
    assert not calendar_for("CAD").is_business_day(date(2025, 8, 4))  # Civic Hol
    assert not calendar_for("CAD").is_business_day(date(2025, 11, 11))  # Remembrance
    assert calendar_for("CAD").is_business_day(date(2025, 4, 21))  # Easter Monday
    assert not calendar_for("AUD").is_business_day(date(2025, 8, 4))  # NSW Bank Hol
    assert not calendar_for("SEK").is_business_day(date(2025, 6, 20))  # Midsummer Eve
    assert not calendar_for("NOK").is_business_day(date(2025, 12, 24))
    assert not calendar_for("MXN").is_business_day(date(2025, 12, 12))  # bank staff


def test_business_day_arithmetic() -> None:
    usd = calendar_for("USD")
    fri, sat, mon = date(2025, 7, 4), date(2025, 7, 5), date(2025, 7, 7)  # Fri hol
    assert usd.roll_forward(fri) == mon
    assert usd.roll_forward(mon) == mon
    assert usd.next_business_day(mon) == date(2025, 7, 8)
    assert usd.next_business_day(date(2025, 7, 3)) == mon
    assert usd.roll_backward(sat) == date(2025, 7, 3)
    assert usd.previous_business_day(mon) == date(2025, 7, 3)
    assert usd.add_business_days(date(2025, 7, 2), 2) == mon
    assert usd.add_business_days(mon, -2) == date(2025, 7, 2)
    assert usd.add_business_days(sat, 0) == sat
    assert date(2025, 7, 4) in usd.closed_days(2025)
    assert usd.closed_days(2025) is usd.closed_days(2025)


# --- currency pairs --------------------------------------------------------


def test_parse_currency_pair() -> None:
    eurusd = CurrencyPair.parse("EUR/USD")
    assert eurusd == CurrencyPair("EUR", "USD", 2)
    assert CurrencyPair.parse("EURUSD") == eurusd
    assert CurrencyPair.parse(" eurusd ") == eurusd
    assert eurusd.symbol == "EUR/USD"
    assert eurusd.currencies == ("EUR", "USD")
    assert CurrencyPair.parse("EUR/USD", spot_lag=0).spot_lag == 0


@pytest.mark.parametrize("symbol", sorted(T1_PAIRS))
def test_t1_pairs(symbol: str) -> None:
    assert CurrencyPair.parse(symbol).spot_lag == 1
    base, quote = symbol.split("/")
    assert CurrencyPair.parse(quote + base).spot_lag == 1
    assert default_spot_lag(base, quote) == 1


def test_default_spot_lag() -> None:
    assert default_spot_lag("EUR", "USD") == 2
    assert default_spot_lag("EUR", "CAD") == 2  # crosses with CAD stay T+2
    assert CurrencyPair("USD", "CAD").spot_lag == 2  # only parse applies T1_PAIRS


@pytest.mark.parametrize("symbol", ["EUR", "EUR/US", "EURUSDX", "EUR/EUR", "E1R/USD"])
def test_parse_rejects_bad_symbols(symbol: str) -> None:
    with pytest.raises(ValueError):
        CurrencyPair.parse(symbol)


def test_currency_pair_rejects_bad_lag() -> None:
    with pytest.raises(ValueError):
        CurrencyPair("EUR", "USD", -1)
    with pytest.raises(ValueError):
        CurrencyPair("eur", "USD")


def test_currency_pair_is_frozen_and_hashable() -> None:
    p = pair("EUR/USD")
    with pytest.raises(AttributeError):
        p.base = "GBP"  # type: ignore[misc]  # assigning to a frozen field on purpose
    assert {p: 1}[pair("EURUSD")] == 1


# --- trade date ------------------------------------------------------------


def test_trade_date_rolls_at_17_new_york_across_dst() -> None:
    # Thu 2025-03-06 is EST (UTC-5): 17:00 NY = 22:00 UTC.
    assert fx_trade_date(datetime(2025, 3, 6, 21, 59, tzinfo=UTC)) == date(2025, 3, 6)
    assert fx_trade_date(datetime(2025, 3, 6, 22, 0, tzinfo=UTC)) == date(2025, 3, 7)
    # DST starts Sun 2025-03-09. Mon 2025-03-10 is EDT (UTC-4): 17:00 NY = 21:00 UTC.
    assert fx_trade_date(datetime(2025, 3, 10, 20, 59, tzinfo=UTC)) == date(2025, 3, 10)
    assert fx_trade_date(datetime(2025, 3, 10, 21, 0, tzinfo=UTC)) == date(2025, 3, 11)
    # Same UTC clock time, different answer on either side of the change.
    assert fx_trade_date(datetime(2025, 3, 6, 21, 30, tzinfo=UTC)) == date(2025, 3, 6)
    assert fx_trade_date(datetime(2025, 3, 10, 21, 30, tzinfo=UTC)) == date(2025, 3, 11)


def test_trade_date_in_any_timezone() -> None:
    tokyo = timezone(timedelta(hours=9))
    # Tue 2025-03-11 05:59 Tokyo (UTC+9) = Mon 16:59 EDT; 06:00 = 17:00 EDT.
    before = datetime(2025, 3, 11, 5, 59, tzinfo=tokyo)
    assert fx_trade_date(before) == date(2025, 3, 10)
    assert fx_trade_date(before + timedelta(minutes=1)) == date(2025, 3, 11)


def test_weekend_trades_belong_to_monday() -> None:
    # Fri 2025-03-07 17:00 EST = 22:00 UTC: rolls to Sat, which moves to Mon 03-10.
    assert fx_trade_date(datetime(2025, 3, 7, 21, 59, tzinfo=UTC)) == date(2025, 3, 7)
    assert fx_trade_date(datetime(2025, 3, 7, 22, 0, tzinfo=UTC)) == date(2025, 3, 10)
    assert fx_trade_date(datetime(2025, 3, 8, 12, 0, tzinfo=UTC)) == date(2025, 3, 10)
    # Sun 2025-03-09 (the DST day) 18:00 EDT = 22:00 UTC: Monday.
    assert fx_trade_date(datetime(2025, 3, 9, 22, 0, tzinfo=UTC)) == date(2025, 3, 10)
    assert fx_trade_date(datetime(2025, 3, 9, 10, 0, tzinfo=UTC)) == date(2025, 3, 10)


def test_holiday_does_not_move_the_trade_date() -> None:
    # Thanksgiving Thu 2025-11-27 at noon NY is trade date Thanksgiving.
    ts = datetime(2025, 11, 27, 17, 0, tzinfo=UTC)
    assert fx_trade_date(ts) == date(2025, 11, 27)


def test_nzd_trade_date_rolls_at_7_auckland() -> None:
    nzdusd, eurusd = pair("NZD/USD"), pair("EUR/USD")
    # Auckland is NZDT (UTC+13) in March 2025: 07:00 Tue 03-11 = 18:00 UTC Mon 03-10.
    before = datetime(2025, 3, 10, 17, 59, tzinfo=UTC)
    at = datetime(2025, 3, 10, 18, 0, tzinfo=UTC)
    assert fx_trade_date(before, nzdusd) == date(2025, 3, 10)
    assert fx_trade_date(at, nzdusd) == date(2025, 3, 11)
    # 18:00 UTC Mon is 14:00 NY: non-NZD pairs are still on Monday.
    assert fx_trade_date(at, eurusd) == date(2025, 3, 10)
    assert fx_trade_date(at, pair("AUD/NZD")) == date(2025, 3, 11)
    # NZST (UTC+12) in July: 07:00 Wed 07-02 = 19:00 UTC Tue 07-01.
    assert fx_trade_date(datetime(2025, 7, 1, 18, 59, tzinfo=UTC), nzdusd) == date(
        2025, 7, 1
    )
    assert fx_trade_date(datetime(2025, 7, 1, 19, 0, tzinfo=UTC), nzdusd) == date(
        2025, 7, 2
    )
    # Sat 2025-03-08 08:00 NZDT (Fri 19:00 UTC) is a Saturday trade date: Monday.
    assert fx_trade_date(datetime(2025, 3, 7, 19, 0, tzinfo=UTC), nzdusd) == date(
        2025, 3, 10
    )


def test_trade_date_needs_aware_datetime() -> None:
    with pytest.raises(ValueError):
        fx_trade_date(datetime(2025, 3, 10, 12, 0))


# --- spot dates ------------------------------------------------------------


def test_eurusd_4_july_on_t_plus_1_does_not_delay_spot() -> None:
    # Mon 2017-07-03: T+1 Tue 07-04 is a USD holiday but a TARGET day, T+2 Wed
    # 07-05 is good for both. A joint calendar would wrongly give Thu 07-06.
    assert spot_date(date(2017, 7, 3), pair("EUR/USD")) == date(2017, 7, 5)
    assert joint_calendar("EUR", "USD").add_business_days(date(2017, 7, 3), 2) == date(
        2017, 7, 6
    )


@pytest.mark.parametrize(
    ("symbol", "trade", "spot", "why"),
    [
        # Fri 2025-05-02: Mon 05-05 Early May bank holiday (US open) is skipped:
        # GBP T+1 Tue 05-06, T+2 Wed 05-07 instead of Tue.
        ("GBP/USD", date(2025, 5, 2), date(2025, 5, 7), "UK May Day on T+1"),
        # Fri 2025-08-22: Mon 08-25 summer bank holiday: T+1 Tue, T+2 Wed 08-27.
        ("GBP/USD", date(2025, 8, 22), date(2025, 8, 27), "UK summer BH on T+1"),
        # Mon 2025-09-22: Tue 09-23 Autumnal Equinox Day: T+1 Wed, T+2 Thu 09-25.
        ("USD/JPY", date(2025, 9, 22), date(2025, 9, 25), "JP equinox on T+1"),
        # Thu 2019-04-25: Golden Week 2019 closed Tokyo Sat 04-27 .. Mon 05-06:
        # T+1 Fri 04-26, T+2 Tue 05-07.
        ("USD/JPY", date(2019, 4, 25), date(2019, 5, 7), "Golden Week 2019"),
        # Fri 2025-01-24: Mon 01-27 Auckland Anniversary: T+1 Tue, T+2 Wed 01-29.
        ("NZD/USD", date(2025, 1, 24), date(2025, 1, 29), "Auckland Anniversary"),
        # Fri 2025-01-17: Mon 01-20 Wellington Anniversary (and MLK day, ignored).
        ("NZD/USD", date(2025, 1, 17), date(2025, 1, 22), "Wellington Anniversary"),
    ],
)
def test_non_usd_holiday_on_t_plus_1_pushes_spot_to_t_plus_3(
    symbol: str, trade: date, spot: date, why: str
) -> None:
    assert spot_date(trade, pair(symbol)) == spot, why


@pytest.mark.parametrize(
    ("trade", "spot"),
    [
        (date(2025, 3, 10), date(2025, 3, 11)),  # Mon -> Tue
        (date(2025, 3, 14), date(2025, 3, 17)),  # Fri -> Mon
        # Mon 2025-06-30: Tue 07-01 Canada Day: Wed 07-02.
        (date(2025, 6, 30), date(2025, 7, 2)),
        # Thu 2025-07-03: CAD T+1 Fri 07-04 is Independence Day: roll to Mon 07-07.
        (date(2025, 7, 3), date(2025, 7, 7)),
    ],
)
def test_usdcad_is_t_plus_1(trade: date, spot: date) -> None:
    assert spot_date(trade, pair("USD/CAD")) == spot
    assert spot_date(trade, pair("CAD/USD")) == spot


@pytest.mark.parametrize(
    ("trade", "spot", "why"),
    [
        # Tue 2025-11-25: T+2 Thu 11-27 is Thanksgiving: Fri 11-28.
        (date(2025, 11, 25), date(2025, 11, 28), "Thanksgiving on T+2"),
        # Wed 2026-06-17: T+2 Fri 06-19 Juneteenth: Mon 06-22.
        (date(2026, 6, 17), date(2026, 6, 22), "Juneteenth on T+2"),
        # Thu 2022-06-16: T+2 Mon 06-20 Juneteenth observed (Sun 06-19): Tue 06-21.
        (date(2022, 6, 16), date(2022, 6, 21), "Sunday holiday observed Mon"),
        # Wed 2026-07-01: T+2 Fri 07-03; 4 July is Sat and the Fed stays open Fri.
        (date(2026, 7, 1), date(2026, 7, 3), "Saturday holiday not on Friday"),
        # Thu 2025-07-03: T+1 Fri 07-04 ignored, T+2 Mon 07-07.
        (date(2025, 7, 3), date(2025, 7, 7), "USD holiday on T+1 ignored"),
    ],
)
def test_eurusd_spot_on_usd_holiday_rolls_forward(
    trade: date, spot: date, why: str
) -> None:
    assert spot_date(trade, pair("EUR/USD")) == spot, why


def test_cross_counts_each_currency_and_takes_the_later() -> None:
    # Fri 2025-08-22: EUR T+2 Tue 08-26; GBP skips Mon 08-25: T+2 Wed 08-27.
    assert spot_date(date(2025, 8, 22), pair("EUR/GBP")) == date(2025, 8, 27)
    # Tue 2025-11-25 EUR/GBP: both T+2 Thu 11-27, Thanksgiving: roll to Fri 11-28.
    assert spot_date(date(2025, 11, 25), pair("EUR/GBP")) == date(2025, 11, 28)
    # Mon 2017-07-03 EUR/GBP: 4 July on T+1 is ignored as for EUR/USD.
    assert spot_date(date(2017, 7, 3), pair("EUR/GBP")) == date(2017, 7, 5)


def test_mxn_counts_usd_holidays_on_t_plus_1() -> None:
    # Thu 2025-07-03: T+1 would be Fri 07-04 (US holiday): for MXN it is not a
    # business day, so T+1 = Mon 07-07 and T+2 = Tue 07-08 (EUR/USD: Mon 07-07).
    assert spot_date(date(2025, 7, 3), pair("USD/MXN")) == date(2025, 7, 8)
    assert spot_date(date(2025, 7, 3), pair("EUR/USD")) == date(2025, 7, 7)
    # Wed 2025-11-26: Thanksgiving Thu skipped: T+1 Fri 11-28, T+2 Mon 12-01.
    assert spot_date(date(2025, 11, 26), pair("USD/MXN")) == date(2025, 12, 1)
    assert spot_date(date(2025, 11, 26), pair("EUR/USD")) == date(2025, 11, 28)
    # The same rule for ARS and CLP, and for a cross with MXN.
    assert spot_date(date(2025, 7, 3), pair("USD/CLP")) == date(2025, 7, 8)
    assert spot_date(date(2025, 7, 3), pair("EUR/MXN")) == date(2025, 7, 8)


def test_gulf_spot_dates() -> None:
    # USD/AED Thu 2021-01-07 (Fri-Sat weekend): T+1 Sun 01-10, T+2 Mon 01-11.
    assert spot_date(date(2021, 1, 7), pair("USD/AED")) == date(2021, 1, 11)
    # Thu 2023-01-05 (Sat-Sun weekend): T+1 Fri 01-06, T+2 Mon 01-09.
    assert spot_date(date(2023, 1, 5), pair("USD/AED")) == date(2023, 1, 9)
    # USD/SAR Wed 2025-02-05: SAR T+1 Thu 02-06, T+2 Sun 02-09; Sunday is no USD
    # day: Mon 02-10.
    assert spot_date(date(2025, 2, 5), pair("USD/SAR")) == date(2025, 2, 10)
    assert not is_good_value_date(date(2025, 2, 9), pair("USD/SAR"))
    assert not is_good_value_date(date(2025, 2, 7), pair("USD/SAR"))


def test_custom_spot_lag() -> None:
    assert spot_date(date(2025, 3, 10), CurrencyPair("USD", "CAD")) == date(2025, 3, 12)
    assert spot_date(date(2025, 3, 10), pair("EUR/USD")) == date(2025, 3, 12)
    eur0 = CurrencyPair.parse("EUR/USD", spot_lag=0)
    assert spot_date(date(2025, 7, 4), eur0) == date(2025, 7, 7)


def test_is_good_value_date() -> None:
    eurusd = pair("EUR/USD")
    assert is_good_value_date(date(2017, 7, 5), eurusd)
    assert not is_good_value_date(date(2017, 7, 4), eurusd)  # USD holiday
    assert not is_good_value_date(date(2025, 5, 1), eurusd)  # TARGET holiday
    assert not is_good_value_date(date(2025, 3, 8), eurusd)  # Saturday
    # A cross needs USD open too: Thanksgiving is no EUR/GBP value date.
    assert not is_good_value_date(date(2025, 11, 27), pair("EUR/GBP"))


# --- value dates (SettlType) -----------------------------------------------


def test_regular_and_t_plus_2() -> None:
    eurusd, usdcad = pair("EUR/USD"), pair("USD/CAD")
    for settl_type in ("0", ""):
        assert value_date(date(2017, 7, 3), eurusd, settl_type) == date(2017, 7, 5)
    assert value_date(date(2017, 7, 3), eurusd) == date(2017, 7, 5)
    # "3" is T+2 even for a T+1 pair: Mon 2025-03-10 -> Wed 03-12.
    assert value_date(date(2025, 3, 10), usdcad, "3") == date(2025, 3, 12)
    assert value_date(date(2025, 3, 10), usdcad, "0") == date(2025, 3, 11)


def test_cash_and_tom() -> None:
    eurusd = pair("EUR/USD")
    assert value_date(date(2025, 3, 10), eurusd, "1") == date(2025, 3, 10)
    # Cash on 4 July 2017 (USD holiday) rolls to Wed 07-05.
    assert value_date(date(2017, 7, 4), eurusd, "1") == date(2017, 7, 5)
    # Tom from Mon 2017-07-03: Tue is a USD holiday, so Wed 07-05.
    assert value_date(date(2017, 7, 3), eurusd, "2") == date(2017, 7, 5)
    # Tom from Fri 2025-03-07: Mon 03-10.
    assert value_date(date(2025, 3, 7), eurusd, "2") == date(2025, 3, 10)


def test_spot_next() -> None:
    eurusd = pair("EUR/USD")
    # Spot Wed 2017-07-05, spot-next Thu 07-06.
    assert value_date(date(2017, 7, 3), eurusd, "C") == date(2017, 7, 6)
    # Mon 2025-11-24: spot Wed 11-26, next Thu 11-27 is Thanksgiving: Fri 11-28.
    assert value_date(date(2025, 11, 24), eurusd, "C") == date(2025, 11, 28)


def test_broken_date() -> None:
    eurusd = pair("EUR/USD")
    trade = date(2025, 11, 24)
    assert value_date(trade, eurusd, "B", date(2025, 12, 15)) == date(2025, 12, 15)
    assert value_date(trade, eurusd, "B", trade) == trade
    with pytest.raises(ValueError, match="needs a SettlDate"):
        value_date(trade, eurusd, "B")
    with pytest.raises(ValueError, match="not a good value date"):
        value_date(trade, eurusd, "B", date(2025, 11, 27))  # Thanksgiving
    with pytest.raises(ValueError, match="not a good value date"):
        value_date(trade, eurusd, "B", date(2025, 11, 29))  # Saturday
    with pytest.raises(ValueError, match="before trade date"):
        value_date(trade, eurusd, "B", date(2025, 11, 21))


def test_month_tenor_month_end_rule() -> None:
    eurusd = pair("EUR/USD")
    # Thu 2025-06-26: spot Mon 06-30, the last business day of June. M1 is the
    # last business day of July, Thu 07-31 (not 07-30).
    assert spot_date(date(2025, 6, 26), eurusd) == date(2025, 6, 30)
    assert value_date(date(2025, 6, 26), eurusd, "M1") == date(2025, 7, 31)
    # Wed 2026-01-28: spot Fri 01-30 (31st is Sat); M1 = Fri 2026-02-27.
    assert value_date(date(2026, 1, 28), eurusd, "M1") == date(2026, 2, 27)
    # Y1 from the same spot: last business day of January 2027, Fri 01-29.
    assert value_date(date(2026, 1, 28), eurusd, "Y1") == date(2027, 1, 29)


def test_month_tenor_rolls() -> None:
    eurusd = pair("EUR/USD")
    # Mon 2026-01-12: spot Wed 01-14; M1 Sat 02-14 -> Sun -> Mon 02-16 is
    # Washington's Birthday (USD) -> Tue 2026-02-17.
    assert value_date(date(2026, 1, 12), eurusd, "M1") == date(2026, 2, 17)
    # Tue 2025-10-28: spot Thu 10-30 (not month end: Fri 10-31 is open). M1
    # Sun 11-30; following would be Mon 12-01, next month: back to Fri 11-28.
    assert value_date(date(2025, 10, 28), eurusd, "M1") == date(2025, 11, 28)
    # M3 from spot Wed 2025-01-15 (trade Mon 01-13): Tue 2025-04-15.
    assert value_date(date(2025, 1, 13), eurusd, "M3") == date(2025, 4, 15)
    # M1 from spot Fri 2025-01-31 (trade Wed 01-29), end of month: Fri 02-28.
    assert value_date(date(2025, 1, 29), eurusd, "M1") == date(2025, 2, 28)


def test_week_and_day_tenors() -> None:
    eurusd = pair("EUR/USD")
    # Mon 2025-11-10: spot Wed 11-12; W2 Wed 11-26; W1 Wed 11-19.
    assert value_date(date(2025, 11, 10), eurusd, "W1") == date(2025, 11, 19)
    assert value_date(date(2025, 11, 10), eurusd, "W2") == date(2025, 11, 26)
    # Wed 2025-11-19: spot Fri 11-21; W1 Fri 11-28 (day after Thanksgiving).
    assert value_date(date(2025, 11, 19), eurusd, "W1") == date(2025, 11, 28)
    # Mon 2025-11-17: spot Wed 11-19; W1 Wed 11-26; D1 Thu 11-20;
    # D5: Thu, Fri, Mon, Tue, Wed 11-26; D6 skips Thanksgiving: Fri 11-28.
    assert value_date(date(2025, 11, 17), eurusd, "D1") == date(2025, 11, 20)
    assert value_date(date(2025, 11, 17), eurusd, "D5") == date(2025, 11, 26)
    assert value_date(date(2025, 11, 17), eurusd, "D6") == date(2025, 11, 28)


@pytest.mark.parametrize(
    "settl_type", ["4", "6", "9", "X", "M0", "m1", "M", "1M", "M-1", " 0", "W1.5"]
)
def test_unsupported_settl_type(settl_type: str) -> None:
    with pytest.raises(ValueError, match="unsupported SettlType"):
        value_date(date(2025, 3, 10), pair("EUR/USD"), settl_type)


# --- properties ------------------------------------------------------------

PAIRS = [
    "EUR/USD",
    "GBP/USD",
    "USD/JPY",
    "USD/CHF",
    "AUD/USD",
    "NZD/USD",
    "EUR/GBP",
    "EUR/JPY",
    "GBP/JPY",
    "EUR/CHF",
    "AUD/NZD",
    "EUR/SEK",
    "EUR/NOK",
    "USD/SGD",
    "USD/HKD",
    "USD/ZAR",
    "USD/MXN",
    "EUR/PLN",
    "USD/SAR",
    "USD/AED",
    *sorted(T1_PAIRS),
]

trade_dates = st.dates(min_value=date(2015, 1, 1), max_value=date(2030, 12, 31))


@settings(max_examples=300, deadline=None)
@given(trade_dates, st.sampled_from(PAIRS))
def test_spot_date_properties(trade: date, symbol: str) -> None:
    p = pair(symbol)
    spot = spot_date(trade, p)
    assert is_good_value_date(spot, p)
    assert spot > trade
    # Ten days covers normal holidays; Golden Week 2019 (12), Eid in Riyadh
    # and the Russian New Year break (13) need more.
    assert (spot - trade).days <= 14
    # At least spot_lag business days of each non-USD currency lie in between.
    for ccy in p.currencies:
        if ccy != "USD":
            cal = calendar_for(ccy)
            assert cal.add_business_days(trade, p.spot_lag) <= spot


@settings(max_examples=200, deadline=None)
@given(
    trade_dates,
    st.sampled_from(PAIRS),
    st.sampled_from(["0", "1", "2", "3", "C", "D3", "W1", "M1", "M6", "Y1"]),
)
def test_value_date_properties(trade: date, symbol: str, settl_type: str) -> None:
    p = pair(symbol)
    vd = value_date(trade, p, settl_type)
    assert is_good_value_date(vd, p)
    assert vd >= trade
    spot = spot_date(trade, p)
    if settl_type in ("C", "D3", "W1", "M1", "M6", "Y1"):
        assert vd > spot
    if settl_type == "1":
        assert vd <= spot
