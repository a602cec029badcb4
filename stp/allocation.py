"""Allocation: who a fill belongs to, and moving it from the house to a client.

An LP's ExecutionReport is the broker's trade with the LP: it names a client
account only if the broker arranged it, often the broker's own account at
the LP, or none at all.  The platform's record of the same trade names the
client.  The money moves with the LP on the value date whoever the client
is, so every LP fill books (its LP leg nets and settles); the client side of
a fill no client can be found for goes to the LP session's *house account*
until the desk allocates it.

Account of a fill (``resolve_account``), first that applies:

1. the LP's report names a known client account (Account, tag 1);
2. the matched platform record names one;
3. a correction: the account of the booking it corrects;
4. the LP session's house account, with an ``unallocated`` break.

A house account is an ordinary account (positions, margin and exposure treat
it like any other); it is never a client: a fill naming one is unallocated.

Allocation (``allocate``) moves a fill's active booking from the house to a
client with two linked bookings, nothing updated in place: the reversal of
the house booking and a trade booking on the client with the same amounts,
value date and counterparty (id ``A:<session>:<exec_id>``, ``allocated_from``
the house booking).  The LP's postings of the two cancel exactly, so the
nets never move.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from stp.booking import Booking, BookingKind, Posting, client_party, reverse
from stp.breaks import Break, BreakType
from stp.breaks import settles as _settles
from stp.fills import ExecKind, Fill
from stp.reference import Account, ReferenceData

__all__ = [
    "HOUSE_PREFIX",
    "AccountSource",
    "AllocationError",
    "Houses",
    "allocate",
    "allocation_booking_id",
    "default_house_account",
    "resolve_account",
    "unallocated_break",
    "unallocated_break_id",
    "with_house_accounts",
]

#: Default house account id of an LP session: ``HOUSE-<session>``.
HOUSE_PREFIX: Final = "HOUSE-"


def default_house_account(session: str) -> str:
    return f"{HOUSE_PREFIX}{session}"


def allocation_booking_id(session: str, exec_id: str) -> str:
    """The id of the client booking an allocation of fill (session, exec_id) makes."""
    return f"A:{session}:{exec_id}"


class AllocationError(ValueError):
    """A refused allocation; ``code`` is what a command reply carries:
    ``unknown_fill``, ``unknown_account``, ``house_account``, ``already_allocated``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Houses:
    """The house account of each LP session."""

    by_session: Mapping[str, str]
    accounts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", frozenset(self.by_session.values()))

    @classmethod
    def for_sessions(cls, sessions: Iterable[str], configured: Mapping[str, str] | None = None) -> Houses:
        """``configured`` (session -> account) where given, else ``HOUSE-<session>``."""
        configured = configured or {}
        by_session = {s: configured.get(s) or default_house_account(s) for s in sessions}
        by_session.update({s: a for s, a in configured.items() if a})
        return cls(by_session)

    def of(self, session: str) -> str:
        """The house account of an LP session (``HOUSE-<session>`` if not configured)."""
        return self.by_session.get(session) or default_house_account(session)

    def is_house(self, account: str | None) -> bool:
        return account is not None and account in self.accounts


def with_house_accounts(reference: ReferenceData, houses: Houses) -> ReferenceData:
    """The reference data with every house account in it: one defined in
    accounts.toml is kept as defined; a missing one is created in USD, in the
    leverage group ``house`` if defined (else ``professional``, else ``retail``),
    opening balance 0."""
    missing = sorted(a for a in houses.accounts if a not in reference.accounts)
    if not missing:
        return reference
    groups = reference.leverage_groups
    group = next((g for g in ("house", "professional", "retail") if g in groups), "retail")
    sessions: dict[str, list[str]] = {}
    for session, account in houses.by_session.items():
        sessions.setdefault(account, []).append(session)
    accounts = dict(reference.accounts)
    for account_id in missing:
        accounts[account_id] = Account(account_id=account_id, currency="USD", leverage_group=group,
                                       name="house account of " + ", ".join(sorted(sessions[account_id])))
    return replace(reference, accounts=accounts)


