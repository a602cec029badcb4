"""stp.confirm: validation of fills and LP/platform matching.

Dates are real: Mon 2017-07-03 is the day before US Independence Day (Tue
2017-07-04, a USD holiday, TARGET open), so EUR/USD spot is Wed 2017-07-05
(a joint calendar would wrongly give 07-06).  USD/CAD is T+1.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.breaks import Break, BreakType
from stp.confirm import COMPARED_FIELDS, Difference, Matcher, MatchKey, MatchState, Validator
from stp.fills import ExecKind, Fill, Side
from stp.reference import PairSettings, ReferenceData
from stp.valuedates import CurrencyPair

MON = date(2017, 7, 3)          # Monday; Tue 07-04 is a USD holiday
WED = date(2017, 7, 5)
T0 = datetime(2017, 7, 3, 14, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)
EURUSD = CurrencyPair.parse("EUR/USD")
USDCAD = CurrencyPair.parse("USD/CAD")
USDJPY = CurrencyPair.parse("USD/JPY")


def reference() -> ReferenceData:
    pairs = {
        "EUR/USD": PairSettings(EURUSD),                                   # 2% tolerance
        "USD/CAD": PairSettings(USDCAD),
        "USD/JPY": PairSettings(USDJPY, price_tolerance=Decimal("0.01"), decimals=3),
    }
    return ReferenceData(accounts={}, leverage_groups={}, counterparties={}, pairs=pairs)


BASE = Fill(
    session="LP1", exec_id="E-1", kind=ExecKind.TRADE, exec_ref_id=None, order_id="O-1",
    cl_ord_id="C-1", account="ACC001", pair=EURUSD, side=Side.BUY, currency="EUR",
    last_qty=Decimal("1000000"), last_px=Decimal("1.10000"), cum_qty=Decimal("1000000"),
    leaves_qty=Decimal("0"), avg_px=Decimal("1.10000"), order_qty=Decimal("1000000"),
    trade_date=MON, settl_type="0", settl_date=WED,
    transact_time=T0, received_at=T0,
)


def fill(**changes: Any) -> Fill:
    return dataclasses.replace(BASE, **changes)


def types(breaks: list[Break]) -> list[BreakType]:
    return [b.type for b in breaks]


# --- validation: pair, side, quantity ---------------------------------------------------


def test_a_valid_fill_has_no_breaks() -> None:
    assert Validator(reference()).validate(fill()) == []


def test_unknown_pair() -> None:
    breaks = Validator(reference()).validate(fill(pair=CurrencyPair.parse("GBP/CHF")))
    assert types(breaks) == [BreakType.UNKNOWN_PAIR]
    assert breaks[0].theirs == {"pair": "GBP/CHF"}


def test_side_must_be_buy_or_sell() -> None:
    breaks = Validator(reference()).validate(fill(side="3"))
    assert types(breaks) == [BreakType.INVALID_FILL]
    assert breaks[0].keys["rule"] == "side"


@pytest.mark.parametrize("qty", [Decimal(0), Decimal(-5)])
def test_quantity_must_be_positive(qty: Decimal) -> None:
    breaks = Validator(reference()).validate(fill(last_qty=qty, cum_qty=None, leaves_qty=None))
    assert types(breaks) == [BreakType.INVALID_FILL]
    assert breaks[0].keys["rule"] == "last_qty"


def test_distinct_breaks_of_one_fill_have_distinct_ids() -> None:
    breaks = Validator(reference()).validate(fill(side="3", last_qty=Decimal(0), cum_qty=None))
    assert len({b.break_id for b in breaks}) == len(breaks) == 2


# --- validation: price tolerance --------------------------------------------------------


def test_first_price_is_accepted_and_becomes_the_reference() -> None:
    v = Validator(reference())
    assert v.validate(fill(last_px=Decimal("1.5"))) == []
    assert v.reference_price("EUR/USD") == Decimal("1.5")


@pytest.mark.parametrize(("px", "ok"), [
    (Decimal("1.12200"), True),    # 1.10000 + 2% exactly
    (Decimal("1.07800"), True),    # 1.10000 - 2% exactly
    (Decimal("1.12201"), False),
    (Decimal("1.07799"), False),
])
def test_price_tolerance_boundary(px: Decimal, ok: bool) -> None:
    v = Validator(reference())
    v.validate(fill(exec_id="E-0", order_id="O-0"))
    breaks = v.validate(fill(last_px=px))
    if ok:
        assert breaks == []
        assert v.reference_price("EUR/USD") == px
    else:
        assert types(breaks) == [BreakType.PRICE_OUT_OF_TOLERANCE]
        assert breaks[0].ours["last_px"] == "1.10000"
        assert breaks[0].theirs == {"last_px": str(px)}
        assert v.reference_price("EUR/USD") == Decimal("1.10000")   # a bad price does not move it


def test_tolerance_is_per_pair() -> None:
    v = Validator(reference())
    jpy = {"pair": USDJPY, "currency": "USD", "settl_date": None}
    v.validate(fill(exec_id="J-0", order_id="J-0", last_px=Decimal("100.000"), **jpy))
    assert v.validate(fill(exec_id="J-1", order_id="J-1", last_px=Decimal("101.000"), **jpy)) == []
    out = v.validate(fill(exec_id="J-2", order_id="J-2", last_px=Decimal("102.011"), **jpy))
    assert types(out) == [BreakType.PRICE_OUT_OF_TOLERANCE]
    # EUR/USD's reference is independent
    assert v.validate(fill(last_px=Decimal("1.3"))) == []


def test_cancels_and_corrections_skip_the_price_check_only() -> None:
    v = Validator(reference())
    v.validate(fill(exec_id="E-0", order_id="O-0"))
    far = Decimal("2.00000")
    for kind in (ExecKind.CANCEL, ExecKind.CORRECT):
        assert v.validate(fill(exec_id=f"X-{kind}", kind=kind, exec_ref_id="E-0", last_px=far)) == []
        wrong_date = fill(exec_id=f"Y-{kind}", kind=kind, exec_ref_id="E-0", last_px=far,
                          settl_date=date(2017, 7, 6))
        assert types(v.validate(wrong_date)) == [BreakType.VALUE_DATE_MISMATCH]
    assert v.reference_price("EUR/USD") == Decimal("1.10000")


def test_set_reference_price_after_a_market_gap() -> None:
    v = Validator(reference())
    v.validate(fill(exec_id="E-0", order_id="O-0"))
    v.set_reference_price("EUR/USD", Decimal("1.30000"))
    assert v.validate(fill(last_px=Decimal("1.31"))) == []


# --- validation: value dates ------------------------------------------------------------


def test_eurusd_spot_over_the_fourth_of_july() -> None:
    v = Validator(reference())
    assert v.validate(fill(settl_date=date(2017, 7, 5))) == []
    breaks = v.validate(fill(exec_id="E-2", order_id="O-2", settl_date=date(2017, 7, 6)))
    assert types(breaks) == [BreakType.VALUE_DATE_MISMATCH]
    assert breaks[0].ours == {"value_date": "2017-07-05"}
    assert breaks[0].theirs["settl_date"] == "2017-07-06"


def test_usdcad_is_t_plus_1() -> None:
    v = Validator(reference())
    cad = {"pair": USDCAD, "currency": "USD", "last_px": Decimal("1.3"), "trade_date": WED}
    assert v.validate(fill(settl_date=date(2017, 7, 6), **cad)) == []          # Thu
    out = v.validate(fill(exec_id="E-2", order_id="O-2", settl_date=date(2017, 7, 7), **cad))
    assert types(out) == [BreakType.VALUE_DATE_MISMATCH]
    # SettlType 3 is T+2 whatever the pair
    assert v.validate(fill(exec_id="E-3", order_id="O-3", settl_type="3",
                           settl_date=date(2017, 7, 7), **cad)) == []


@pytest.mark.parametrize(("settl_type", "expected"), [
    ("", date(2017, 7, 5)),
    ("0", date(2017, 7, 5)),
    ("1", date(2017, 7, 3)),       # cash
    ("2", date(2017, 7, 5)),       # tom: 07-04 is a USD holiday
    ("3", date(2017, 7, 5)),
    ("C", date(2017, 7, 6)),       # spot-next
    ("M1", date(2017, 8, 7)),      # one month after spot, 08-05 is a Saturday
])
def test_settl_types_known_answers(settl_type: str, expected: date) -> None:
    v = Validator(reference())
    assert v.validate(fill(settl_type=settl_type, settl_date=expected)) == []
    wrong = v.validate(fill(exec_id="E-2", order_id="O-2", settl_type=settl_type,
                            settl_date=expected + timedelta(days=7)))
    assert types(wrong) == [BreakType.VALUE_DATE_MISMATCH]
    assert wrong[0].ours == {"value_date": expected.isoformat()}


def test_missing_settl_date_is_accepted_with_the_computed_one() -> None:
    v = Validator(reference())
    f = fill(settl_date=None)
    assert v.validate(f) == []
    assert v.value_date_of(f) == WED


def test_trade_date_from_transact_time_rolls_at_17_new_york() -> None:
    v = Validator(reference())
    # 22:00 UTC Monday = 18:00 New York: trade date Tue 07-04, EUR/USD spot Thu 07-06
    late = datetime(2017, 7, 3, 22, 0, tzinfo=UTC)
    assert v.validate(fill(trade_date=None, transact_time=late, settl_date=date(2017, 7, 6))) == []
    early = datetime(2017, 7, 3, 20, 0, tzinfo=UTC)
    out = v.validate(fill(exec_id="E-2", order_id="O-2", trade_date=None, transact_time=early,
                          settl_date=date(2017, 7, 6)))
    assert types(out) == [BreakType.VALUE_DATE_MISMATCH]


@pytest.mark.parametrize("settl_type", ["6", "B"])
def test_forward_by_date(settl_type: str) -> None:
    v = Validator(reference())
    ok = [date(2017, 7, 5), date(2017, 9, 15)]                   # spot itself, a later good day
    for i, d in enumerate(ok):
        assert v.validate(fill(exec_id=f"E-{i}", order_id=f"O-{i}", settl_type=settl_type,
                               settl_date=d)) == []
    bad: list[date | None] = [
           date(2017, 7, 4),            # before spot (and a USD holiday)
           date(2017, 12, 25),          # Christmas: TARGET and USD closed
           date(2017, 9, 16),           # Saturday
           None]                        # a forward needs its date
    for i, b in enumerate(bad):
        out = v.validate(fill(exec_id=f"F-{i}", order_id=f"P-{i}", settl_type=settl_type, settl_date=b))
        assert types(out) == [BreakType.VALUE_DATE_MISMATCH], b


def test_unsupported_settl_type() -> None:
    out = Validator(reference()).validate(fill(settl_type="Z9"))
    assert types(out) == [BreakType.VALUE_DATE_MISMATCH]


def test_configured_spot_lag_is_used() -> None:
    ref = reference()
    ref.pairs["EUR/USD"] = PairSettings(CurrencyPair("EUR", "USD", spot_lag=1))
    v = Validator(ref)
    # T+1 from Mon: Tue 07-04 is a USD holiday, rolled to Wed 07-05; from Wed: Thu 07-06
    assert v.validate(fill(trade_date=WED, settl_date=date(2017, 7, 6))) == []


# --- validation: CumQty / LeavesQty -----------------------------------------------------


def partial(n: int, qty: str, cum: str, order: str = "3000000", **changes: Any) -> Fill:
    order_qty = Decimal(order)
    changes.setdefault("leaves_qty", order_qty - Decimal(cum))
    return fill(exec_id=f"E-{n}", last_qty=Decimal(qty), cum_qty=Decimal(cum),
                order_qty=order_qty, **changes)


PARTIALS = [partial(1, "1000000", "1000000"), partial(2, "500000", "1500000"),
            partial(3, "1500000", "3000000")]


def test_partial_fills_in_order() -> None:
    v = Validator(reference())
    assert [v.validate(f) for f in PARTIALS] == [[], [], []]
    assert v.order_count == 0              # complete: forgotten


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (2, 1, 0), (1, 0, 2), (0, 2, 1)])
def test_partial_fills_reordered_are_not_a_false_alarm(order: tuple[int, int, int]) -> None:
    v = Validator(reference())
    assert [v.validate(PARTIALS[i]) for i in order] == [[], [], []]


def test_cum_qty_above_order_qty() -> None:
    out = Validator(reference()).validate(partial(1, "1000000", "3500000", leaves_qty=Decimal(0)))
    assert types(out) == [BreakType.INVALID_FILL]
    assert "exceeds OrderQty" in out[0].summary


def test_cum_qty_below_last_qty() -> None:
    out = Validator(reference()).validate(partial(1, "1000000", "500000"))
    assert types(out) == [BreakType.INVALID_FILL]


def test_leaves_qty_must_be_order_minus_cum_or_zero() -> None:
    v = Validator(reference())
    out = v.validate(partial(1, "1000000", "1000000", leaves_qty=Decimal("1500000")))
    assert types(out) == [BreakType.INVALID_FILL]
    assert out[0].theirs["leaves_qty"] == "1500000"
    # 151=0 on a partial fill (IOC remainder, some venues): accepted
    assert v.validate(partial(2, "1000000", "1000000", order_id="O-2", leaves_qty=Decimal(0))) == []


def test_two_fills_claiming_the_same_cum_qty() -> None:
    v = Validator(reference())
    assert v.validate(partial(1, "1000000", "1000000")) == []
    out = v.validate(partial(2, "1000000", "1000000"))
    assert types(out) == [BreakType.INVALID_FILL]
    assert "E-1" in out[0].summary


def test_cum_qty_impossible_given_earlier_fills_out_of_order() -> None:
    v = Validator(reference())
    # the fill at CumQty 3,000,000 covers (1,500,000, 3,000,000]
    assert v.validate(PARTIALS[2]) == []
    # a fill claiming (2,000,000, 2,500,000] cannot exist beside it
    out = v.validate(partial(9, "500000", "2500000"))
    assert types(out) == [BreakType.INVALID_FILL]
    # the real ones still pass: the bad fill was not remembered
    assert v.validate(PARTIALS[0]) == []
    assert v.validate(PARTIALS[1]) == []


def test_orders_are_per_session() -> None:
    v = Validator(reference())
    assert v.validate(partial(1, "1000000", "1000000")) == []
    assert v.validate(partial(1, "1000000", "1000000", session="LP2")) == []


def test_cancel_rebases_the_order() -> None:
    v = Validator(reference())
    assert v.validate(PARTIALS[0]) == []
    assert v.validate(PARTIALS[1]) == []
    bust = partial(4, "500000", "1000000", kind=ExecKind.CANCEL, exec_ref_id="E-2")
    assert v.validate(bust) == []
    # after the bust the venue counts CumQty from the new base: no false alarm
    assert v.validate(partial(5, "500000", "1500000")) == []


def test_cancel_with_cum_below_last_is_fine() -> None:
    bust = partial(4, "1000000", "0", kind=ExecKind.CANCEL, exec_ref_id="E-1")
    assert Validator(reference()).validate(bust) == []


def test_order_state_is_bounded() -> None:
    v = Validator(reference(), max_orders=3)
    for i in range(10):
        v.validate(partial(1, "1000000", "1000000", order_id=f"O-{i}"))
    assert v.order_count == 3


# --- matching ---------------------------------------------------------------------------


def lp(**changes: Any) -> Fill:
    return fill(**changes)


def pf(**changes: Any) -> Fill:
    changes.setdefault("session", "PF1")
    return fill(**changes)


def matcher(key: str = "exec_id", lp_for_platform: dict[str, str] | None = None,
            **kw: Any) -> Matcher:
    return Matcher(window=WINDOW, price_tolerance=kw.pop("price_tolerance", Decimal("0.00001")),
                   qty_tolerance=kw.pop("qty_tolerance", Decimal("0")),
                   key_by_platform={"PF1": key}, lp_for_platform=lp_for_platform)


@pytest.mark.parametrize("lp_first", [True, False])
def test_confirmed(lp_first: bool) -> None:
    m = matcher()
    if lp_first:
        first, second = m.add_lp(lp(), T0), m.add_platform(pf(), T0 + timedelta(seconds=1))
    else:
        first, second = m.add_platform(pf(), T0), m.add_lp(lp(), T0 + timedelta(seconds=1))
    assert first.state == "received"
    assert second.state == "confirmed"
    assert second.counterpart == (lp() if lp_first else pf())
    assert len(m) == 0
    assert m.expire(T0 + 10 * WINDOW) == []


def test_mismatched_reports_fields_and_both_values() -> None:
    m = matcher()
    m.add_lp(lp(), T0)
    r = m.add_platform(pf(last_qty=Decimal("1000001"), side=Side.SELL), T0)
    assert r.state == MatchState.MISMATCHED
    assert r.differences == (Difference("side", Side.BUY, Side.SELL),
                             Difference("last_qty", Decimal("1000000"), Decimal("1000001")))
    assert r.break_ is not None and r.break_.type is BreakType.MISMATCH
    assert r.break_.ours == {"side": "2", "last_qty": "1000001"}          # platform
    assert r.break_.theirs == {"side": "1", "last_qty": "1000000"}        # LP
    assert r.break_.keys == {"session": "LP1", "exec_id": "E-1", "platform_session": "PF1",
                             "platform_exec_id": "E-1"}
    assert len(m) == 0


@pytest.mark.parametrize(("field", "delta", "ok"), [
    ("last_px", "0.00010", True), ("last_px", "0.00011", False),
    ("last_qty", "10", True), ("last_qty", "10.01", False),
])
def test_matching_tolerance_boundary(field: str, delta: str, ok: bool) -> None:
    m = matcher(price_tolerance=Decimal("0.0001"), qty_tolerance=Decimal("10"))
    m.add_lp(lp(), T0)
    r = m.add_platform(pf(**{field: getattr(BASE, field) + Decimal(delta)}), T0)
    assert r.state == ("confirmed" if ok else "mismatched")
    if not ok:
        assert r.fields == (field,)


def test_unmatched_lp_after_the_window() -> None:
    m = matcher()
    assert m.add_lp(lp(), T0).state == "received"
    assert m.expire(T0 + WINDOW) == []                    # not older than the window yet
    breaks = m.expire(T0 + WINDOW + timedelta(microseconds=1))
    assert types(breaks) == [BreakType.UNMATCHED_LP]
    assert breaks[0].keys["session"] == "LP1" and breaks[0].theirs["exec_id"] == "E-1"
    assert len(m) == 0
    # forgotten: a late platform record waits on its own
    assert m.add_platform(pf(), T0 + 2 * WINDOW).state == "received"


def test_unmatched_platform_after_the_window() -> None:
    m = matcher()
    m.add_platform(pf(), T0)
    breaks = m.expire(T0 + 2 * WINDOW)
    assert types(breaks) == [BreakType.UNMATCHED_PLATFORM]
    assert breaks[0].keys["session"] == "PF1" and breaks[0].ours["exec_id"] == "E-1"
    assert m.pending_count == 0


def test_key_exec_id_needs_the_same_exec_id() -> None:
    m = matcher("exec_id")
    m.add_lp(lp(), T0)
    assert m.add_platform(pf(exec_id="P-1"), T0).state == "received"
    assert sorted(types(m.expire(T0 + 2 * WINDOW))) == [BreakType.UNMATCHED_LP,
                                                         BreakType.UNMATCHED_PLATFORM]


@pytest.mark.parametrize(("key", "other_ids"), [
    ("cl_ord_id", {"exec_id": "P-1", "order_id": "PO-1"}),
    ("order_id", {"exec_id": "P-1", "cl_ord_id": "PC-1"}),
])
def test_key_modes(key: str, other_ids: dict[str, str]) -> None:
    m = matcher(key)
    m.add_lp(lp(), T0)
    assert m.add_platform(pf(**other_ids), T0).state == "confirmed"
    # the configured key field itself must agree
    m.add_lp(lp(exec_id="E-2"), T0)
    assert m.add_platform(pf(**{**other_ids, key: "ZZZ"}), T0).state == "received"


def test_unknown_key_mode_and_platform() -> None:
    with pytest.raises(ValueError):
        Matcher(WINDOW, Decimal(0), Decimal(0), {"PF1": "trd_match_id"})
    with pytest.raises(ValueError):
        matcher().add_platform(pf(session="PF9"), T0)
    assert MatchKey("cl_ord_id") is MatchKey.CL_ORD_ID


def test_partials_sharing_a_key_reordered() -> None:
    m = matcher("cl_ord_id")
    a = {"exec_id": "E-1", "last_qty": Decimal("1000000")}
    b = {"exec_id": "E-2", "last_qty": Decimal("2000000")}
    assert m.add_lp(lp(**a), T0).state == "received"
    assert m.add_platform(pf(**b), T0).state == "received"       # not a mismatch with a
    assert m.add_lp(lp(**b), T0).state == "confirmed"
    assert m.add_platform(pf(**a), T0).state == "confirmed"
    assert m.expire(T0 + 10 * WINDOW) == []


def test_shared_key_disagreement_is_reported_at_expiry() -> None:
    m = matcher("cl_ord_id")
    m.add_lp(lp(), T0)
    assert m.add_platform(pf(last_px=Decimal("1.2")), T0 + timedelta(seconds=5)).state == "received"
    # the LP fill has expired, the platform's not yet: it may still find its twin
    assert m.expire(T0 + WINDOW + timedelta(seconds=1)) == []
    breaks = m.expire(T0 + WINDOW + timedelta(seconds=6))
    assert types(breaks) == [BreakType.MISMATCH]
    assert breaks[0].ours == {"last_px": "1.2"} and breaks[0].theirs == {"last_px": "1.10000"}
    assert len(m) == 0


def test_lp_session_without_platform_is_confirmed_on_validation() -> None:
    m = matcher(lp_for_platform={"PF1": "LP1"})
    assert m.requires_platform("LP1") and not m.requires_platform("LP2")
    r = m.add_lp(lp(session="LP2"), T0)
    assert r.state == "confirmed" and r.counterpart is None
    assert len(m) == 0
    assert m.add_lp(lp(), T0).state == "received"


def test_platform_matches_only_its_lp() -> None:
    m = Matcher(WINDOW, Decimal(0), Decimal(0), {"PF1": "exec_id", "PF2": "exec_id"},
                {"PF1": "LP1", "PF2": "LP2"})
    m.add_lp(lp(session="LP2"), T0)
    assert m.add_platform(pf(session="PF1"), T0).state == "received"
    assert m.add_platform(pf(session="PF2"), T0).state == "confirmed"


def test_cancels_match_cancels_only() -> None:
    m = matcher()
    cancel = {"exec_id": "E-9", "kind": ExecKind.CANCEL, "exec_ref_id": "E-1"}
    m.add_lp(lp(**cancel), T0)
    assert m.add_platform(pf(exec_id="E-9"), T0).state == "received"    # a trade: no
    assert m.add_platform(pf(**cancel), T0).state == "confirmed"
    # a correction referring to another fill is a mismatch on ExecRefID
    correct = {"exec_id": "E-10", "kind": ExecKind.CORRECT, "exec_ref_id": "E-1"}
    m.add_lp(lp(**correct), T0)
    r = m.add_platform(pf(**{**correct, "exec_ref_id": "E-2"}), T0)
    assert r.state == "mismatched" and r.fields == ("exec_ref_id",)


def test_missing_key_value_expires_unmatched() -> None:
    m = matcher("cl_ord_id")
    m.add_lp(lp(cl_ord_id=None), T0)
    breaks = m.expire(T0 + 2 * WINDOW)
    assert types(breaks) == [BreakType.UNMATCHED_LP]
    assert "no cl_ord_id" in breaks[0].summary


# --- properties -------------------------------------------------------------------------

KEYS = st.sampled_from(["exec_id", "cl_ord_id", "order_id"])


@st.composite
def fills(draw: st.DrawFn, n: int) -> list[Fill]:
    out = []
    for i in range(n):
        out.append(fill(
            exec_id=f"E-{i}",
            order_id=draw(st.sampled_from(["O-1", "O-2"])),
            cl_ord_id=draw(st.sampled_from(["C-1", "C-2"])),
            account=draw(st.sampled_from(["A1", "A2", None])),
            pair=draw(st.sampled_from([EURUSD, USDJPY])),
            side=draw(st.sampled_from(list(Side))),
            last_qty=Decimal(draw(st.integers(1, 5))) * 100_000,
            last_px=Decimal(draw(st.integers(10000, 11000))) / 10000,
            settl_date=draw(st.sampled_from([WED, date(2017, 7, 6), None])),
        ))
    return out


@settings(max_examples=150, deadline=None)
@given(key=KEYS, data=st.data())
def test_identical_fills_in_any_order_all_confirm(key: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6))
    fs = data.draw(fills(n))
    events = [("lp", f) for f in fs] + [("pf", dataclasses.replace(f, session="PF1")) for f in fs]
    events = data.draw(st.permutations(events))
    m = matcher(key)
    confirmed = 0
    for i, (side, f) in enumerate(events):
        now = T0 + timedelta(seconds=i)
        r = m.add_lp(f, now) if side == "lp" else m.add_platform(f, now)
        assert r.state != "mismatched"
        confirmed += r.state == "confirmed"
    assert confirmed == n
    assert len(m) == 0
    assert m.expire(T0 + 10 * WINDOW) == []


ALTERED: dict[str, Any] = {
    "account": "OTHER",
    "pair": USDJPY,
    "side": Side.SELL,
    "last_qty": BASE.last_qty + Decimal("0.02"),
    "last_px": BASE.last_px + Decimal("0.00002"),
    "settl_date": date(2017, 7, 6),
}


@settings(max_examples=150, deadline=None)
@given(key=KEYS, field=st.sampled_from(COMPARED_FIELDS), alter_lp=st.booleans(),
       lp_first=st.booleans(), gap=st.integers(0, 29))
def test_one_altered_field_is_exactly_what_is_reported(
        key: str, field: str, alter_lp: bool, lp_first: bool, gap: int) -> None:
    m = matcher(key, price_tolerance=Decimal("0.00001"), qty_tolerance=Decimal("0.01"))
    lp_fill, pf_fill = lp(), pf()
    if alter_lp:
        lp_fill = dataclasses.replace(lp_fill, **{field: ALTERED[field]})
    else:
        pf_fill = dataclasses.replace(pf_fill, **{field: ALTERED[field]})
    later = T0 + timedelta(seconds=gap)
    if lp_first:
        results = [m.add_lp(lp_fill, T0), m.add_platform(pf_fill, later)]
    else:
        results = [m.add_platform(pf_fill, T0), m.add_lp(lp_fill, later)]
    breaks = [r.break_ for r in results if r.break_ is not None] + m.expire(later + 3 * WINDOW)
    assert types(breaks) == [BreakType.MISMATCH]
    assert set(breaks[0].ours) == set(breaks[0].theirs) == {field}
    assert breaks[0].theirs[field] != breaks[0].ours[field]
    if key == "exec_id":
        assert [r.state for r in results] == ["received", "mismatched"]
        assert results[1].fields == (field,)
    assert len(m) == 0
