"""Loads reference data (``config/reference/*.toml``) into ``stp.reference`` values.

Files: ``accounts.toml`` (leverage groups, accounts, account ranges),
``counterparties.toml`` (LPs and their SSIs), ``pairs.toml``, ``settlement.toml``
(cut-offs).  Amounts are decimal strings in the files ("2500000.00"), never
floats; a float there is an error.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import date, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from stp.currency import is_known_currency
from stp.limits import PairLimits
from stp.reference import (
    Account,
    Counterparty,
    CutOff,
    LeverageGroup,
    PairSettings,
    ReferenceData,
    Ssi,
)
from stp.valuedates import CurrencyPair


class ReferenceError(ValueError):
    pass


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ReferenceError(f"{where}: write amounts as strings (\"1000.00\"), got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ReferenceError(f"{where}: not a number: {value!r}") from None


def _currency(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_known_currency(value):
        raise ReferenceError(f"{where}: unknown currency {value!r}")
    return value


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ReferenceError(f"reference file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReferenceError(f"{path}: {exc}") from None


def _time(value: str, where: str) -> time:
    try:
        hour, minute = value.split(":")
        return time(int(hour), int(minute))
    except ValueError:
        raise ReferenceError(f"{where}: time must be HH:MM, got {value!r}") from None


def load_reference(directory: Path) -> ReferenceData:
    accounts_doc = _read(directory / "accounts.toml")
    groups: dict[str, LeverageGroup] = {}
    for i, g in enumerate(accounts_doc.get("leverage_group", [])):
        where = f"accounts.toml leverage_group #{i + 1}"
        band = _decimal(g.get("recovery_band", "5"), where)
        if not band.is_finite() or band < 0:
            raise ReferenceError(f"{where}: recovery_band must be a number of percentage points >= 0, "
                                 f"got {g['recovery_band']!r}")
        groups[g["name"]] = LeverageGroup(
            name=g["name"],
            major_leverage=_decimal(g.get("major_leverage", "30"), where),
            other_leverage=_decimal(g.get("other_leverage", "20"), where),
            margin_call_level=_decimal(g.get("margin_call_level", "100"), where),
            stop_out_level=_decimal(g.get("stop_out_level", "50"), where),
            negative_balance_protection=bool(g.get("negative_balance_protection", True)),
            recovery_band=band)
    groups.setdefault("retail", LeverageGroup("retail"))
    accounts: dict[str, Account] = {}

    def add_account(raw: dict[str, Any], account_id: str, where: str) -> None:
        group = raw.get("leverage_group", "retail")
        if group not in groups:
            raise ReferenceError(f"{where}: unknown leverage_group {group!r}")
        if account_id in accounts:
            raise ReferenceError(f"{where}: account {account_id} defined twice")
        limits = {_currency(c, where): _decimal(v, where)
                  for c, v in raw.get("exposure_limits", {}).items()}
        accounts[account_id] = Account(
            account_id=account_id, currency=_currency(raw.get("currency"), where),
            leverage_group=group, opening_balance=_decimal(raw.get("opening_balance", "0"), where),
            name=raw.get("name", ""), exposure_limits=limits)

    for i, raw in enumerate(accounts_doc.get("account", [])):
        add_account(raw, raw["account_id"], f"accounts.toml account #{i + 1}")
    for i, raw in enumerate(accounts_doc.get("account_range", [])):
        where = f"accounts.toml account_range #{i + 1}"
        for n in range(int(raw["first"]), int(raw["last"]) + 1):
            add_account(raw, f"{raw['prefix']}{n:0{int(raw.get('digits', 3))}d}", where)

    cps_doc = _read(directory / "counterparties.toml")
    counterparties: dict[str, Counterparty] = {}
    for i, raw in enumerate(cps_doc.get("counterparty", [])):
        where = f"counterparties.toml counterparty #{i + 1}"
        ssis = []
        for s in raw.get("ssis", []):
            valid_from = s.get("valid_from")
            if valid_from is not None and not isinstance(valid_from, date):
                raise ReferenceError(f"{where}: valid_from must be a date (2027-01-04)")
            ssis.append(Ssi(counterparty=raw["name"], currency=_currency(s["currency"], where),
                            bank_bic=s["bank_bic"], account=s["account"],
                            version=int(s.get("version", 1)), valid_from=valid_from))
        counterparties[raw["name"]] = Counterparty(raw["name"], tuple(ssis))

    pairs_doc = _read(directory / "pairs.toml")
    defaults = pairs_doc.get("defaults", {})
    default_tolerance = defaults.get("price_tolerance", "0.02")
    default_limits = _limits(defaults, PairLimits(), "pairs.toml defaults")
    band_age = defaults.get("price_band_max_age_s", 86_400)
    if isinstance(band_age, bool) or not isinstance(band_age, int) or band_age <= 0:
        raise ReferenceError(f"pairs.toml defaults: price_band_max_age_s must be a positive number of "
                             f"seconds, got {band_age!r}")
    pairs: dict[str, PairSettings] = {}
    for i, raw in enumerate(pairs_doc.get("pair", [])):
        where = f"pairs.toml pair #{i + 1}"
        try:
            pair = CurrencyPair.parse(raw["symbol"], raw.get("spot_lag"))
        except (KeyError, ValueError) as exc:
            raise ReferenceError(f"{where}: {exc}") from None
        pairs[pair.symbol] = PairSettings(
            pair=pair, price_tolerance=_decimal(raw.get("price_tolerance", default_tolerance), where),
            decimals=int(raw.get("decimals", 5)), limits=_limits(raw, default_limits, where))

    settle_doc = _read(directory / "settlement.toml")

    def cut_off(raw: dict[str, Any], currency: str, where: str) -> CutOff:
        return CutOff(currency=currency, at=_time(raw.get("at", "16:00"), where),
                      timezone=raw.get("timezone", "Europe/London"),
                      days_before=int(raw.get("days_before", 1)))

    default = cut_off(settle_doc.get("default", {}), "*", "settlement.toml default")
    cut_offs = {c["currency"]: cut_off(c, _currency(c["currency"], "settlement.toml"), "settlement.toml")
                for c in settle_doc.get("cut_off", [])}
    return ReferenceData(accounts=accounts, leverage_groups=groups, counterparties=counterparties,
                         pairs=pairs, cut_offs=cut_offs, default_cut_off=default,
                         default_limits=default_limits, price_band_max_age=timedelta(seconds=band_age))


_LIMIT_KEYS = ("max_qty", "price_band", "min_px", "max_px")


def _limits(raw: dict[str, Any], base: PairLimits, where: str) -> PairLimits:
    """``base`` with the limits ``raw`` gives (decimal strings)."""
    given = {key: _decimal(raw[key], f"{where} {key}") for key in _LIMIT_KEYS if key in raw}
    try:
        return replace(base, **given)
    except ValueError as exc:
        raise ReferenceError(f"{where}: {exc}") from None
