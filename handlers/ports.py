"""The interfaces the stages depend on, declared here by the stages
themselves: the adapters implement them (``adapters.db.posttrade``,
``adapters.db.repository``, ``adapters.fix.gateway``) and the composition
root (``app``) hands them in; tests hand in fakes
(``tests/unit/fakes.py``).  Nothing here knows of SQL or sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Protocol

from stp.booking import Booking
from stp.breaks import StoredBreak
from stp.changes import BatchChanges, MarkingFills
from stp.fills import Fill
from stp.inbound import Inbound
from stp.intake import IntakeBatch
from stp.margin import MarginState
from stp.netting import NetKey
from stp.positions import Position
from stp.reconcile import ReconRun
from stp.settlement import Instruction

FillKey = tuple[str, str]           # (session, exec_id)


def now_us() -> int:
    """The wall clock in microseconds since the epoch (the stages' stamps)."""
    return time.time_ns() // 1000


class ChangesStore(Protocol):
    """Where a batch's changes are committed."""

    async def write(self, w: BatchChanges) -> None: ...

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is about reaching the store (down, locked, timed
        out: the same write may succeed later) rather than about the write."""
        ...


class BookingReader(Protocol):
    async def active_trade_bookings(self, keys: Iterable[FillKey]) -> dict[FillKey, Booking]: ...


class BreakReader(Protocol):
    async def stored_break(self, break_id: str) -> StoredBreak | None: ...

    async def escalations_due(self, until_us: int, limit: int = 1000) -> list[StoredBreak]: ...


class PostTradeStore(ChangesStore, BookingReader, BreakReader, Protocol):
    """Everything the post-trade pipeline reads and writes."""

    async def cursor(self) -> int: ...

    async def next_ids(self) -> tuple[int, int, int]:
        """Next booking seq, posting id, margin event id."""
        ...

    async def fills_after(self, fill_id: int, limit: int) -> list[tuple[int, Fill]]: ...

    async def waiting_fills(self) -> list[tuple[int, Fill]]:
        """The fills whose confirmation is still 'received' (waiting for
        their counterpart), in fill id order."""
        ...

    async def positions(self) -> dict[tuple[str, str], Position]: ...

    async def dated_positions(self) -> dict[tuple[str, str], dict[date | None, Decimal]]: ...

    async def nets(self) -> dict[NetKey, Decimal]: ...

    async def marking_fills(self, lp_sessions: Collection[str]) -> dict[str, MarkingFills]: ...

    async def market_prices(self) -> list[tuple[str, Decimal, int]]: ...

    async def client_cash(self) -> list[tuple[str, str, Decimal]]: ...

    async def unresolved_unpriced(self) -> list[tuple[str, str]]: ...

    async def margin_states(self) -> dict[str, MarginState]: ...

    async def instructions_since(self, since: date) -> list[Instruction]: ...

    async def pending_inbox(self) -> list[tuple[int, str, str]]: ...

    async def booking_exists(self, booking_id: str) -> bool: ...


class ReconStore(Protocol):
    """What a reconciliation reads and records."""

    async def session_fills(self, session: str) -> list[Fill]: ...

    async def counterparty_nets(self, counterparty: str) -> dict[tuple[str, date], Decimal]: ...

    async def record_recon(self, w: BatchChanges, run: ReconRun) -> None: ...


class IntakeStore(Protocol):
    """What the intake reads at its start and commits per batch."""

    async def write_intake(self, batch: IntakeBatch) -> None: ...

    async def known_hashes(self, keys: Sequence[FillKey]) -> dict[FillKey, str]: ...

    async def latest_quotes(self) -> list[tuple[str, str, int, int]]: ...

    async def traded_symbols(self) -> list[str]: ...

    async def trades_after(self, journal_id: int, after_id: int, limit: int = 20_000,
                           ) -> list[tuple[int, int, str, str, int]]: ...


class InboundSource(Protocol):
    """The gateway's messages waiting for the intake (``adapters.fix.gateway.InboundQueue``)."""

    wakeup: asyncio.Event
    high_water: int

    def take(self, limit: int) -> list[Inbound]: ...

    def __len__(self) -> int: ...
