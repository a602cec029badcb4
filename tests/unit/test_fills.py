"""stp.fills: ExecutionReport / TradeCaptureReport -> Fill, Rejection (DK) or NotAFill."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields as dc_fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixsim.fixmsg import er_body, wire_settl_type
from fixsim.scenario import Scenario
from stp.fills import (
    CONTENT_TAGS,
    DK_OTHER,
    DK_QUANTITY_EXCEEDS_ORDER,
    DK_UNKNOWN_SYMBOL,
    DK_WRONG_SIDE,
    ExecKind,
    Fill,
    NotAFill,
    Rejection,
    Side,
    content_hash,
    normalise,
)
from stp.fixwire import fields_of, finish

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = datetime(2026, 11, 18, 9, 0, 1, 234567, tzinfo=UTC)
START = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)    # a Wednesday

# A complete FIX.4.4 trade (ExecType F), values as on the wire.
ER44: dict[int, str] = {
    35: "8", 37: "O-1", 11: "C-1", 1: "ACC001", 17: "E-1", 150: "F", 39: "2", 55: "EUR/USD",
    460: "4", 54: "1", 38: "1000000", 15: "EUR", 32: "1000000", 31: "1.08500", 151: "0",
    14: "1000000", 6: "1.08500", 75: "20261118", 60: "20261118-09:00:00.123", 63: "0",
    64: "20261120",
}


def er(base: dict[int, str] | None = None, /, **changes: str | None) -> dict[int, str]:
    """A copy of ``base`` (default ER44) with t<tag>=value changes (None removes)."""
    out = dict(ER44 if base is None else base)
    for key, value in changes.items():
        tag = int(key[1:])
        if value is None:
            out.pop(tag, None)
        else:
            out[tag] = value
    return out


# FIX.4.2: ExecTransType (20) says new/cancel/correct, ExecType (150) the order state.
ER42 = er(t460=None, t150="2", t20="0")


def norm(fields: dict[int, str], known: frozenset[str] | None = None) -> Fill | Rejection | NotAFill:
    return normalise(fields, "LP1", RECEIVED, known)


def fill(fields: dict[int, str]) -> Fill:
    result = norm(fields)
    assert isinstance(result, Fill), result
    return result


def rejection(fields: dict[int, str], known: frozenset[str] | None = None) -> Rejection:
    result = norm(fields, known)
    assert isinstance(result, Rejection), result
    return result


# --- message forms -------------------------------------------------------------------


def test_fix44_trade_is_a_fill_with_every_field() -> None:
    f = fill(ER44)
    assert f.kind is ExecKind.TRADE
    assert (f.session, f.exec_id, f.exec_ref_id, f.order_id, f.cl_ord_id, f.account) == \
        ("LP1", "E-1", None, "O-1", "C-1", "ACC001")
    assert f.symbol == "EUR/USD" and f.pair.currencies == ("EUR", "USD")
    assert f.side is Side.BUY and f.currency == "EUR"
    assert f.last_qty == Decimal("1000000") and f.last_px == Decimal("1.08500")
    assert f.order_qty == Decimal("1000000") and f.cum_qty == Decimal("1000000")
    assert f.leaves_qty == Decimal("0") and f.avg_px == Decimal("1.08500")
    assert f.trade_date == date(2026, 11, 18) and f.settl_date == date(2026, 11, 20)
    assert f.settl_type == "0"
    assert f.spot_rate is None and f.forward_points is None
    assert f.content_hash == content_hash(ER44)


@pytest.mark.parametrize(("exec_type", "kind"), [
    ("F", ExecKind.TRADE), ("G", ExecKind.CORRECT), ("H", ExecKind.CANCEL)])
def test_fix44_exec_types_that_are_trades(exec_type: str, kind: ExecKind) -> None:
    f = fill(er(t150=exec_type, t19="E-0"))
    assert f.kind is kind
    assert f.exec_ref_id == "E-0"


@pytest.mark.parametrize("exec_type", ["0", "4", "8", "I"])
def test_fix44_exec_types_that_are_not_trades(exec_type: str) -> None:
    result = norm(er(t150=exec_type))
    assert isinstance(result, NotAFill)
    assert result.exec_id == "E-1"
    assert exec_type in result.text


def test_fix44_without_exec_type_is_dont_know() -> None:
    r = rejection(er(t150=None))
    assert r.dk_reason == DK_OTHER and "ExecType (150)" in r.text


@pytest.mark.parametrize("exec_type", ["1", "2"])
def test_fix42_new_execution_with_fill_state_is_a_trade(exec_type: str) -> None:
    f = fill(er(ER42, t150=exec_type))
    assert f.kind is ExecKind.TRADE and f.exec_ref_id is None


def test_fix42_cancel_and_correct() -> None:
    cancel = fill(er(ER42, t20="1", t19="E-0"))
    correct = fill(er(ER42, t20="2", t19="E-0"))
    assert cancel.kind is ExecKind.CANCEL and cancel.exec_ref_id == "E-0"
    assert correct.kind is ExecKind.CORRECT and correct.exec_ref_id == "E-0"


def test_fix42_new_order_acknowledgement_is_not_a_fill() -> None:
    result = norm(er(ER42, t150="0", t39="0", t32="0", t31="0"))
    assert isinstance(result, NotAFill)


def test_fix42_status_report_is_not_a_fill() -> None:
    result = norm(er(ER42, t20="3", t150="2"))
    assert isinstance(result, NotAFill), result


def test_fix42_unknown_exec_trans_type_is_dont_know() -> None:
    r = rejection(er(ER42, t20="9"))
    assert r.dk_reason == DK_OTHER and "ExecTransType (20)" in r.text


TCR: dict[int, str] = {
    35: "AE", 571: "TR-1", 487: "0", 17: "E-1", 55: "USD/JPY", 54: "2", 32: "250000",
    31: "151.500", 15: "USD", 75: "20261118", 60: "20261118-09:00:00.500", 64: "20261120",
}


@pytest.mark.parametrize(("trans", "kind"), [
    ("0", ExecKind.TRADE), ("1", ExecKind.CANCEL), ("2", ExecKind.CORRECT)])
def test_trade_capture_report(trans: str, kind: ExecKind) -> None:
    fields = er(TCR, t487=trans, t572=None if trans == "0" else "TR-0")
    f = fill(fields)
    assert f.kind is kind
    assert f.exec_ref_id == (None if trans == "0" else "TR-0")
    assert f.order_id == "TR-1"                 # no OrderID: the TradeReportID
    assert f.side is Side.SELL and f.last_px == Decimal("151.500")


def test_trade_capture_report_defaults_to_new_and_prefers_order_id() -> None:
    f = fill(er(TCR, t487=None, t37="O-9"))
    assert f.kind is ExecKind.TRADE and f.order_id == "O-9"


def test_trade_capture_report_cancel_needs_trade_report_ref_id() -> None:
    r = rejection(er(TCR, t487="1"))
    assert r.dk_reason == DK_OTHER and "TradeReportRefID (572)" in r.text


def test_trade_capture_report_unknown_trans_type() -> None:
    r = rejection(er(TCR, t487="4"))
    assert r.dk_reason == DK_OTHER and "TradeReportTransType (487)" in r.text


# --- decimals ------------------------------------------------------------------------


def test_decimals_are_exact_and_keep_their_exponent() -> None:
    f = fill(er(t32="1000000.00", t38="2000000.00", t14="1000000.00", t151="1000000.00",
                t31="1.08500", t6="1.085000", t194="1.08400", t195="0.00100", t63="6"))
    assert f.last_px == Decimal("1.08500") and f.last_px.as_tuple().exponent == -5
    assert str(f.last_px) == "1.08500"
    assert str(f.last_qty) == "1000000.00" and f.last_qty.as_tuple().exponent == -2
    assert str(f.order_qty) == "2000000.00" and str(f.cum_qty) == "1000000.00"
    assert str(f.leaves_qty) == "1000000.00" and str(f.avg_px) == "1.085000"
    assert str(f.spot_rate) == "1.08400" and str(f.forward_points) == "0.00100"
    assert f.settl_type == "6"
    for field in dc_fields(Fill):
        assert not isinstance(getattr(f, field.name), float), field.name
    for name in ("last_qty", "last_px", "cum_qty", "leaves_qty", "avg_px", "order_qty",
                 "spot_rate", "forward_points"):
        assert type(getattr(f, name)) is Decimal, name


def test_price_that_a_float_would_round_stays_exact() -> None:
    f = fill(er(t31="1.0850000000000000001"))
    assert f.last_px == Decimal("1.0850000000000000001")
    assert f.last_px != Decimal("1.085")


# --- DontKnowTrade reasons -----------------------------------------------------------


@pytest.mark.parametrize("symbol", ["XXX/YYY", "EURUSD2", "EUR/USDX", "USD/USD", "", "ABC/USD"])
def test_unknown_symbol_is_dk_a(symbol: str) -> None:
    fields = er(t55=symbol)
    r = rejection(fields)
    if symbol == "":
        assert r.dk_reason == DK_OTHER and "Symbol (55) missing" in r.text
    else:
        assert r.dk_reason == DK_UNKNOWN_SYMBOL
        assert symbol in r.text
    assert r.exec_id == "E-1"


def test_symbol_not_in_known_symbols_is_dk_a() -> None:
    known = frozenset({"GBP/USD", "USD/JPY"})
    r = rejection(ER44, known)
    assert r.dk_reason == DK_UNKNOWN_SYMBOL and "EUR/USD" in r.text
    assert isinstance(norm(er(t55="GBP/USD", t15="GBP"), known), Fill)
    assert isinstance(norm(ER44, frozenset({"EUR/USD"})), Fill)


@pytest.mark.parametrize("side", ["3", "0", "B", "12"])
def test_wrong_side_is_dk_b(side: str) -> None:
    r = rejection(er(t54=side))
    assert r.dk_reason == DK_WRONG_SIDE
    assert "Side (54)" in r.text and repr(side) in r.text


def test_last_qty_above_order_qty_is_dk_c() -> None:
    r = rejection(er(t32="1000001", t14="1000000"))
    assert r.dk_reason == DK_QUANTITY_EXCEEDS_ORDER
    assert "LastQty 1000001" in r.text and "OrderQty 1000000" in r.text


def test_cum_qty_above_order_qty_is_dk_c() -> None:
    r = rejection(er(t32="500000", t14="1500000"))
    assert r.dk_reason == DK_QUANTITY_EXCEEDS_ORDER
    assert "CumQty 1500000" in r.text and "OrderQty 1000000" in r.text


def test_equal_quantities_are_fine_and_no_order_qty_means_no_check() -> None:
    assert isinstance(norm(er(t32="1000000.00", t38="1000000")), Fill)
    assert isinstance(norm(er(t38=None, t32="5000000", t14="5000000")), Fill)


@pytest.mark.parametrize(("tag", "name"), [
    (17, "ExecID"), (55, "Symbol"), (32, "LastQty"), (31, "LastPx"), (37, "OrderID"),
    (54, "Side")])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_required_field_is_dk_z_naming_field_and_tag(tag: int, name: str, how: str) -> None:
    fields = dict(ER44)
    if how == "absent":
        del fields[tag]
    else:
        fields[tag] = ""
    r = rejection(fields)
    assert r.dk_reason == DK_OTHER
    assert f"{name} ({tag}) missing" in r.text


@pytest.mark.parametrize("text", ["1,000", "abc", "1.0.0", "NaN", "Infinity", "-inf", "0x10", "1 000"])
def test_malformed_last_qty_is_dk_z(text: str) -> None:
    r = rejection(er(t32=text))
    assert r.dk_reason == DK_OTHER
    assert "LastQty (32)" in r.text and repr(text) in r.text


@pytest.mark.parametrize("text", ["1.08.5", "abc", "1,085"])
def test_malformed_last_px_is_dk_z(text: str) -> None:
    r = rejection(er(t31=text))
    assert r.dk_reason == DK_OTHER and "LastPx (31)" in r.text


@pytest.mark.parametrize("text", ["1_000", "1e6", " 1000"])
def test_non_fix_float_last_qty_is_dk_z(text: str) -> None:
    r = rejection(er(t32=text))
    assert r.dk_reason == DK_OTHER and "LastQty (32)" in r.text


@pytest.mark.parametrize(("tag", "name", "value"), [
    (32, "LastQty", "0"), (32, "LastQty", "-1000"), (32, "LastQty", "0.00"),
    (31, "LastPx", "0"), (31, "LastPx", "-1.085"), (38, "OrderQty", "0")])
def test_non_positive_quantity_or_price_is_dk_z(tag: int, name: str, value: str) -> None:
    r = rejection(er(**{f"t{tag}": value}))
    assert r.dk_reason == DK_OTHER
    assert f"{name} ({tag}) must be positive" in r.text


@pytest.mark.parametrize("tag", [14, 151])
def test_negative_cum_or_leaves_is_dk_z(tag: int) -> None:
    r = rejection(er(**{f"t{tag}": "-1"}))
    assert r.dk_reason == DK_OTHER and "cannot be negative" in r.text


@pytest.mark.parametrize("exec_type", ["G", "H"])
def test_correct_or_cancel_without_exec_ref_id_is_dk_z(exec_type: str) -> None:
    r = rejection(er(t150=exec_type))
    assert r.dk_reason == DK_OTHER and "ExecRefID (19) missing" in r.text
    r42 = rejection(er(ER42, t20="1" if exec_type == "H" else "2"))
    assert r42.dk_reason == DK_OTHER and "ExecRefID (19) missing" in r42.text


@pytest.mark.parametrize("text", [
    "2026-11-18 09:00:00", "20261118 09:00:00", "20261118-09:00", "20261118-25:00:00",
    "20261118-09:61:00", "20261332-09:00:00", "20261118-09:00:00,123", "20261118-09:00:00.",
    "20261118-09:00:00.12a", "x" * 17])
def test_bad_transact_time_is_dk_z(text: str) -> None:
    r = rejection(er(t60=text))
    assert r.dk_reason == DK_OTHER
    assert "TransactTime (60)" in r.text and repr(text) in r.text


def test_transact_time_with_trailing_garbage_is_dk_z() -> None:
    r = rejection(er(t60="20261118-09:00:00.123456xyz"))
    assert "TransactTime (60)" in r.text


@pytest.mark.parametrize(("tag", "name"), [(64, "SettlDate"), (75, "TradeDate")])
@pytest.mark.parametrize("text", ["2026-11-20", "20261131", "20261300", "2026112", "2026112a"])
def test_bad_dates_are_dk_z(tag: int, name: str, text: str) -> None:
    r = rejection(er(**{f"t{tag}": text}))
    assert r.dk_reason == DK_OTHER
    assert f"{name} ({tag}) is not a date" in r.text and repr(text) in r.text


@pytest.mark.parametrize("currency", ["JPY", "GBP", "usd"])
def test_currency_outside_the_pair_is_dk_z(currency: str) -> None:
    r = rejection(er(t15=currency))
    assert r.dk_reason == DK_OTHER
    assert "Currency (15)" in r.text and "EUR/USD" in r.text


def test_currency_may_be_the_quote_or_default_to_the_base() -> None:
    assert fill(er(t15="USD")).currency == "USD"
    assert fill(er(t15=None)).currency == "EUR"


def test_rejection_text_always_present() -> None:
    for fields in (er(t55="XXX/YYY"), er(t54="3"), er(t32="2000000"), er(t17=None)):
        r = rejection(fields)
        assert r.text and len(r.text) > 10


# --- timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "micro"), [
    ("20261118-09:00:00", 0), ("20261118-09:00:00.123", 123000), ("20261118-09:00:00.1", 100000),
    ("20261118-09:00:00.123456", 123456), ("20261118-09:00:00.000001", 1),
    ("20261118-09:00:00.123456789", 123456)])
def test_transact_time_parsed_in_utc_and_received_at_passed_through(text: str, micro: int) -> None:
    f = fill(er(t60=text))
    assert f.transact_time == datetime(2026, 11, 18, 9, 0, 0, micro, tzinfo=UTC)
    assert f.transact_time is not None and f.transact_time.utcoffset() == timedelta(0)
    assert f.received_at is RECEIVED


def test_transact_time_is_optional() -> None:
    assert fill(er(t60=None)).transact_time is None
    assert fill(er(t64=None, t75=None)).settl_date is None


# --- content hash --------------------------------------------------------------------

# Computed once (blake2b-128 of the CONTENT_TAGS values); must never change, or
# every stored fill would look like a conflict after an upgrade.
ER44_HASH = "6358c5bebba17d8fee3c924dc1f28a49"


def test_content_hash_is_a_stable_literal() -> None:
    assert content_hash(ER44) == ER44_HASH
    assert fill(ER44).content_hash == ER44_HASH


def test_content_hash_is_the_same_in_another_process() -> None:
    code = ("import sys; from stp.fills import content_hash; "
            f"print(content_hash({ER44!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == ER44_HASH


def test_possdup_resend_hashes_the_same() -> None:
    original = er(t34="12", t52="20261118-09:00:00.200", t49="LP1", t56="STP", t8="FIX.4.4",
                  t9="250", t10="123")
    resend = er(original, t34="57", t43="Y", t52="20261118-09:05:00.000",
                t122="20261118-09:00:00.200", t97="Y", t9="280", t10="045")
    assert content_hash(original) == content_hash(resend) == ER44_HASH
    assert fill(original).content_hash == fill(resend).content_hash


@pytest.mark.parametrize("change", [
    {"t31": "1.08501"}, {"t31": "1.085"}, {"t32": "999000"}, {"t54": "2"}, {"t64": "20261123"},
    {"t150": "G", "t19": "E-0"}, {"t55": "GBP/USD"}, {"t60": "20261118-09:00:00.124"},
    {"t17": "E-2"}, {"t37": "O-2"}, {"t1": "ACC002"}, {"t194": "1.08400"}, {"t63": "6"}])
def test_content_hash_changes_with_business_content(change: dict[str, str]) -> None:
    assert content_hash(er(**change)) != ER44_HASH


def test_content_hash_absent_and_empty_are_the_same_but_values_do_not_bleed() -> None:
    assert content_hash(er(t11="")) == content_hash(er(t11=None))
    # the separator keeps adjacent fields apart: "A"+"BC" differs from "AB"+"C"
    assert content_hash(er(t1="A", t6="BC")) != content_hash(er(t1="AB", t6="C"))
    assert 34 not in CONTENT_TAGS and 43 not in CONTENT_TAGS and 52 not in CONTENT_TAGS
    assert 122 not in CONTENT_TAGS and 97 not in CONTENT_TAGS


# --- property: the scenario generator's reports normalise to its fills -------------

FIX_HEADER = "35=8\x0134=1\x0149=LP1\x0152=20261118-09:00:00.000\x0156=STP\x01"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**31 - 1),
       begin=st.sampled_from(["FIX.4.2", "FIX.4.4"]),
       day=st.integers(min_value=0, max_value=400))
def test_scenario_reports_normalise_to_their_fills(seed: int, begin: str, day: int) -> None:
    start = START + timedelta(days=day, hours=day % 13)
    scenario = Scenario(seed=seed, count=60, start=start, cancel_rate=0.1, correct_rate=0.1,
                        forward_rate=0.3)
    for event in scenario.events():
        sim = event.lp
        assert sim is not None
        raw = finish(begin, FIX_HEADER + er_body(sim, begin)).decode("latin-1")
        result = normalise(fields_of(raw), "LP1", RECEIVED)
        assert isinstance(result, Fill), (result, raw.replace("\x01", "|"))
        assert result.kind.value == sim.exec_type
        assert result.exec_id == sim.exec_id and result.exec_ref_id == sim.exec_ref_id
        assert result.last_qty == sim.last_qty and str(result.last_qty) == str(sim.last_qty)
        assert result.last_px == sim.last_px and str(result.last_px) == str(sim.last_px)
        assert result.side.value == sim.side and result.symbol == sim.symbol
        assert result.settl_date == sim.settl_date and result.trade_date == sim.trade_date
        assert result.settl_type == wire_settl_type(sim.settl_type)
        assert (result.order_id, result.cl_ord_id, result.account) == \
            (sim.order_id, sim.cl_ord_id, sim.account)
        assert result.currency == sim.currency
        assert (result.order_qty, result.cum_qty, result.leaves_qty, result.avg_px) == \
            (sim.order_qty, sim.cum_qty, sim.leaves_qty, sim.avg_px)
        assert (result.spot_rate, result.forward_points) == (sim.spot_rate, sim.forward_points)
        assert result.transact_time == sim.transact_time.replace(
            microsecond=sim.transact_time.microsecond // 1000 * 1000)
        assert result.received_at is RECEIVED
