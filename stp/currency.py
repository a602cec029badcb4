"""ISO 4217 minor units and exact rounding of currency amounts."""

from __future__ import annotations

from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from functools import cache
from types import MappingProxyType
from typing import Final

from iso4217 import Currency

__all__ = [
    "NON_ISO_MINOR_UNITS",
    "UnknownCurrency",
    "decimal_context",
    "is_known_currency",
    "minor_units",
    "quantize",
]


class UnknownCurrency(ValueError):
    """The code is not an ISO 4217 currency (nor a supported market code)."""


#: Market codes that are not in ISO 4217 but are traded; CNH mirrors CNY.
NON_ISO_MINOR_UNITS: Final = MappingProxyType({"CNH": 2})

_CONTEXT: Final = Context(
    prec=38,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def decimal_context() -> Context:
    """The amount context: 38 digits, half-even, errors trapped.

    Shared (a copy per call cost ~10% of the pipeline's CPU): use it for
    arithmetic only, never change its settings; ``.copy()`` it to get one to
    change.  Its flags are not read anywhere (errors trap)."""
    return _CONTEXT


def _lookup(ccy: str) -> Currency:
    if not (isinstance(ccy, str) and len(ccy) == 3 and ccy.isascii() and ccy.isupper()):
        raise UnknownCurrency(f"not an ISO 4217 currency code: {ccy!r}")
    try:
        return Currency(ccy)
    except ValueError:
        raise UnknownCurrency(f"unknown currency: {ccy!r}") from None


def is_known_currency(ccy: str) -> bool:
    """Return True for an upper-case ISO 4217 code or a NON_ISO_MINOR_UNITS code."""
    if ccy in NON_ISO_MINOR_UNITS:
        return True
    try:
        _lookup(ccy)
    except UnknownCurrency:
        return False
    return True


@cache
def minor_units(ccy: str) -> int:
    """Return the ISO 4217 exponent of ``ccy`` (JPY 0, USD 2, KWD 3).

    Raises UnknownCurrency for an unknown code and ValueError for a code
    without minor units (XAU, XXX, ...).
    """
    if ccy in NON_ISO_MINOR_UNITS:
        return NON_ISO_MINOR_UNITS[ccy]
    exponent = _lookup(ccy).exponent
    if exponent is None:
        raise ValueError(f"{ccy} has no ISO 4217 minor unit")
    return exponent


def quantize(amount: Decimal, ccy: str) -> Decimal:
    """Round ``amount`` half-even to the minor units of ``ccy``.

    Uses decimal_context(), never the thread's context. Negative zero
    becomes zero. Raises TypeError for a non-Decimal, ValueError for NaN,
    infinity or a result longer than 38 digits.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"amount is not finite: {amount}")
    exponent = _QUANTA.get(ccy)
    if exponent is None:
        exponent = _QUANTA[ccy] = _quantum(ccy)     # raises for an unknown code (not kept)
    try:
        # decimal_context() (half-even; its flags are never read: errors trap),
        # called on the context: the keyword form costs twice as much
        result = _CONTEXT.quantize(amount, exponent)
    except InvalidOperation:
        msg = f"{amount} does not fit 38 digits at {ccy} minor units"
        raise ValueError(msg) from None
    if result.is_zero() and result.is_signed():
        result = result.copy_abs()
    return result


# currency -> _quantum(ccy), for known codes only (a few dozen)
_QUANTA: dict[str, Decimal] = {}


@cache
def _quantum(ccy: str) -> Decimal:
    """1 of the currency's minor unit (0.01 for USD), computed once per code."""
    return Decimal(1).scaleb(-minor_units(ccy))
