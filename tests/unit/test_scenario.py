"""The simulators' scenario: deterministic, realistic, faults where asked."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import simplefix

from fixsim.dictionary import load_dictionary
from fixsim.fixmsg import er_body
from fixsim.scenario import FaultRates, Scenario, SimFill, wire_faults
from stp.fixwire import finish, parse_frame
from stp.valuedates import CurrencyPair, fx_trade_date, value_date

START = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)   # a Wednesday


# list[Any], not list[ScenarioEvent]: the tests read e.lp and e.platform without a None check
# where the run's faults cannot drop a side.
def events(count: int = 2000, faults: str = "", seed: int = 5, **kw: Any) -> list[Any]:
    return list(Scenario(seed=seed, count=count, faults=FaultRates.parse(faults), start=START,
                         **kw).events())


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = events(seed=5), events(seed=5), events(seed=6)
    assert [asdict(e.lp) for e in a] == [asdict(e.lp) for e in b]
    assert [e.lp.exec_id for e in a] != [e.lp.exec_id for e in c]
    assert [e.lp.last_px for e in a] != [e.lp.last_px for e in c]


def test_a_prefix_of_a_longer_run_is_the_shorter_run() -> None:
    short, long = events(500), events(1500)
    assert [asdict(e.lp) for e in short] == [asdict(e.lp) for e in long[:500]]


def test_pairs_settlement_and_value_dates() -> None:
    evs = events(3000)
    symbols = Counter(e.lp.symbol for e in evs)
    assert {"EUR/USD", "USD/JPY", "USD/CAD", "EUR/GBP", "GBP/JPY"} <= set(symbols)
    for e in evs:
        f = e.lp
        pair = CurrencyPair.parse(f.symbol)
        assert f.trade_date == fx_trade_date(f.transact_time, pair)
        assert f.settl_date == value_date(f.trade_date, pair, f.settl_type)
        assert f.currency == pair.base
    cad = next(e.lp for e in evs if e.lp.symbol == "USD/CAD" and e.lp.settl_type == "0")
    assert cad.settl_date == date(2026, 11, 19)       # T+1 pair, Wednesday trade
    eur = next(e.lp for e in evs if e.lp.symbol == "EUR/USD" and e.lp.settl_type == "0")
    assert eur.settl_date == date(2026, 11, 20)       # T+2
    forwards = [e.lp for e in evs if e.lp.settl_type != "0"]
    assert forwards and all(f.spot_rate is not None and f.forward_points is not None
                            and f.last_px == f.spot_rate + f.forward_points for f in forwards)


def test_prices_are_realistic_and_exact() -> None:
    for e in events(2000):
        f = e.lp
        decimals = 3 if f.symbol.endswith("JPY") else 5
        assert -f.last_px.as_tuple().exponent == decimals
        mid = {"EUR/USD": 1.085, "USD/JPY": 151.5, "GBP/USD": 1.27}.get(f.symbol)
        if mid is not None:
            assert abs(float(f.last_px) / mid - 1) < 0.02


def test_partial_fills_add_up_and_cancels_corrections_refer_back() -> None:
    evs = events(3000)
    by_exec: dict[str, SimFill] = {}
    cum: dict[str, Decimal] = Counter()  # type: ignore[assignment]  # Counter: a missing key reads 0
    for e in evs:
        f = e.lp
        if f.exec_type == "F":
            cum[f.order_id] += f.last_qty
            assert f.cum_qty == cum[f.order_id]
            assert f.leaves_qty == f.order_qty - f.cum_qty >= 0
            assert f.ord_status == ("2" if f.leaves_qty == 0 else "1")
        else:
            assert f.exec_type in ("G", "H")
            original = by_exec[f.exec_ref_id]
            assert (original.order_id, original.last_qty) == (f.order_id, f.last_qty)
            if f.exec_type == "G":
                assert f.last_px != original.last_px
        by_exec[f.exec_id] = f
    kinds = Counter(e.lp.exec_type for e in evs)
    assert kinds["G"] > 5 and kinds["H"] > 5
    assert len({e.lp.exec_id for e in evs}) == len(evs)


@pytest.mark.parametrize("fault,field", [("price", "last_px"), ("quantity", "last_qty"),
                                         ("side", "side"), ("value_date", "settl_date")])
def test_mismatch_fault_changes_one_field_on_one_side(fault: str, field: str) -> None:
    evs = events(2000, f"{fault}=0.05")
    hit = [e for e in evs if fault in e.faults]
    assert 40 < len(hit) < 180
    sides = Counter(e.fault_side for e in hit)
    assert sides["lp"] > 5 and sides["platform"] > 5
    for e in hit:
        assert e.lp is not None and e.platform is not None
        differing = [k for k in asdict(e.lp) if getattr(e.lp, k) != getattr(e.platform, k)]
        assert differing == [field]
        assert e.injected_by(e.fault_side) == (fault,)
    for e in evs:
        if fault not in e.faults:
            assert e.lp == e.platform


def test_missing_reuse_and_late_faults() -> None:
    evs = events(2000, "missing_lp=0.02,missing_platform=0.02,execid_reuse=0.02,late=0.02")
    missing_lp = [e for e in evs if e.lp is None]
    missing_pf = [e for e in evs if e.platform is None]
    assert missing_lp and missing_pf
    assert all(e.faults == ("missing_lp",) and e.platform is not None for e in missing_lp)
    reused = [e for e in evs if "execid_reuse" in e.faults]
    assert reused
    earlier: dict[str, SimFill] = {}
    for e in evs:
        if "execid_reuse" in e.faults:
            assert e.lp.exec_id in earlier and earlier[e.lp.exec_id] != e.lp
            assert e.platform.exec_id != e.lp.exec_id
        elif e.lp is not None:
            earlier.setdefault(e.lp.exec_id, e.lp)
    assert any("late" in e.faults for e in evs)


def test_switching_one_fault_does_not_move_the_others() -> None:
    a = [e.faults for e in events(1000, "price=0.05")]
    b = [tuple(f for f in e.faults if f == "price") for e in events(1000, "price=0.05,late=0.05")]
    assert a == b


def test_fault_spec_parsing() -> None:
    assert FaultRates.parse("price=0.1, garbled=0.01").garbled == 0.01
    assert FaultRates.parse("all=0.5").disconnect == 0.5
    assert FaultRates.parse("value-date=0.2").value_date == 0.2
    for bad in ("nonsense=0.1", "price", "price=2"):
        with pytest.raises(ValueError):
            FaultRates.parse(bad)
    import random

    rng = random.Random(1)
    hits = Counter(f for _ in range(2000) for f in wire_faults(FaultRates.parse("garbled=0.1"), rng))
    assert set(hits) == {"garbled"} and 120 < hits["garbled"] < 280


@pytest.mark.parametrize("begin", ["FIX.4.4", "FIX.4.2"])
def test_execution_reports_validate_against_the_standard_dictionary(begin: str) -> None:
    dictionary = load_dictionary(begin)
    for e in events(1500, "all=0.02"):
        for fill in (e.lp, e.platform):
            if fill is None:
                continue
            raw = finish(begin, "35=8\x0134=1\x0149=LP1\x0152=20261118-09:00:00.000\x0156=STP\x01"
                         + er_body(fill, begin))
            msg = parse_frame(raw)
            dictionary.validate(msg)
            assert msg[17] == fill.exec_id and msg[31] == str(fill.last_px)
            assert msg[64] == fill.settl_date.strftime("%Y%m%d")


def test_er_body_fields_and_simplefix_agree() -> None:
    fill: SimFill = events(50)[3].lp
    raw = finish("FIX.4.4", "35=8\x0134=7\x0149=LP1\x0152=20261118-09:00:00.000\x0156=STP\x01"
                 + er_body(fill))
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    sf = parser.get_message()
    assert sf is not None
    assert sf.get(17) == fill.exec_id.encode()
    assert sf.get(32) == str(fill.last_qty).encode()
    assert sf.get(150) == b"F"
    assert sf.get(60) == fill.transact_time.strftime("%Y%m%d-%H:%M:%S.%f")[:-3].encode()
    body42 = er_body(fill, "FIX.4.2")
    assert "\x0120=0\x01" in "\x01" + body42 and "460=" not in body42
