"""Reference data the post-trade core works with, as typed values.

Loaded from ``config/reference/*.toml`` by ``adapters.reference``; the core
only sees these objects.  Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, time, timedelta
from decimal import Decimal

from stp.limits import AmountLimits, PairLimits
from stp.valuedates import CurrencyPair

# Any two of these make a "major" pair for the EU retail leverage limits.
ESMA_MAJOR_CURRENCIES = frozenset({"USD", "EUR", "JPY", "GBP", "CAD", "CHF"})


@dataclass(frozen=True, slots=True)
class LeverageGroup:
    """Leverage and margin thresholds shared by a group of client accounts.

    Defaults are the EU retail (ESMA) limits: 30:1 for majors, 20:1 for the
    rest; margin close-out (stop-out) at 50% margin level; margin call at 100%.

    ``recovery_band`` (percentage points, default 5) is the hysteresis of both
    thresholds: an account enters margin call as soon as its level is at or
    below ``margin_call_level`` but leaves it only once the level is above
    ``margin_call_level + recovery_band``; likewise it leaves stop-out for
    margin call only above ``stop_out_level + recovery_band``.  A level that
    hovers around a threshold then makes one event, not one per revaluation.
    0 turns the hysteresis off.
    """

    name: str
    major_leverage: Decimal = Decimal(30)
    other_leverage: Decimal = Decimal(20)
    margin_call_level: Decimal = Decimal(100)     # percent
    stop_out_level: Decimal = Decimal(50)         # percent
    negative_balance_protection: bool = True
    recovery_band: Decimal = Decimal(5)           # percentage points above a threshold to leave it

    def __post_init__(self) -> None:
        if not self.recovery_band.is_finite() or self.recovery_band < 0:
            raise ValueError(f"leverage group {self.name}: recovery_band must be >= 0, "
                             f"not {self.recovery_band}")

    def leverage(self, pair: CurrencyPair) -> Decimal:
        major = pair.base in ESMA_MAJOR_CURRENCIES and pair.quote in ESMA_MAJOR_CURRENCIES
        return self.major_leverage if major else self.other_leverage


@dataclass(frozen=True, slots=True)
class Account:
    """A client account."""

    account_id: str
    currency: str                                  # account (reporting) currency
    leverage_group: str
    opening_balance: Decimal = Decimal(0)
    name: str = ""
    # net open position limit per currency (absolute amount in that currency)
    exposure_limits: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ssi:
    """A standing settlement instruction of a counterparty for one currency."""

    counterparty: str
    currency: str
    bank_bic: str
    account: str
    version: int = 1
    valid_from: date | None = None


@dataclass(frozen=True, slots=True)
class Counterparty:
    """An LP (or other settlement counterparty) and its SSIs."""

    name: str                                      # the LP session name
    ssis: tuple[Ssi, ...] = ()

    def ssi(self, currency: str, on: date | None = None) -> Ssi | None:
        """The newest SSI version for the currency valid on ``on``."""
        best: Ssi | None = None
        for s in self.ssis:
            if s.currency != currency:
                continue
            if on is not None and s.valid_from is not None and s.valid_from > on:
                continue
            if best is None or s.version > best.version:
                best = s
        return best


@dataclass(frozen=True, slots=True)
class PairSettings:
    """Per-pair settings: price tolerance for validation, spot lag override,
    the amount limits the intake checks (``stp.limits``)."""

    pair: CurrencyPair
    price_tolerance: Decimal = Decimal("0.02")     # fraction of the last price
    decimals: int = 5
    limits: PairLimits = field(default_factory=PairLimits)


@dataclass(frozen=True, slots=True)
class CutOff:
    """When net settlement for a currency is instructed: ``days_before`` the
    value date at ``at`` in ``timezone`` (e.g. CLS: value date 06:30 CET is a
    matching deadline; the default instructs the business day before, 16:00
    London)."""

    currency: str
    at: time = time(16, 0)
    timezone: str = "Europe/London"
    days_before: int = 1


@dataclass(frozen=True, slots=True)
class ReferenceData:
    accounts: dict[str, Account]
    leverage_groups: dict[str, LeverageGroup]
    counterparties: dict[str, Counterparty]
    pairs: dict[str, PairSettings]                 # by symbol "EUR/USD"
    cut_offs: dict[str, CutOff] = field(default_factory=dict)
    default_cut_off: CutOff = CutOff("*")
    default_limits: PairLimits = field(default_factory=PairLimits)   # pairs not in ``pairs``
    price_band_max_age: timedelta = timedelta(hours=24)

    def amount_limits(self) -> AmountLimits:
        """The intake's limits: each pair's, its tolerance confirm's ``price_tolerance``."""
        return AmountLimits({symbol: replace(s.limits, tolerance=s.price_tolerance)
                             for symbol, s in self.pairs.items()},
                            self.default_limits, self.price_band_max_age)

    def cut_off(self, currency: str) -> CutOff:
        return self.cut_offs.get(currency, self.default_cut_off)

    def pair_for(self, pair: CurrencyPair) -> CurrencyPair:
        """The pair as value dates are computed for it: the configured one (its
        spot lag) when the pair is configured, else ``pair`` (the default lag).
        Confirmation and reconciliation both use it, so they give one date."""
        settings = self.pairs.get(pair.symbol)
        return settings.pair if settings is not None else pair

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self.pairs)
