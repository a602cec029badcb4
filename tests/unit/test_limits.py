"""stp.limits: absurd quantities and prices are refused (DontKnowTrade), never booked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.reference import ReferenceError, load_reference
from stp.booking import book_fill
from stp.breaks import BreakType
from stp.confirm import Validator
from stp.fills import (
    DK_OTHER,
    DK_PRICE_EXCEEDS_LIMIT,
    DK_QUANTITY_EXCEEDS_ORDER,
    Fill,
    normalise,
)
from stp.limits import (
    AmountLimits,
    LimitRejection,
    PairLimits,
    check_fill,
    check_fill_move,
    check_quote,
    reference_move,
    usable_reference,
)
from stp.marketdata import Quote

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 11, 18, 9, 0, 1, tzinfo=UTC)
EURUSD = PairLimits(max_qty=Decimal("250000000"), price_band=Decimal("0.10"), min_px=Decimal("0.5"),
                    max_px=Decimal("2.5"), tolerance=Decimal("0.02"))
USDJPY = PairLimits(max_qty=Decimal("1000000"), min_px=Decimal("50"), max_px=Decimal("400"))
REF = (Decimal("1.08500"), AT - timedelta(seconds=5))
HUGE_PX = "9" + "0" * 49            # 9e49 as a FIX Price (no exponent on the wire)
HUGE_QTY = "1" + "0" * 30           # 1e30

ER: dict[int, str] = {
    35: "8", 37: "O-1", 11: "C-1", 1: "ACC001", 17: "E-1", 150: "F", 39: "2", 55: "EUR/USD",
    54: "1", 38: "1000000", 15: "EUR", 32: "1000000", 31: "1.08500", 151: "0", 14: "1000000",
    6: "1.08500", 75: "20261118", 60: "20261118-09:00:00.123", 63: "0", 64: "20261120",
}


def report(**tags: str | None) -> dict[int, str]:
    fields = dict(ER)
    for key, value in tags.items():
        if value is None:
            fields.pop(int(key[1:]), None)
        else:
            fields[int(key[1:])] = value
    return fields


def fill(**tags: str | None) -> Fill:
    result = normalise(report(**tags), "LP1", AT)
    assert isinstance(result, Fill), result        # normalise alone accepts it
    return result


def refused(f: Fill, limits: PairLimits = EURUSD,
            ref: tuple[Decimal, datetime] | None = REF) -> LimitRejection:
    result = check_fill(f, limits, ref)
    assert isinstance(result, LimitRejection), f"accepted: {f}"
    return result


# --- the reported cases -------------------------------------------------------------


def test_a_1e30_quantity_is_dk_c_quantity_exceeds_order() -> None:
    f = fill(t32=HUGE_QTY, t38=HUGE_QTY, t14=HUGE_QTY)
    r = refused(f)
    assert (r.dk_reason, r.rule, r.exec_id) == (DK_QUANTITY_EXCEEDS_ORDER, "max_qty", "E-1")
    assert "LastQty (32)" in r.text and "250000000" in r.text
    # the default limits too (a pair without its own), with or without a reference price
    assert refused(f, AmountLimits().of("EUR/USD"), None).dk_reason == DK_QUANTITY_EXCEEDS_ORDER


def test_a_9e49_price_is_dk_e_with_or_without_a_reference_price() -> None:
    f = fill(t31=HUGE_PX, t6=None)
    for ref in (REF, None):
        r = refused(f, ref=ref)
        assert (r.dk_reason, r.rule) == (DK_PRICE_EXCEEDS_LIMIT, "price_bounds")
    assert refused(f, AmountLimits().default, None).dk_reason == DK_PRICE_EXCEEDS_LIMIT


def test_the_answer_quotes_a_long_value_shortened() -> None:
    """A DontKnowTrade's Text and the journal's reason stay short for a 5,000-digit quantity."""
    r = refused(fill(t32="7" * 5000, t38=None, t14=None))
    assert r.dk_reason == DK_QUANTITY_EXCEEDS_ORDER and len(r.text) < 200
    assert "(5000 characters)" in r.text


def test_order_cum_and_leaves_quantities_are_limited_too() -> None:
    for tag in ("t38", "t151"):
        r = refused(fill(**{tag: "300000000"}))
        assert r.dk_reason == DK_QUANTITY_EXCEEDS_ORDER and r.rule == "max_qty"
    assert check_fill(fill(t38="250000000", t32="250000000", t14="250000000"), EURUSD, REF) is None


# --- price band and bounds --------------------------------------------------------


@pytest.mark.parametrize(("px", "ok"), [("1.19350", True), ("1.19351", False), ("0.97650", True),
                                        ("0.97649", False)])
def test_price_band_boundary(px: str, ok: bool) -> None:
    """10% of 1.085 is 0.1085: 1.1935 and 0.9765 are the last prices inside."""
    result = check_fill(fill(t31=px), EURUSD, REF)
    if ok:
        assert result is None
    else:
        assert result is not None
        assert (result.dk_reason, result.rule) == (DK_PRICE_EXCEEDS_LIMIT, "price_band")
        assert result.reference_px == "1.08500"


def test_cancels_and_corrections_get_the_bounds_not_the_band() -> None:
    """They carry the price of a trade done earlier, when the market may have been elsewhere."""
    for kind in ("H", "G"):
        assert check_fill(fill(t150=kind, t19="E-0", t31="1.30000"), EURUSD, REF) is None
        assert refused(fill(t150=kind, t19="E-0", t31=HUGE_PX)).rule == "price_bounds"
        assert refused(fill(t150=kind, t19="E-0", t32=HUGE_QTY, t38=None, t14=None)).rule == "max_qty"


def test_a_stale_reference_leaves_only_the_absolute_bounds() -> None:
    old = (Decimal("1.08500"), AT - timedelta(hours=25))
    assert check_fill(fill(t31="1.5"), EURUSD, old) is None                       # 24 h: stale
    assert check_fill(fill(t31="1.5"), EURUSD, old, timedelta(hours=30)) is not None
    assert refused(fill(t31="2.6"), ref=old).rule == "price_bounds"


def test_the_band_checks_the_spot_rate_of_a_forward() -> None:
    fwd = fill(t63="M1", t64=None, t194="1.40000", t195="0.00500", t31="1.40500")
    r = refused(fwd)
    assert r.rule == "price_band" and "LastSpotRate (194)" in r.text
    assert check_fill(fill(t63="M1", t64=None, t194="1.08600", t195="0.00500", t31="1.09100"),
                      EURUSD, REF) is None
    assert refused(fill(t194=HUGE_PX)).rule == "price_bounds"


def test_a_quantity_in_the_quote_currency_counts_at_last_px() -> None:
    jpy = dict(t55="USD/JPY", t15="JPY", t31="151.500", t6="151.500", t38=None, t14=None, t151=None)
    ref = (Decimal("151.500"), AT)
    assert check_fill(fill(**jpy, t32="151500000"), USDJPY, ref) is None           # 1,000,000 USD
    r = refused(fill(**jpy, t32="151500001"), USDJPY, ref)
    assert r.dk_reason == DK_QUANTITY_EXCEEDS_ORDER


# --- amounts that cannot be represented -------------------------------------------


_JPY = {"t55": "USD/JPY", "t31": "151.500", "t6": None, "t38": None, "t14": None, "t151": None}


@pytest.mark.parametrize(("tags", "ok"), [
    ({"t32": "1000000.001", "t38": "2000000", "t14": "1000000.001", "t151": None}, False),  # < a cent
    ({"t6": "1.08500000000000000000000000000000000000001"}, False),                 # 43 characters
    ({**_JPY, "t15": "USD", "t32": "0.01"}, True),                                   # 1.515 JPY: fine
    ({**_JPY, "t15": "JPY", "t32": "10"}, True),                                     # 0.066 USD: fine
    ({**_JPY, "t15": "JPY", "t32": "0.5"}, False),                                   # JPY has no decimals
    ({**_JPY, "t15": "USD", "t32": "0.001"}, False),                                 # finer than cents
    ({"t31": "0.50000", "t6": None, "t32": "0.01", "t38": None, "t14": None, "t151": None},
     False),                                                                         # 0.005 USD: zero
])
def test_amounts_that_cannot_be_booked_exactly_are_dk_other(tags: dict[str, str | None], ok: bool) -> None:
    f = fill(**tags)
    limits = USDJPY if f.symbol == "USD/JPY" else EURUSD
    result = check_fill(f, limits, (f.last_px, AT))
    if ok:
        assert result is None and not book_fill(f, None).breaks
    else:
        assert result is not None and (result.dk_reason, result.rule) == (DK_OTHER, "representable"), result


# --- the reference price ------------------------------------------------------------


def test_reference_moves_with_in_tolerance_trades_only() -> None:
    assert reference_move(fill(t31="1.09000"), EURUSD, REF) == (Decimal("1.09000"), AT)
    assert reference_move(fill(t31="1.11000"), EURUSD, REF) is None      # 2.3% off: flagged by confirm
    assert reference_move(fill(t31="1.50000"), EURUSD, None) == (Decimal("1.50000"), AT)   # the first
    late = (Decimal("1.08500"), AT + timedelta(seconds=1))
    assert reference_move(fill(t31="1.08600"), EURUSD, late) is None     # older than the reference
    cancel = fill(t150="H", t19="E-0", t31="1.08600")
    assert reference_move(cancel, EURUSD, REF) is None
    assert reference_move(fill(t194="1.08700", t31="1.09900", t63="M1", t64=None), EURUSD, REF) == \
        (Decimal("1.08700"), AT)


def test_quotes_are_checked_against_bounds_band_and_column_size() -> None:
    def quote(bid: str, offer: str) -> Quote:
        return Quote("LP1", "EUR/USD", Decimal(bid), Decimal(offer), AT)

    assert check_quote(quote("1.08490", "1.08510"), EURUSD, REF) is None
    assert check_quote(quote("1.08490", HUGE_PX), EURUSD, None) is not None
    assert check_quote(quote("1.30000", "1.30010"), EURUSD, REF) is not None
    assert check_quote(quote("1.30000", "1.30010"), EURUSD, None) is None
    assert check_quote(quote("1.0" + "0" * 50 + "1", "1.1"), EURUSD, None) is not None


def test_stored_prices_outside_the_bounds_are_not_used_as_reference() -> None:
    assert usable_reference(Decimal("1.085"), EURUSD)
    assert not usable_reference(Decimal(HUGE_PX), EURUSD)
    assert not usable_reference(Decimal("NaN"), EURUSD)


def test_confirm_takes_no_absurd_first_price_as_its_reference() -> None:
    """The second line: a fill that reached confirm without the intake's check
    (no reference price yet) cannot make its price the reference."""
    v = Validator(load_reference(ROOT / "config" / "reference"))
    breaks = v.validate(fill(t31=HUGE_PX, t6=None))
    assert [b.type for b in breaks] == [BreakType.PRICE_OUT_OF_TOLERANCE]
    assert "outside the bounds 0.5..2.5" in breaks[0].summary
    assert v.reference_price("EUR/USD") is None
    assert v.validate(fill(t17="E-2")) == []
    assert v.reference_price("EUR/USD") == Decimal("1.08500")


# --- configuration -----------------------------------------------------------------


def test_pairs_toml_limits_defaults_and_tolerance() -> None:
    ref = load_reference(ROOT / "config" / "reference")
    limits = ref.amount_limits()
    assert limits.of("EUR/USD").max_qty == Decimal("250000000")
    assert (limits.of("EUR/USD").min_px, limits.of("EUR/USD").max_px) == (Decimal("0.5"), Decimal("2.5"))
    assert limits.of("USD/TRY").price_band == Decimal("0.25")
    assert limits.of("USD/TRY").tolerance == Decimal("0.05")          # confirm's price_tolerance
    assert limits.of("USD/TRY").max_qty == Decimal("50000000")
    assert limits.of("XAU/USD") == ref.default_limits                  # a pair not listed
    assert ref.default_limits.max_qty == Decimal("250000000")
    assert limits.band_max_age == timedelta(hours=24)


def test_bad_limits_in_pairs_toml_are_refused(tmp_path: Path) -> None:
    for name in ("accounts.toml", "counterparties.toml", "settlement.toml"):
        (tmp_path / name).write_text((ROOT / "config" / "reference" / name).read_text())
    for bad in ('max_qty = "0"', 'min_px = "3"\nmax_px = "2"', 'price_band = "NaN"', "max_qty = 1.5"):
        (tmp_path / "pairs.toml").write_text(f'[[pair]]\nsymbol = "EUR/USD"\n{bad}\n')
        with pytest.raises(ReferenceError):
            load_reference(tmp_path)


# --- property: within the limits books, outside is DK'd ------------------------------


_QTY = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500000000"), places=2)
_PX = st.decimals(min_value=Decimal("0.25000"), max_value=Decimal("5.00000"), places=5)
_REF = st.decimals(min_value=Decimal("0.50000"), max_value=Decimal("2.50000"), places=5)


@settings(max_examples=300, deadline=None)
@given(qty=_QTY, px=_PX, ref=_REF, side=st.sampled_from(["1", "2"]))
def test_within_the_limits_books_outside_is_dk(qty: Decimal, px: Decimal, ref: Decimal, side: str) -> None:
    f = fill(t32=str(qty), t31=str(px), t38=None, t14=None, t151=None, t6=None, t54=side)
    result = check_fill(f, EURUSD, (ref, AT))
    price_ok = Decimal("0.5") <= px <= Decimal("2.5") and abs(px - ref) <= ref * Decimal("0.10")
    qty_ok = qty <= Decimal("250000000")
    books_nonzero = (qty * px).quantize(Decimal("0.01")) != 0
    if not price_ok:
        assert result is not None and result.dk_reason == DK_PRICE_EXCEEDS_LIMIT
    elif not qty_ok:
        assert result is not None and result.dk_reason == DK_QUANTITY_EXCEEDS_ORDER
    elif not books_nonzero:
        assert result is not None and result.dk_reason == DK_OTHER
    else:
        assert result is None
        booked = book_fill(f, None)
        assert not booked.breaks and len(booked.bookings) == 1
        amounts = {p.ledger: abs(p.amount) for p in booked.bookings[0].postings}
        assert amounts["EUR"] == qty


# --- one pass: the check and the reference move, from the report's texts ----------


_FIX_NUMBER = st.from_regex(r"\A(?:[0-9]{1,24}(?:\.[0-9]{0,22})?|\.[0-9]{1,24})\Z")


@settings(max_examples=600, deadline=None)
@given(qty=_FIX_NUMBER, px=_FIX_NUMBER, avg=_FIX_NUMBER, pair=st.sampled_from(["EUR/USD", "USD/JPY"]),
       in_quote=st.booleans(), kind=st.sampled_from(["F", "H"]),
       ref=st.sampled_from([None, REF, (Decimal("150.00"), AT), (Decimal("1.5"), AT + timedelta(seconds=1))]))
def test_check_fill_move_from_the_texts_is_check_fill_then_reference_move(
        qty: str, px: str, avg: str, pair: str, in_quote: bool, kind: str,
        ref: tuple[Decimal, datetime] | None) -> None:
    """The intake checks a fill once, with the texts its decimals were read
    from: the same answer and the same reference move as checking its
    Decimals (the lengths, minor units, rounding to zero, 38 digits)."""
    base, quote = pair.split("/")
    fields = report(t55=pair, t15=quote if in_quote else base, t32=qty, t31=px, t6=avg, t38=None,
                    t14=None, t151=None, t150=kind, t19="E-0" if kind == "H" else None)
    f = normalise(fields, "LP1", AT)
    if not isinstance(f, Fill):
        return                                           # zero quantity or price: not a fill
    limits = PairLimits(max_qty=Decimal("1" + "0" * 30), price_band=Decimal("1000"),
                        min_px=Decimal("1e-30"), max_px=Decimal("1e30"))
    refused = check_fill(f, limits, ref)
    expected = (refused, reference_move(f, limits, ref) if refused is None else None)
    assert check_fill_move(f, limits, ref, timedelta(hours=24), fields) == expected
    assert check_fill_move(f, limits, ref) == expected


@pytest.mark.parametrize(("tags", "ok"), [
    ({"t32": "1000000.001", "t38": "2000000", "t14": "1000000.001", "t151": None}, False),
    ({"t6": "1.08500000000000000000000000000000000000001"}, False),
    ({"t6": "." + "5" * 39}, False),                     # 40 characters, 41 as a Decimal: 0.555...
    ({"t6": "." + "5" * 38}, True),
    ({**_JPY, "t15": "USD", "t32": "0.01"}, True),
    ({**_JPY, "t15": "JPY", "t32": "10"}, True),
    ({**_JPY, "t15": "JPY", "t32": "0.5"}, False),
    ({**_JPY, "t15": "JPY", "t32": "10.000"}, True),     # trailing zeros: not finer than yen
    ({**_JPY, "t15": "USD", "t32": "0.001"}, False),
    ({"t31": "0.50000", "t6": None, "t32": "0.01", "t38": None, "t14": None, "t151": None}, False),
])
def test_the_texts_give_the_same_answers_as_the_decimals(tags: dict[str, str | None], ok: bool) -> None:
    fields = report(**tags)
    f = normalise(fields, "LP1", AT)
    assert isinstance(f, Fill)
    limits = USDJPY if f.symbol == "USD/JPY" else EURUSD
    refused, _ = check_fill_move(f, limits, (f.last_px, AT), timedelta(hours=24), fields)
    assert (refused is None) is ok and (refused is None) == (check_fill(f, limits, (f.last_px, AT)) is None)
