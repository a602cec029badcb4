"""Reference data: the shipped files load, and the shared core types behave."""

from __future__ import annotations

import hashlib
from datetime import date, time
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.config import PROJECT_ROOT
from adapters.reference import ReferenceError, load_reference
from stp.breaks import Break, BreakType, Severity
from stp.reference import LeverageGroup
from stp.valuedates import CurrencyPair

REF = PROJECT_ROOT / "config" / "reference"


def test_shipped_reference_data_loads() -> None:
    ref = load_reference(REF)
    assert {f"ACC{i:03d}" for i in range(1, 21)} <= set(ref.accounts)
    acc1 = ref.accounts["ACC001"]
    assert acc1.currency == "USD" and acc1.opening_balance == Decimal("25000000.00")
    assert acc1.exposure_limits["EUR"] == Decimal("400000000")
    assert ref.accounts["ACC004"].currency == "JPY"
    assert ref.leverage_groups["retail"].major_leverage == Decimal(30)
    assert ref.pairs["USD/CAD"].pair.spot_lag == 1 and ref.pairs["EUR/USD"].pair.spot_lag == 2
    assert ref.pairs["USD/TRY"].price_tolerance == Decimal("0.05")
    assert ref.cut_off("JPY").timezone == "Asia/Tokyo" and ref.cut_off("EUR").at == time(16, 0)
    # the simulators' pairs are all known
    from fixsim.scenario import DEFAULT_PAIRS

    assert set(DEFAULT_PAIRS) <= ref.symbols


def test_ssi_versions_and_missing_ssi() -> None:
    lp1 = load_reference(REF).counterparties["LP1"]
    assert lp1.ssi("EUR", date(2026, 12, 1)).version == 1          # type: ignore[union-attr]  # REF defines this SSI
    assert lp1.ssi("EUR", date(2027, 1, 4)).version == 2           # type: ignore[union-attr]  # REF defines this SSI
    assert load_reference(REF).counterparties["LP2"].ssi("CAD") is None


def test_esma_leverage() -> None:
    retail = LeverageGroup("retail")
    assert retail.leverage(CurrencyPair.parse("EUR/USD")) == 30
    assert retail.leverage(CurrencyPair.parse("USD/JPY")) == 30
    assert retail.leverage(CurrencyPair.parse("AUD/USD")) == 20     # AUD is not a major currency
    assert retail.leverage(CurrencyPair.parse("EUR/SEK")) == 20


def test_break_id_is_stable_and_keyed() -> None:
    a = Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": "E1"}, "price differs")
    b = Break(BreakType.MISMATCH, {"exec_id": "E1", "session": "LP1"}, "other words",
              ours={"last_px": "1.1"})
    c = Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": "E2"}, "price differs")
    assert a.break_id == b.break_id != c.break_id
    # stable across processes: a hash of the type and the sorted keys
    expected = hashlib.blake2b(b"mismatch\x01exec_id=E1\x01session=LP1", digest_size=12).hexdigest()
    assert a.break_id == expected == "2db966c6268f1d6e87dacec7"
    assert a.level is Severity.HIGH
    assert Break(BreakType.SSI_MISSING, {}, "x").level is Severity.CRITICAL


def test_bad_reference_files(tmp_path: Path) -> None:
    for name in ("counterparties.toml", "pairs.toml", "settlement.toml"):
        (tmp_path / name).write_text((REF / name).read_text())
    (tmp_path / "accounts.toml").write_text(
        '[[account]]\naccount_id = "A"\ncurrency = "USD"\nopening_balance = 1000.5\n')
    with pytest.raises(ReferenceError, match="as strings"):
        load_reference(tmp_path)
    (tmp_path / "accounts.toml").write_text('[[account]]\naccount_id = "A"\ncurrency = "XXY"\n')
    with pytest.raises(ReferenceError, match="unknown currency"):
        load_reference(tmp_path)
    (tmp_path / "accounts.toml").write_text(
        '[[account]]\naccount_id = "A"\ncurrency = "USD"\nleverage_group = "vip"\n')
    with pytest.raises(ReferenceError, match="leverage_group"):
        load_reference(tmp_path)


def test_break_transitions() -> None:
    from stp.breaks import BreakState, IllegalBreakTransition, transition

    assert transition("open", "acknowledge", "ops", None) is BreakState.ACKNOWLEDGED
    assert transition("acknowledged", "resolve", "ops", "fixed") is BreakState.RESOLVED
    assert transition("open", "resolve", "ops", "fixed") is BreakState.RESOLVED
    for state, action, by, reason in [("acknowledged", "acknowledge", "ops", None),
                                      ("resolved", "resolve", "ops", "again"),
                                      ("resolved", "acknowledge", "ops", None),
                                      ("open", "resolve", "ops", " "),
                                      ("open", "acknowledge", "", None),
                                      ("open", "delete", "ops", None)]:
        with pytest.raises(IllegalBreakTransition):
            transition(state, action, by, reason)


def test_recovery_band_per_leverage_group(tmp_path: Path) -> None:
    """The margin hysteresis: shipped 5 points, 5 when a group leaves it out,
    a decimal string >= 0 otherwise."""
    ref = load_reference(REF)
    assert {g.name: g.recovery_band for g in ref.leverage_groups.values()} == \
        {"retail": Decimal(5), "professional": Decimal(5)}
    for name in ("counterparties.toml", "pairs.toml", "settlement.toml"):
        (tmp_path / name).write_text((REF / name).read_text())
    group = '[[leverage_group]]\nname = "vip"\nmargin_call_level = "120"\n'
    account = '[[account]]\naccount_id = "A"\ncurrency = "USD"\nleverage_group = "vip"\n'
    (tmp_path / "accounts.toml").write_text(group + account)
    loaded = load_reference(tmp_path).leverage_groups
    assert (loaded["vip"].margin_call_level, loaded["vip"].recovery_band) == (Decimal(120), Decimal(5))
    assert loaded["retail"].recovery_band == Decimal(5)           # the implicit retail group
    (tmp_path / "accounts.toml").write_text(group + 'recovery_band = "2.5"\n' + account)
    assert load_reference(tmp_path).leverage_groups["vip"].recovery_band == Decimal("2.5")
    (tmp_path / "accounts.toml").write_text(group + 'recovery_band = "0"\n' + account)
    assert load_reference(tmp_path).leverage_groups["vip"].recovery_band == 0
    for bad, match in (('"-1"', "recovery_band"), ('"NaN"', "recovery_band"), ("5.0", "as strings")):
        (tmp_path / "accounts.toml").write_text(group + f"recovery_band = {bad}\n" + account)
        with pytest.raises(ReferenceError, match=match):
            load_reference(tmp_path)
