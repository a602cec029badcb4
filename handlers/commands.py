"""The commands post-trade applies from its inbox (``stp.inbox``): the
desk's and the bus's break lifecycle, settlement statuses, cash movements
and allocations; and what a booking outside a batch of fills entails
(negative balance protection, the ``unallocated`` break resolved).

Part of ``handlers.posttrade.PostTrade`` (which the timer drives: each
command in the timer's transaction, its refusal or failure answered); kept
apart so the pipeline's path of a fill reads in one file and the commands'
in another.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from handlers.book import BookStage, PositionKeeper
from handlers.breaks import BreakSink
from handlers.margin import MarginStage
from handlers.net import NetStage
from handlers.ports import PostTradeStore, now_us
from handlers.settle import SettleStage
from stp.allocation import AllocationError, Houses
from stp.allocation import allocation_booking_id as allocation_id
from stp.booking import book_cash, book_negative_balance_credit
from stp.breaks import Break, BreakState, BreakType, UnknownBreak, transition
from stp.changes import BatchChanges, LifecycleChange
from stp.currency import minor_units
from stp.events import break_changed, command_reply, reply_topic
from stp.inbox import Allocation, BreakAction, CashMovement, InboxCommand, Origin, SettlementStatus, origin_of
from stp.margin import MarginEvent
from stp.positions import Position
from stp.reference import ReferenceData
from stp.timestamps import us_to_datetime

log = structlog.get_logger("engine.posttrade")


class WithdrawalRefused(ValueError):
    """A withdrawal above what the account may take out (nothing is booked)."""


class InboxCommands:
    """The inbox's commands, applied to the pipeline's stages (``PostTrade``
    sets these attributes)."""

    store: PostTradeStore
    reference: ReferenceData
    houses: Houses
    topic_prefix: str
    committed: asyncio.Event
    book: BookStage
    positions: PositionKeeper
    net: NetStage
    settle: SettleStage
    margin: MarginStage
    breaks: BreakSink

    async def _apply(self, command: InboxCommand, origin: Origin, w: BatchChanges,
                     stamp: int) -> tuple[str, list[Break], list[MarginEvent]]:
        match command:
            case BreakAction():
                return await self._break_lifecycle(command, origin, w, stamp), [], []
            case SettlementStatus():
                breaks, result = self.settle.apply_status(command, w)
                return result, breaks, []
            case Allocation():
                return await self._allocate(command, origin, w, stamp)
            case CashMovement():
                return await self._cash(command, origin, w, stamp)

    async def _fail_command(self, row: tuple[int, str, str], exc: Exception, now: datetime) -> None:
        """Mark a command that cannot be applied failed, with its error, and
        answer it if it came from the bus; nothing else of it is kept."""
        inbox_id, kind, payload_text = row
        message = f"not applied: {type(exc).__name__}: {exc}"[:500]
        log.error("inbox_failed", id=inbox_id, kind=kind, error=message)
        w = BatchChanges()
        stamp = now_us()
        try:
            payload = json.loads(payload_text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("via") == "mqtt":
            self._reply(origin_of(inbox_id, payload), False, now, w, stamp, error="command_failed",
                        message=message)
        w.inbox_done.append((inbox_id, f"error: {message}"))
        await self.store.write(w)
        self.committed.set()

    async def _allocate(self, command: Allocation, origin: Origin, w: BatchChanges,
                        stamp: int) -> tuple[str, list[Break], list[MarginEvent]]:
        """The desk's allocation of an LP fill from its house account to a
        client: a reversal on the house and a booking on the client, linked;
        positions and margin move, the LP's nets do not; the fill's
        ``unallocated`` break is resolved.  A refusal (unknown fill or
        account, already allocated) changes nothing and is the command's
        error (code in the reply)."""
        session, exec_id, account = command.session, command.exec_id, command.account
        by, reason = str(command.by or "").strip(), command.reason
        if not by:
            raise ValueError("say who allocates (--by)")
        if len(by) > 80:
            raise ValueError("who (--by) is longer than 80 characters")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("reason must be text")
        key = (session, exec_id)
        now = us_to_datetime(stamp)
        try:
            if allocation_id(session, exec_id) in w.bookings:
                raise AllocationError("already_allocated", f"fill {session}/{exec_id} was just allocated")
            booking = (await self.store.active_trade_bookings({key})).get(key)
            bookings = self.book.allocate_active(booking, account, key, by, w, stamp)
        except AllocationError as exc:
            log.warning("allocation_refused", session=session, exec_id=exec_id, account=account, by=by,
                        code=exc.code, error=exc.message)
            if origin.via_bus:
                self._reply(origin, False, now, w, stamp, error=exc.code, message=exc.message)
            return f"error: {exc.code}: {exc.message}", [], []
        # written from here on: a failure is the tick's (``_tick`` re-raises
        # it, ``_recover_tick`` reloads the state and fails this command alone)
        positions: dict[tuple[str, str], Position] = {}
        for b in bookings:
            position = self.positions.apply(b)
            if position is not None:
                positions[(position.account, position.pair)] = position
            self.net.apply(b)
        self.positions.end_batch(w, stamp)
        breaks = self.settle.on_changes(self.net.end_batch(w, stamp), now, w)
        events = self.margin.on_positions(list(positions.values()))
        for acc in sorted({acc for acc, _ in positions}):
            breaks += self.margin.exposure_breaks(acc)
            # the client's new booking can close its positions at a loss
            events += self._protect_negative_balance(acc, bookings[1].booking_id, w, stamp)
        house = bookings[0].account
        self._resolve_unallocated(session, exec_id, by, reason or f"allocated to {account}", w, stamp)
        log.info("fill_allocated", session=session, exec_id=exec_id, house=house, account=account, by=by,
                 booking_id=bookings[1].booking_id)
        if origin.via_bus:
            self._reply(origin, True, now, w, stamp,
                        result={"session": session, "exec_id": exec_id, "account": account, "from": house,
                                "booking_id": bookings[1].booking_id, "reversal_id": bookings[0].booking_id,
                                "by": by})
        return f"allocated {session}/{exec_id} from {house} to {account} by {by}", breaks, events

    def _resolve_unallocated(self, session: str, exec_id: str, by: str, reason: str,
                             w: BatchChanges, stamp: int) -> None:
        """The fill's ``unallocated`` break is resolved (it was allocated, or
        cancelled or corrected on the house), through ``BreakSink.resolve``:
        one detected in this same write is dropped (never raised), a stored
        one still open or acknowledged is resolved with its occurrence's
        event, at the commit (no read per fill)."""
        brk = Break(BreakType.UNALLOCATED, {"session": session, "exec_id": exec_id}, "")
        self.breaks.resolve(brk, by[:80], reason, w, stamp)

    async def _cash(self, command: CashMovement, origin: Origin, w: BatchChanges,
                    stamp: int) -> tuple[str, list[Break], list[MarginEvent]]:
        """A deposit (amount > 0) or withdrawal (< 0) of client cash, booked
        against client money.  Refused (ValueError, nothing booked): an
        unknown account or currency, an amount that is not a number or not
        given as a string or an integer (a JSON float is not exact), a
        reference already booked, a withdrawal above what the account may take
        out (``MarginBook.withdrawal_refusal``)."""
        account, currency = command.account, command.currency
        if account not in self.reference.accounts:
            raise ValueError(f"unknown account {account}")
        minor_units(currency)                          # ValueError for an unknown currency
        raw_amount = command.amount
        if isinstance(raw_amount, bool) or not isinstance(raw_amount, str | int):
            # a JSON float is binary: 0.1 is not 0.1; only the text of the amount is exact
            raise ValueError(f"amount {raw_amount!r} must be a string (or an integer), "
                             f"not {type(raw_amount).__name__}: give it as text, e.g. \"100.10\"")
        try:
            amount = Decimal(raw_amount)
        except InvalidOperation:
            raise ValueError(f"amount {raw_amount!r} is not a number") from None
        if not amount.is_finite():
            raise ValueError(f"amount {raw_amount!r} is not a number")
        reference = str(command.reference or "").strip()
        if not reference:
            raise ValueError("a cash movement needs a reference")
        booking_id = f"C:{reference}"
        if booking_id in w.bookings or await self.store.booking_exists(booking_id):
            raise ValueError(f"reference {reference!r} is already booked ({booking_id}): "
                             "give each cash movement a reference of its own")
        booking = book_cash(booking_id, account, currency, amount, command.value_date)
        if amount < 0:
            refusal = self.margin.book.withdrawal_refusal(account, currency, -amount)
            if refusal is not None:
                raise WithdrawalRefused(refusal)
        self.book.write_booking(booking, None, w, stamp)
        events = self.margin.on_cash(account, currency, amount)
        if origin.via_bus:
            self._reply(origin, True, us_to_datetime(stamp), w, stamp,
                        result={"booking_id": booking.booking_id, "account": account})
        return f"booked {booking.booking_id}", [], events

    async def _break_lifecycle(self, command: BreakAction, origin: Origin, w: BatchChanges,
                               stamp: int) -> str:
        """open -> acknowledged -> resolved, who/when/why; every change is published."""
        action, break_id, by, reason = command.action, command.break_id, command.by, command.reason
        stored = await self.store.stored_break(break_id)
        if stored is None:
            raise UnknownBreak(break_id)
        state = w.changed_state.get(break_id, stored.state)     # changed earlier in this tick?
        new = transition(state, action, by, reason)
        if new is BreakState.ACKNOWLEDGED:
            w.change_break(LifecycleChange(break_id, "acknowledged", by, stamp))
        else:
            w.change_break(LifecycleChange(break_id, "resolved", by, stamp, reason))
        at = us_to_datetime(stamp)
        w.publish(break_changed(break_id, stored.type, stored.keys, new.value, by, reason,
                                self.topic_prefix, at, stored.occurrence), stamp)
        log.info("break_changed", break_id=break_id, state=new.value, by=by, reason=reason)
        if origin.via_bus:
            self._reply(origin, True, at, w, stamp,
                        result={"break_id": break_id, "state": new.value, "by": by})
        return f"{new.value} by {by}"

    def _reply(self, origin: Origin, ok: bool, at: datetime, w: BatchChanges, stamp: int,
               **answer: Any) -> None:
        """Answer a command from the bus, in the transaction that applies it;
        the inbox row keeps the reply, so a repeat of the command (same
        request_id) gets the same one (``adapters.commands``)."""
        inbox_id = origin.inbox_id
        topic = reply_topic(self.topic_prefix, origin.reply_to)
        reply = command_reply(origin.request_id, topic, ok, at, reply_id=f"inbox-{inbox_id}", **answer)
        w.publish(reply, stamp)
        w.inbox_replies[inbox_id] = reply.payload

    def _protect_negative_balance(self, account: str, ref: int | str, w: BatchChanges,
                                  stamp: int) -> list[MarginEvent]:
        """Negative balance protection (the account's leverage group): an
        account left without positions (a stop-out closed them) and with a
        balance below zero gets it back to zero, booked against the house
        (``NBP:<account>:<ref>``, ref: the last fill id of the batch, or the
        allocation's booking id), with a margin event ``balance_reset`` and a
        log line.  Never a house account (the broker's own book: crediting it
        from the house would book the house against itself), whatever its
        leverage group says."""
        if self.houses.is_house(account):
            return []
        credit = self.margin.negative_balance_adjustment(account)
        if credit is None:
            return []
        currency = self.reference.accounts[account].currency
        booking = book_negative_balance_credit(f"NBP:{account}:{ref}", account, currency, credit)
        self.book.write_booking(booking, None, w, stamp)
        events = self.margin.on_cash(account, currency, credit)
        m = self.margin.book.snapshot(account)
        log.warning("negative_balance_protection", account=account, credit=str(credit), currency=currency,
                    booking_id=booking.booking_id, balance=str(m.balance))
        return [*events, MarginEvent(account, "balance_reset", m.margin_level, m.equity, m.used_margin,
                                     Decimal(0))]
