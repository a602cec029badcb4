"""stp.allocation: whose a fill is, house accounts, and allocation that moves
positions and never the LP's nets; the allocate command's parsing; the
``house_account`` configuration."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.config import ConfigError, load
from stp.allocation import (
    AccountSource,
    AllocationError,
    Houses,
    allocate,
    resolve_account,
    unallocated_break,
    unallocated_break_id,
    with_house_accounts,
)
from stp.booking import BookingKind, Ledger, book_trade, client_party, lp_party, reverse
from stp.breaks import DEFAULT_SEVERITY, BreakType, Severity
from stp.commands import AllocateCommand, BreakCommand, CommandError, parse_command
from stp.confirm import Matcher, MatchState
from stp.fills import ExecKind, Side
from stp.netting import contributions
from stp.positions import apply_trade
from stp.reference import Account, LeverageGroup, ReferenceData
from tests.unit.test_booking import make_fill
from tests.unit.test_config import LP, PLATFORM, write

KNOWN = frozenset({"ACC1", "ACC2", "HOUSE-LP1", "BRK-AT-LP2"})
NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
HOUSES = Houses.for_sessions(["LP1", "LP2"], {"LP2": "BRK-AT-LP2"})


# -- house accounts ---------------------------------------------------------------------------


def test_house_account_per_lp_configured_or_default() -> None:
    assert HOUSES.of("LP1") == "HOUSE-LP1" and HOUSES.of("LP2") == "BRK-AT-LP2"
    assert HOUSES.of("LP9") == "HOUSE-LP9"
    assert HOUSES.is_house("BRK-AT-LP2") and not HOUSES.is_house("ACC1") and not HOUSES.is_house(None)


def test_missing_house_accounts_are_created_in_the_reference_data() -> None:
    defined = Account("BRK-AT-LP2", "EUR", "retail", Decimal("5000000"))
    reference = ReferenceData(accounts={"ACC1": Account("ACC1", "USD", "retail"), "BRK-AT-LP2": defined},
                              leverage_groups={"retail": LeverageGroup("retail"),
                                               "professional": LeverageGroup("professional")},
                              counterparties={}, pairs={})
    extended = with_house_accounts(reference, HOUSES)
    created = extended.accounts["HOUSE-LP1"]
    assert (created.currency, created.leverage_group, created.opening_balance) == \
        ("USD", "professional", Decimal(0))
    assert "LP1" in created.name
    assert extended.accounts["BRK-AT-LP2"] is defined            # kept as accounts.toml defines it
    assert "HOUSE-LP1" not in reference.accounts                 # not changed in place
    assert with_house_accounts(extended, HOUSES) is extended


# -- whose fill -------------------------------------------------------------------------------


def test_account_precedence_lp_then_platform_then_corrected_then_house() -> None:
    platform = make_fill("P1", session="PLATFORM", account="ACC2")
    assert resolve_account(make_fill(account="ACC1"), platform, None, KNOWN, HOUSES) == \
        ("ACC1", AccountSource.LP)
    # the LP names no account, an unknown one (the broker's at the LP) or a house: the platform's
    for lp_account in (None, "BROKER-7", "HOUSE-LP1"):
        assert resolve_account(make_fill(account=lp_account), platform, None, KNOWN, HOUSES) == \
            ("ACC2", AccountSource.PLATFORM)
        assert resolve_account(make_fill(account=lp_account), None, None, KNOWN, HOUSES) == \
            ("HOUSE-LP1", AccountSource.HOUSE)
    # a platform naming an unknown account does not help
    unknown = replace(platform, account="ACC404")
    assert resolve_account(make_fill(account=None), unknown, None, KNOWN, HOUSES)[1] is AccountSource.HOUSE
    # a correction keeps the corrected booking's client; one on the house stays on the house
    original = book_trade(make_fill("E1", account="ACC2"))
    correction = make_fill("E2", kind=ExecKind.CORRECT, exec_ref_id="E1", account=None)
    assert resolve_account(correction, None, original, KNOWN, HOUSES) == ("ACC2", AccountSource.CORRECTED)
    on_house = book_trade(make_fill("E1", account="HOUSE-LP1"))
    assert resolve_account(correction, None, on_house, KNOWN, HOUSES)[1] is AccountSource.HOUSE
    # LP2's house is its configured account, which the LP itself may name
    assert resolve_account(make_fill(account="BRK-AT-LP2", session="LP2"), None, None, KNOWN, HOUSES) == \
        ("BRK-AT-LP2", AccountSource.HOUSE)


def test_unallocated_break() -> None:
    fill = make_fill("E7", account="BROKER-7")
    brk = unallocated_break(fill, "HOUSE-LP1")
    assert brk.type is BreakType.UNALLOCATED and brk.keys == {"session": "LP1", "exec_id": "E7"}
    assert brk.break_id == unallocated_break_id("LP1", "E7")
    assert brk.ours == {"account": "HOUSE-LP1"} and brk.theirs["account"] == "BROKER-7"
    assert "BROKER-7" in brk.summary and "HOUSE-LP1" in brk.summary
    assert brk.value_date == fill.settl_date and brk.currencies == ("EUR", "USD")
    assert DEFAULT_SEVERITY[BreakType.UNALLOCATED] is Severity.MEDIUM


def test_an_lp_naming_the_brokers_own_account_is_no_account_mismatch() -> None:
    """The LP knows the broker, not the broker's clients: its account is
    compared with the platform's only when it is a client account."""
    def state(lp_account: str, clients: frozenset[str] | None) -> MatchState:
        m = Matcher(timedelta(seconds=30), Decimal(0), Decimal(0), {"PLATFORM": "exec_id"},
                    client_accounts=clients)
        m.add_lp(make_fill("E1", account=lp_account), NOW)
        return m.add_platform(make_fill("E1", session="PLATFORM", account="ACC1"), NOW).state
    clients = frozenset({"ACC1", "ACC2"})
    assert state("BROKER-7", clients) is MatchState.CONFIRMED
    assert state("HOUSE-LP1", clients) is MatchState.CONFIRMED
    assert state("ACC2", clients) is MatchState.MISMATCHED            # two clients: a real difference
    assert state("BROKER-7", None) is MatchState.MISMATCHED           # without the accounts, as before


