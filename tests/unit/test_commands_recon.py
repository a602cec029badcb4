"""Pure parts of issue 5: command parsing, reconciliation, break cut-offs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stp.breaks import Break, BreakType
from stp.commands import CommandError, parse_break_command
from stp.events import break_escalated, command_reply
from stp.reconcile import (
    Execution,
    parse_positions,
    parse_statement,
    position_drift,
    reconcile_statement,
)
from stp.reference import CutOff, ReferenceData
from stp.settlement import break_cut_off

# -- commands -------------------------------------------------------------------


def test_a_valid_acknowledge_and_resolve_parse() -> None:
    cmd = parse_break_command(json.dumps({"request_id": "r1", "action": "ack", "break_id": "b1",
                                          "by": " alice ", "reply_to": "fxstp/replies/alice"}))
    assert (cmd.action, cmd.break_id, cmd.by, cmd.reason, cmd.request_id, cmd.reply_to) == \
        ("acknowledge", "b1", "alice", None, "r1", "fxstp/replies/alice")
    cmd = parse_break_command(b'{"action": "resolve", "break_id": "b1", "by": "bob", "reason": "LP fixed"}')
    assert cmd.action == "resolve" and cmd.reason == "LP fixed" and cmd.request_id is None
    assert cmd.inbox_payload()["via"] == "mqtt"


@pytest.mark.parametrize(("payload", "code", "text"), [
    (b"{not json", "malformed_json", "not JSON"),
    (b"\xff\xfe", "malformed_json", "not JSON"),
    (b"[1, 2]", "malformed_json", "object"),
    (b'"ack"', "malformed_json", "object"),
    (b'{"action": "ack", "by": "a"}', "invalid_command", "break_id is required"),
    (b'{"action": "ack", "break_id": "b"}', "invalid_command", "by is required"),
    (b'{"action": "ack", "break_id": "b", "by": "  "}', "invalid_command", "by is empty"),
    (b'{"action": "delete", "break_id": "b", "by": "a"}', "invalid_command", "acknowledge or resolve"),
    (b'{"break_id": "b", "by": "a"}', "invalid_command", "action is required"),
    (b'{"action": "resolve", "break_id": "b", "by": "a"}', "invalid_command", "needs a reason"),
    (b'{"action": "ack", "break_id": 7, "by": "a"}', "invalid_command", "must be a string"),
    (b'{"action": "ack", "break_id": "b", "by": "a", "colour": "red"}', "invalid_command", "unknown fields"),
    (b'{"action": "ack", "break_id": "b", "by": "a", "reply_to": "x/#"}', "invalid_command", "wildcards"),
    # what the database could not store must not reach it (it would block the inbox)
    (b'{"action": "ack", "break_id": "b", "by": "' + b"x" * 81 + b'"}', "invalid_command", "longer than 80"),
    (b'{"action": "ack", "break_id": "b", "by": "\\ud800"}', "invalid_command", "not valid Unicode"),
    (b'{"request_id": "' + b"r" * 65 + b'", "action": "ack", "break_id": "b", "by": "a"}', "invalid_command",
     "request_id"),
])
def test_bad_commands_are_refused_with_a_code(payload: bytes, code: str, text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_break_command(payload)
    assert info.value.code == code
    assert text in info.value.message


def test_a_refused_command_keeps_its_request_id_for_the_reply() -> None:
    with pytest.raises(CommandError) as info:
        parse_break_command(b'{"request_id": "r9", "action": "nope", "break_id": "b", "by": "a"}')
    assert info.value.request_id == "r9"
    reply = command_reply(info.value.request_id, "p/replies/breaks", False, datetime.now(UTC),
                          reply_id="inbox-7", error=info.value.code, message=info.value.message)
    body = json.loads(reply.payload)
    assert body["data"] == {"request_id": "r9", "ok": False,
                            "error": {"code": "invalid_command", "message": info.value.message}}
    assert reply.topic == "p/replies/breaks" and body["id"] == "reply-inbox-7"


# what wedged the command topic (issue 9): a parser error other than ValueError
# escaped, the listener died and the broker redelivered the message for ever
@pytest.mark.parametrize(("payload", "text"), [
    (b"[" * 20_000 + b"]" * 20_000, "nested too deep"),                       # 40 kB: under the size cap
    (b'{"a":' * 8_000 + b"1" + b"}" * 8_000, "nested too deep"),
    (b'{"request_id": "r1", "action": "ack", "break_id": "b", "by": "a", "x": ' + b"[" * 5_000
     + b"]" * 5_000 + b"}", "nested too deep"),
    (b"[" * 100_000 + b"]" * 100_000, "at most 65536 bytes"),                 # the report's command
    (b'{"by": "' + b"x" * 70_000 + b'"}', "at most 65536 bytes"),
    (b'{"request_id": ' + b"9" * 5_000 + b"}", "not JSON"),                    # int conversion limit
    (b"\x00", "not JSON"),
    (b"", "not JSON"),
])
def test_what_cannot_be_parsed_for_any_reason_is_malformed_json(payload: bytes, text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_break_command(payload)
    assert info.value.code == "malformed_json"
    assert text in info.value.message


def test_a_payload_at_the_size_cap_is_parsed() -> None:
    body = b'{"action": "resolve", "break_id": "b", "by": "a", "reason": "r"}'
    padded = body[:-1] + b" " * (65536 - len(body)) + b"}"
    assert len(padded) == 65536
    assert parse_break_command(padded).reason == "r"


@pytest.mark.parametrize("payload", [
    b'{"action": "ack", "break_id": "b", "by": "a\\u0000b"}',
    b'{"action": "resolve", "break_id": "b", "by": "a", "reason": "\\u0000"}',
    b'{"action": "ack", "break_id": "b\\u0000", "by": "a"}',
    b'{"request_id": "r\\u0000", "action": "ack", "break_id": "b", "by": "a"}',
])
def test_text_a_database_cannot_hold_is_an_invalid_command(payload: bytes) -> None:
    # PostgreSQL's text type refuses NUL: stored, it would fail the inbox's transaction
    with pytest.raises(CommandError) as info:
        parse_break_command(payload)
    assert info.value.code == "invalid_command"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(sorted(["request_id", "action", "break_id", "by", "reason",
                                                         "reply_to", "other"])), _json, max_size=6)
                 .map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_any_payload_parses_or_is_refused_with_a_code(payload: bytes) -> None:
    try:
        command = parse_break_command(payload)
    except CommandError as exc:
        assert exc.code in ("malformed_json", "invalid_command") and exc.message
    else:
        assert command.action in ("acknowledge", "resolve") and command.by and command.break_id


# -- cut-offs and escalation events -------------------------------------------------


def _reference() -> ReferenceData:
    return ReferenceData({}, {}, {}, {}, cut_offs={"USD": CutOff("USD", time(17, 0), "America/New_York", 0),
                                   "EUR": CutOff("EUR", time(16, 0), "Europe/London", 1)})


def test_a_break_cut_off_is_the_earliest_of_its_currencies() -> None:
    brk = Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": "E1"}, "x",
                value_date=date(2026, 11, 25), currencies=("EUR", "USD"))
    # EUR: one TARGET business day before (Tue 24th) at 16:00 London = 16:00 UTC in winter
    assert break_cut_off(brk, _reference()) == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
    usd_only = Break(BreakType.SSI_MISSING, {"counterparty": "LP1"}, "x",
                     value_date=date(2026, 11, 25), currencies=("USD",))
    assert break_cut_off(usd_only, _reference()) == datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    assert break_cut_off(Break(BreakType.EXECID_CONFLICT, {"session": "LP1"}, "x"), _reference()) is None
    # the settlement fields are not part of the id
    assert brk.break_id == Break(BreakType.MISMATCH, {"session": "LP1", "exec_id": "E1"}, "y").break_id


def test_the_escalation_event_has_its_own_stable_id() -> None:
    at = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
    ev = break_escalated("b1", "mismatch", "high", "acknowledged", {"session": "LP1"}, "summary",
                         datetime(2026, 11, 24, 16, 0, tzinfo=UTC), "fx", at)
    body = json.loads(ev.payload)
    assert ev.event_id == "b1-escalated" and ev.topic == "fx/breaks/LP1/mismatch"
    assert body["type"] == "com.fxstp.break.escalated"
    assert body["data"]["minutes_to_cut_off"] == 30 and body["data"]["cut_off"] == "2026-11-24T16:00:00Z"


# -- statement reconciliation ---------------------------------------------------------

STATEMENT = """exec_id,exec_type,order_id,account,trade_date,symbol,side,last_qty,last_px,settl_date
E1,F,O1,ACC1,2026-11-20,EUR/USD,1,1000000,1.08500,2026-11-24
E2,F,O2,ACC2,2026-11-20,USDJPY,SELL,500000,151.500,2026-11-24
E3,F,O3,ACC1,2026-11-20,GBP/USD,2,250000,1.27000,2026-11-24
E9,F,O9,ACC1,2026-11-20,EUR/USD,1,100000,1.08600,2026-11-24
"""


def _ex(exec_id: str, symbol: str, side: str, qty: str, px: str, order: str, account: str) -> Execution:
    return Execution(exec_id, "F", symbol, side, Decimal(qty), Decimal(px), date(2026, 11, 24),
                     date(2026, 11, 20), order, account)


def test_statement_lines_parse_in_their_forms() -> None:
    lines, errors = parse_statement(STATEMENT)
    assert errors == []
    assert [e.exec_id for e in lines] == ["E1", "E2", "E3", "E9"]
    assert lines[1].symbol == "USD/JPY" and lines[1].side == "2" and lines[1].last_px == Decimal("151.500")


def test_unreadable_statement_lines_are_reported_with_their_line_number() -> None:
    text = ("exec_id,symbol,side,last_qty,last_px\nE1,EUR/USD,1,100,1.1\nE2,EURUSD,7,100,1.1\n"
            "E3,EUR/USD,1,-5,1.1\nE4,EURO,1,1,1\n,EUR/USD,1,1,1\n")
    lines, errors = parse_statement(text)
    assert [e.exec_id for e in lines] == ["E1"]
    assert [(e.line, e.error.split(" ")[0]) for e in errors] == [(3, "side"), (4, "last_qty"), (5, "symbol"),
                                                                 (6, "exec_id")]
    _, errors = parse_statement("id,symbol\n1,EUR/USD\n")
    assert errors[0].line == 1 and "header lacks exec_id" in errors[0].error


def test_reconciliation_finds_missing_on_either_side_and_field_differences() -> None:
    theirs, _ = parse_statement(STATEMENT)
    ours = {"E1": _ex("E1", "EUR/USD", "1", "1000000", "1.085", "O1", "ACC1"),      # equal (1.085 = 1.08500)
            "E2": _ex("E2", "USD/JPY", "2", "500000", "151.600", "O2", "ACC2"),     # price differs
            "E3": _ex("E3", "GBP/USD", "1", "250000", "1.27", "O3", "ACC1"),        # side differs
            "E7": _ex("E7", "AUD/USD", "1", "100000", "0.655", "O7", "ACC3")}       # not on the statement
    result = reconcile_statement("LP1", ours, theirs)
    assert result.matched == 1
    found = {(b.type, b.keys["exec_id"]): b for b in result.breaks}
    assert set(found) == {(BreakType.RECON_DIFFERENCE, "E2"), (BreakType.RECON_DIFFERENCE, "E3"),
                          (BreakType.RECON_MISSING_LP, "E7"), (BreakType.RECON_MISSING_ENGINE, "E9")}
    e2 = found[(BreakType.RECON_DIFFERENCE, "E2")]
    assert e2.ours == {"last_px": "151.600"} and e2.theirs == {"last_px": "151.500"}
    assert found[(BreakType.RECON_DIFFERENCE, "E3")].ours == {"side": "1"}
    assert found[(BreakType.RECON_MISSING_LP, "E7")].value_date == date(2026, 11, 24)
    assert found[(BreakType.RECON_MISSING_ENGINE, "E9")].currencies == ("EUR", "USD")
    # the same inputs give the same break ids (re-running a statement dedupes)
    again = reconcile_statement("LP1", ours, theirs)
    assert [b.break_id for b in again.breaks] == [b.break_id for b in result.breaks]


def test_a_statement_that_agrees_gives_no_breaks() -> None:
    theirs, _ = parse_statement(STATEMENT)
    ours = {e.exec_id: e for e in theirs}
    result = reconcile_statement("LP1", ours, theirs)
    assert result.breaks == () and result.matched == 4


# -- position drift -------------------------------------------------------------------


def test_position_report_drift_per_currency_and_value_date() -> None:
    report, errors = parse_positions("currency,value_date,lp_pays\nEUR,2026-11-24,1000000.00\n"
                                     "USD,2026-11-24,-1085000.00\nJPY,2026-11-24,5\n"
                                     "JPY,2026-11-25,1.5\nXXQ,2026-11-24,1\n")
    assert [(e.line, e.error) for e in errors] == [(5, "lp_pays 1.5 has more decimals than JPY's 0"),
                                                   (6, "unknown currency: 'XXQ'")]
    ours = {("EUR", date(2026, 11, 24)): Decimal("1000000.00"),
            ("USD", date(2026, 11, 24)): Decimal("-1084999.99"),       # a cent of drift
            ("GBP", date(2026, 11, 24)): Decimal("10.00"),             # the LP does not list it
            ("CHF", date(2026, 11, 30)): Decimal("99.00")}             # a date the report does not cover
    result = position_drift("LP1", ours, report)
    assert result.matched == 1
    drift = {b.keys["currency"]: b for b in result.breaks}
    assert set(drift) == {"USD", "JPY", "GBP"}
    assert all(b.type is BreakType.POSITION_DRIFT for b in result.breaks)
    assert drift["USD"].ours == {"lp_pays": "-1084999.99"}
    assert drift["USD"].theirs == {"lp_pays": "-1085000.00"}
    assert drift["GBP"].theirs == {"lp_pays": "0"} and drift["JPY"].ours == {"lp_pays": "0"}
    assert drift["USD"].value_date == date(2026, 11, 24) and drift["USD"].currencies == ("USD",)


# --- recon dates a fill as confirmation did --------------------------------------------------


async def test_recon_dates_a_fill_without_settl_date_with_the_configured_spot_lag() -> None:
    """A pair configured T+1 (EUR/USD defaults to T+2): a fill that came without
    SettlDate (64) is reconciled at the value date confirmation gave it, not
    at the default lag's."""
    from adapters.recon import engine_executions
    from stp.reference import PairSettings
    from stp.valuedates import CurrencyPair, value_date

    class Rows:
        async def fetch(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
            return [("E1", "trade", "EUR/USD", "buy", "1000000", "1.1", None, "2017-07-05", "O1", "ACC001",
                     None, "0", None, 1)]

    t1 = CurrencyPair("EUR", "USD", spot_lag=1)
    ref = ReferenceData({}, {}, {}, {"EUR/USD": PairSettings(t1)})
    wed = date(2017, 7, 5)
    out = await engine_executions(Rows(), ref, "LP1", None)           # type: ignore[arg-type]  # Rows has only the fetch recon calls
    assert out["E1"].settl_date == value_date(wed, t1, "0") == date(2017, 7, 6)
    assert value_date(wed, CurrencyPair("EUR", "USD"), "0") != date(2017, 7, 6)   # what recon gave before
