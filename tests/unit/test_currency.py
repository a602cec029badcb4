"""Minor units and half-even rounding (stp.currency)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stp.currency import (
    UnknownCurrency,
    decimal_context,
    is_known_currency,
    minor_units,
    quantize,
)


@pytest.mark.parametrize(
    ("ccy", "units"),
    [
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("OMR", 3),
        ("CLF", 4),
        ("CNH", 2),  # not ISO 4217: mirrors CNY
    ],
)
def test_minor_units(ccy: str, units: int) -> None:
    assert minor_units(ccy) == units


@pytest.mark.parametrize("ccy", ["XYZ", "usd", "US", "USDD", "", "EUR ", "CNY1"])
def test_unknown_currency_raises(ccy: str) -> None:
    with pytest.raises(UnknownCurrency):
        minor_units(ccy)
    assert not is_known_currency(ccy)


def test_unknown_currency_is_a_value_error() -> None:
    assert issubclass(UnknownCurrency, ValueError)


def test_code_without_minor_unit() -> None:
    assert is_known_currency("XAU")
    with pytest.raises(ValueError, match="no ISO 4217 minor unit"):
        minor_units("XAU")


@pytest.mark.parametrize("ccy", ["USD", "JPY", "KWD", "CNH", "XAU"])
def test_is_known_currency(ccy: str) -> None:
    assert is_known_currency(ccy)


@pytest.mark.parametrize(
    ("amount", "ccy", "expected"),
    [
        ("0.125", "USD", "0.12"),  # half-even: down to the even cent
        ("0.135", "USD", "0.14"),  # half-even: up to the even cent
        ("0.1251", "USD", "0.13"),
        ("-0.125", "USD", "-0.12"),
        ("-0.135", "USD", "-0.14"),
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1234567.5", "JPY", "1234568"),
        ("1.0005", "KWD", "1.000"),
        ("1.0015", "KWD", "1.002"),
        ("7", "USD", "7.00"),
        ("1100000", "USD", "1100000.00"),
        ("-0.001", "USD", "0.00"),  # negative zero normalised
    ],
)
def test_quantize_half_even(amount: str, ccy: str, expected: str) -> None:
    result = quantize(Decimal(amount), ccy)
    assert str(result) == expected
    assert not (result.is_zero() and result.is_signed())


def test_quantize_ignores_the_thread_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.clear_flags()   # localcontext copies flags earlier code may have raised
        ctx.rounding = decimal.ROUND_UP
        ctx.prec = 3
        ctx.traps[decimal.Inexact] = True
        assert quantize(Decimal("1234567.125"), "USD") == Decimal("1234567.12")
        assert not ctx.flags[decimal.Inexact]


def test_quantize_rejects_float_and_non_finite() -> None:
    with pytest.raises(TypeError):
        quantize(0.125, "USD")  # type: ignore[arg-type]  # a float on purpose: the check under test
    for bad in ("NaN", "Infinity", "-Infinity", "sNaN"):
        with pytest.raises(ValueError):
            quantize(Decimal(bad), "USD")


def test_quantize_too_large_raises_value_error() -> None:
    with pytest.raises(ValueError, match="38 digits"):
        quantize(Decimal("1E40"), "USD")


def test_quantize_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        quantize(Decimal(1), "ABC")


def test_decimal_context_is_the_amount_context_not_the_threads() -> None:
    ctx = decimal_context()
    assert ctx.rounding == decimal.ROUND_HALF_EVEN
    assert ctx.prec == 38
    assert ctx.traps[decimal.InvalidOperation] and not ctx.traps[decimal.Inexact]
    with decimal.localcontext() as local:          # the thread's context does not matter
        local.prec = 3
        local.rounding = decimal.ROUND_UP
        assert quantize(Decimal("1.005"), "USD") == Decimal("1.00")
        assert decimal_context().add(Decimal("1.23456"), Decimal(1)) == Decimal("2.23456")


@given(
    st.decimals(
        min_value=Decimal("-1e15"),
        max_value=Decimal("1e15"),
        allow_nan=False,
        allow_infinity=False,
        places=6,
    ),
    st.sampled_from(["JPY", "USD", "KWD"]),
)
def test_quantize_properties(amount: Decimal, ccy: str) -> None:
    units = minor_units(ccy)
    result = quantize(amount, ccy)
    assert result.as_tuple().exponent == -units
    assert abs(result - amount) <= Decimal(1).scaleb(-units) / 2
    assert quantize(result, ccy) == result