# -- allocation -------------------------------------------------------------------------------


def test_allocation_moves_the_client_side_and_leaves_the_lp_side() -> None:
    fill = make_fill("E1", account="HOUSE-LP1", side=Side.SELL, qty="250000", px="1.0850")
    house = book_trade(fill)
    reversal, moved = allocate(house, "ACC1", KNOWN, HOUSES, ("LP1", "E1"))
    assert reversal.kind is BookingKind.REVERSAL and reversal.reverses == house.booking_id
    assert reversal.fill_key == ("LP1", "E1")
    assert (moved.booking_id, moved.kind, moved.account, moved.allocated_from) == \
        ("A:LP1:E1", BookingKind.TRADE, "ACC1", house.booking_id)
    assert moved.fill_key == ("LP1", "E1") and moved.counterparty == "LP1" and moved.trade is not None
    assert moved.trade.account == "ACC1" and moved.trade.base_amount == house.trade.base_amount  # type: ignore[union-attr]  # house.trade: a trade booking has one
    ledger = Ledger()
    ledger.apply(house)
    lp_before = {c: ledger.balance(c, lp_party("LP1")) for c in ("EUR", "USD")}
    house_before = {c: ledger.balance(c, client_party("HOUSE-LP1")) for c in ("EUR", "USD")}
    ledger.apply_all([reversal, moved])
    assert {c: ledger.balance(c, lp_party("LP1")) for c in ("EUR", "USD")} == lp_before
    assert {c: ledger.balance(c, client_party("ACC1")) for c in ("EUR", "USD")} == house_before
    assert all(ledger.balance(c, client_party("HOUSE-LP1")) == 0 for c in ("EUR", "USD"))
    assert all(ledger.total(c) == 0 for c in ("EUR", "USD"))
    # the nets: the two bookings' contributions cancel exactly
    for key, delta in contributions(reversal).items():
        assert delta + contributions(moved)[key] == 0
    # a later cancel reverses the client's booking
    assert ledger.apply(reverse(moved, ("LP1", "E2")))
    assert ledger.balance("EUR", client_party("ACC1")) == 0


def test_refused_allocations() -> None:
    house = book_trade(make_fill("E1", account="HOUSE-LP1"))
    key = ("LP1", "E1")
    cases = [
        ((house, "ACC404", key), "unknown_account"),
        ((house, "HOUSE-LP1", key), "house_account"),
        ((house, "BRK-AT-LP2", key), "house_account"),
        ((None, "ACC1", key), "unknown_fill"),
        ((house, "ACC1", ("LP1", "E9")), "unknown_fill"),
        ((book_trade(make_fill("E1", account="ACC2")), "ACC1", key), "already_allocated"),
        ((allocate(house, "ACC2", KNOWN, HOUSES, key)[1], "ACC1", key), "already_allocated"),
    ]
    for (booking, account, k), code in cases:
        with pytest.raises(AllocationError) as info:
            allocate(booking, account, KNOWN, HOUSES, k)
        assert info.value.code == code, (account, k)