class AccountSource(StrEnum):
    LP = "lp"                  # the LP's report names a known client account
    PLATFORM = "platform"      # the matched platform record does
    CORRECTED = "corrected"    # a correction: the corrected booking's account
    HOUSE = "house"            # none: the LP session's house account


def resolve_account(fill: Fill, platform: Fill | None, original: Booking | None,
                    known_accounts: Container[str], houses: Houses) -> tuple[str, AccountSource]:
    """The account a TRADE or CORRECT LP fill books on, and where it came from."""

    def client(account: str | None) -> bool:
        return account is not None and account in known_accounts and not houses.is_house(account)

    if client(fill.account):
        assert fill.account is not None
        return fill.account, AccountSource.LP
    if platform is not None and client(platform.account):
        assert platform.account is not None
        return platform.account, AccountSource.PLATFORM
    if fill.kind is ExecKind.CORRECT and original is not None and client(original.account):
        assert original.account is not None
        return original.account, AccountSource.CORRECTED
    return houses.of(fill.session), AccountSource.HOUSE


def unallocated_break_id(session: str, exec_id: str) -> str:
    return Break(BreakType.UNALLOCATED, {"session": session, "exec_id": exec_id}, "").break_id


def unallocated_break(fill: Fill, house: str, platform: Fill | None = None) -> Break:
    """The break of a fill booked on its LP's house account (keys: session, exec_id)."""
    named = []
    if fill.account:
        named.append(f"the LP names {fill.account}")
    if platform is not None:
        named.append(f"platform {platform.session} {platform.exec_id} names "
                     f"{platform.account or 'no account'}")
    why = "; ".join(named) if named else "no account on the report and no platform record yet"
    summary = (f"{fill.kind.name.lower()} {fill.session}/{fill.exec_id} {fill.pair.symbol} booked on the "
               f"house account {house}: no client account ({why}); allocate it")
    theirs: dict[str, object] = {"account": fill.account, "pair": fill.pair.symbol,
                                 "side": fill.side.name.lower(), "last_qty": str(fill.last_qty),
                                 "last_px": str(fill.last_px)}
    if platform is not None:
        theirs["platform_account"] = platform.account
    return Break(BreakType.UNALLOCATED, {"session": fill.session, "exec_id": fill.exec_id}, summary,
                 ours={"account": house}, theirs=theirs, **_settles(fill))


def allocate(booking: Booking | None, account: str, known_accounts: Container[str], houses: Houses,
             key: tuple[str, str]) -> tuple[Booking, Booking]:
    """(reversal of the house booking, the client's booking) moving fill ``key``'s
    active trade booking from its house account to ``account``.

    Raises AllocationError: ``unknown_account`` (not in the reference data),
    ``house_account`` (``account`` is a house account), ``unknown_fill`` (no
    active booking: never booked, or cancelled or corrected),
    ``already_allocated`` (the booking is on a client account).
    """
    session, exec_id = key
    if account not in known_accounts:
        raise AllocationError("unknown_account", f"unknown account {account}")
    if houses.is_house(account):
        raise AllocationError("house_account", f"{account} is a house account, not a client's")
    if booking is None:
        raise AllocationError("unknown_fill", f"fill {session}/{exec_id} has no active booking "
                                              f"(not an LP fill booked here, or cancelled or corrected)")
    if booking.kind is not BookingKind.TRADE or booking.trade is None or booking.fill_key != key:
        raise AllocationError("unknown_fill", f"{booking.booking_id} is not the trade booking of "
                                              f"{session}/{exec_id}")
    if not houses.is_house(booking.account):
        raise AllocationError("already_allocated", f"fill {session}/{exec_id} is booked on "
                                                   f"{booking.account} ({booking.booking_id})")
    house = client_party(booking.account or "")
    to = client_party(account)
    postings = tuple(Posting(p.ledger, to, p.amount, p.value_date) if p.party == house else p
                     for p in booking.postings)
    moved = Booking(booking_id=allocation_booking_id(session, exec_id), kind=BookingKind.TRADE,
                    fill_key=key, reverses=None, account=account, counterparty=booking.counterparty,
                    pair=booking.pair, postings=postings, trade=replace(booking.trade, account=account),
                    allocated_from=booking.booking_id)
    return reverse(booking, key), moved