@settings(max_examples=150, deadline=None)
@given(qty=st.decimals(min_value=Decimal("100"), max_value=Decimal("50000000"), places=2),
       px=st.decimals(min_value=Decimal("0.5"), max_value=Decimal("200"), places=5),
       side=st.sampled_from([Side.BUY, Side.SELL]),
       symbol=st.sampled_from(["EUR/USD", "USD/JPY", "GBP/CHF", "USD/TRY"]))
def test_allocated_or_not_the_nets_and_positions_are_those_of_the_fill(
        qty: Decimal, px: Decimal, side: Side, symbol: str) -> None:
    fill = make_fill("E1", symbol=symbol, qty=qty, px=px, side=side, account="ACC1")
    direct = book_trade(fill)
    house = book_trade(replace(fill, account="HOUSE-LP1"))
    reversal, moved = allocate(house, "ACC1", KNOWN, HOUSES, ("LP1", "E1"))
    assert contributions(house) == contributions(direct)
    net: dict[object, Decimal] = {}
    for b in (house, reversal, moved):
        for k, v in contributions(b).items():
            net[k] = net.get(k, Decimal(0)) + v
    assert net == contributions(direct)
    assert moved.postings == direct.postings and moved.trade == direct.trade
    # positions: the house is flat again, the client holds what a direct booking gives
    assert house.trade is not None and direct.trade is not None and moved.trade is not None
    house_position = apply_trade(apply_trade(None, house.trade, 1), reversal.trade, -1)  # type: ignore[arg-type]  # reversal.trade: the reversed booking's
    assert house_position.quantity == 0
    assert apply_trade(None, moved.trade, 1) == replace(apply_trade(None, direct.trade, 1))


# -- the command on the bus -------------------------------------------------------------------


def test_parse_allocate_command() -> None:
    body = {"request_id": "d-1", "action": "allocate", "session": "LP1", "exec_id": "E1", "account": "ACC1",
            "by": " alice ", "reason": "client on the phone", "reply_to": "fxstp/replies/alice"}
    command = parse_command(json.dumps(body))
    assert command == AllocateCommand("LP1", "E1", "ACC1", "alice", "client on the phone", "d-1",
                                      "fxstp/replies/alice")
    assert command.inbox_kind == "allocate"
    assert command.inbox_payload() == {"session": "LP1", "exec_id": "E1", "account": "ACC1", "by": "alice",
                                       "reason": "client on the phone", "request_id": "d-1",
                                       "reply_to": "fxstp/replies/alice", "via": "mqtt"}
    # the break commands still parse as before
    ack = parse_command(json.dumps({"action": "ack", "break_id": "b1", "by": "bob"}))
    assert isinstance(ack, BreakCommand) and ack.inbox_kind == "break_acknowledge"
    for broken, code, text in [
        ({k: v for k, v in body.items() if k != "account"}, "invalid_command", "account is required"),
        ({**body, "exec_id": ""}, "invalid_command", "exec_id is empty"),
        ({**body, "session": 7}, "invalid_command", "session must be a string"),
        ({**body, "break_id": "b1"}, "invalid_command", "unknown fields: break_id"),
        ({**body, "account": "A" * 65}, "invalid_command", "longer than 64"),
        ({**body, "reply_to": "fxstp/#"}, "invalid_command", "reply_to"),
    ]:
        with pytest.raises(CommandError) as info:
            parse_command(json.dumps(broken))
        assert info.value.code == code and text in info.value.message, broken
    with pytest.raises(CommandError) as info:
        parse_command(b"{not json")
    assert info.value.code == "malformed_json"


# -- configuration ----------------------------------------------------------------------------


def test_house_account_configuration(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, LP + 'house_account = "BRK-AT-LP1"\n' + PLATFORM), env={})
    assert cfg.lps[0].house_account == "BRK-AT-LP1" and cfg.platforms[0].house_account is None
    assert load(write(tmp_path, LP), env={}).lps[0].house_account is None      # default: HOUSE-LP1
    with pytest.raises(ConfigError, match="house_account is for"):
        load(write(tmp_path, LP + PLATFORM + 'house_account = "X"\n'), env={})
    with pytest.raises(ConfigError, match="house_account must be"):
        load(write(tmp_path, LP + 'house_account = ""\n'), env={})
