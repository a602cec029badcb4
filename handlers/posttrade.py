"""The post-trade pipeline: confirm -> book -> positions -> net -> settle -> margin.

Fed with the fills the intake has just committed (in fill-id order).  Each
batch's outputs (bookings and postings, positions, nets, instructions,
confirmations, breaks, margin) and the pipeline cursor (the last fill id
processed) commit in one transaction.  On start the stages' state is loaded
from the database and the fills after the cursor are processed first, so a
crash between the intake's commit and this one loses nothing and books
nothing twice.  If a commit fails the in-memory state is rebuilt from the
database and processing resumes from the cursor.

A timer applies what waits in the inbox (settlement statuses, cash
movements, allocations), expires unmatched confirmations and runs the
settlement cut-offs.

Every LP fill books, allocated or not (``stp.allocation``): a fill without a
client account goes to its LP session's house account with an
``unallocated`` break; the platform's record, when it comes later, or the
desk (``allocate``) moves it to the client, which resolves the break.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog

from handlers.book import BookStage, PositionKeeper
from handlers.breaks import BreakSink
from handlers.commands import InboxCommands, WithdrawalRefused
from handlers.confirm import ConfirmStage
from handlers.margin import MarginStage
from handlers.net import NetStage
from handlers.ports import PostTradeStore, now_us
from handlers.settle import SettleStage
from stp.allocation import Houses, with_house_accounts
from stp.backoff import Backoff
from stp.booking import Booking, BookingKind
from stp.breaks import Break, BreakType, IllegalBreakTransition, UnknownBreak
from stp.changes import BatchChanges, Confirmation
from stp.confirm import Matcher, MatchResult, MatchState, Validator
from stp.fills import Fill
from stp.inbox import Origin, origin_of, parse_inbox
from stp.margin import MarginEvent
from stp.marketdata import Quote
from stp.positions import Position
from stp.reference import ReferenceData
from stp.timestamps import datetime_to_us, us_to_datetime

log = structlog.get_logger("engine.posttrade")


class PostTrade(InboxCommands):
    def __init__(self, store: PostTradeStore, reference: ReferenceData, lp_sessions: frozenset[str],
                 key_by_platform: dict[str, str], lp_for_platform: dict[str, str],
                 match_window: timedelta = timedelta(seconds=30),
                 price_tolerance: Decimal = Decimal("0.00001"), qty_tolerance: Decimal = Decimal(0),
                 timer_seconds: float = 1.0, topic_prefix: str = "fxstp",
                 escalate_before: timedelta = timedelta(hours=1),
                 house_accounts: Mapping[str, str] | None = None) -> None:
        self.store = store
        # every LP session's house account (configured, else HOUSE-<session>),
        # in the reference data like any other account
        self.houses = Houses.for_sessions(lp_sessions, house_accounts)
        reference = with_house_accounts(reference, self.houses)
        self.reference = reference
        self.lp_sessions = lp_sessions
        self._matcher_args = (match_window, price_tolerance, qty_tolerance, key_by_platform,
                              lp_for_platform)
        self.timer_seconds = timer_seconds
        self.queue: asyncio.Queue[list[tuple[int, Fill]]] = asyncio.Queue()
        self.cursor = 0
        self.processed = 0
        self.topic_prefix = topic_prefix
        self.breaks = BreakSink(topic_prefix, reference, escalate_before)
        self.committed = asyncio.Event()      # set after every commit (the outbox relay waits on it)
        self.tick_now = asyncio.Event()       # set to run the timer's work at once (a command arrived)
        # a batch and the timer's work never interleave (both change the stages'
        # state and commit it; a batch awaits the database midway)
        self._exclusive = asyncio.Lock()
        self._stopping = False
        # fills handed over in memory but not processed; past the limit the
        # hand-off stops and the pipeline reads them back from the database
        self.max_queued = 20_000
        self._queued = 0
        self._behind = False
        # the latest market-data price per pair not applied yet (committed by the intake)
        self._quotes: dict[str, tuple[datetime, Decimal]] = {}
        # True while the intake has messages waiting: the pipeline then lets it
        # run first (journaling what arrives is the durable step; post-trade
        # catches up from the database when the load drops)
        self.intake_waiting: Callable[[], bool] | None = None
        # when the price each pair is marked at was received: an older one
        # (a fill read back late, after a newer quote) does not replace it
        self._price_at: dict[str, datetime] = {}
        # after a failed commit the in-memory state is ahead of the database
        # until it is reloaded: the timer's work waits (it would commit it)
        self._reloading = False
        self.yield_every = 100
        self._quotes_due = False      # poke(): market data may have been committed
        # fills read back per batch; smaller in a process of its own, where each
        # batch's transaction holds SQLite's write lock against the intake's
        self.catch_up_batch = 2000
        # a failed commit is tried again after 0.5 s, doubling to 30 s
        self.backoff = Backoff()              # the batches
        self.tick_backoff = Backoff()         # the timer's work
        # the in-memory state is ahead of the database (a failed tick): the next
        # batch or tick reloads it first
        self._stale = False
        # the confirmation expiries of a tick whose commit failed (breaks and
        # confirmation rows): the matcher has let them go, the recovery commits them
        self._unsaved_expiry: tuple[list[Break], dict[int, Confirmation]] | None = None

    # -- state ------------------------------------------------------------
    async def load(self, rewait: bool = True) -> None:
        """The stages' state from the store; ``rewait``: the fills waiting
        for their counterpart back in the matcher (not when the caller keeps
        its matcher: ``_load_state(keep_confirm=True)``)."""
        store = self.store
        self.cursor = await store.cursor()
        next_seq, next_posting, next_event = await store.next_ids()
        positions = await store.positions()
        dated = await store.dated_positions()
        nets = await store.nets()
        self.book = BookStage(store, frozenset(self.reference.accounts), next_seq, next_posting,
                              houses=self.houses,
                              pending_us=int(2 * self._matcher_args[0].total_seconds() * 1e6) + 1_000_000)
        self.positions = PositionKeeper(positions, dated)
        self.net = NetStage(nets)
        since = datetime.now(UTC).date() - timedelta(days=31)
        self.settle = SettleStage(self.reference, await store.instructions_since(since))
        clients = frozenset(a for a in self.reference.accounts if not self.houses.is_house(a))
        self.confirm = ConfirmStage(Validator(self.reference),
                                    Matcher(*self._matcher_args, client_accounts=clients), self.lp_sessions)
        if rewait:
            for fill_id, fill in await store.waiting_fills():
                result = self.confirm.rewait(fill_id, fill)
                if result.state is not MatchState.RECEIVED:     # they did not match before: not expected
                    log.warning("posttrade_rewait_matched", session=fill.session, exec_id=fill.exec_id,
                                state=str(result.state))
        # house accounts: margin computed and published as state, no margin events
        self.margin = MarginStage(self.reference, next_event, self.topic_prefix, quiet=self.houses.accounts)
        # latest price per pair, then positions and cash into the margin book
        # each pair's price: its latest fill that marked it (booked, not
        # off-market) or its market data, whichever was received last; and
        # confirmation's reference price, the last trade that passed its check
        marks = await store.marking_fills(self.lp_sessions)
        latest = {symbol: (datetime_to_us(m.mark.received_at), m.mark.spot_rate or m.mark.last_px)
                  for symbol, m in marks.items()}
        for symbol, price, received in await store.market_prices():
            if symbol not in latest or received > latest[symbol][0]:
                latest[symbol] = (received, price)
        for symbol, m in marks.items():
            if m.trade is not None:
                self.confirm.validator.set_reference_price(symbol, m.trade.last_px)
        self.margin.on_prices({symbol: price for symbol, (_, price) in latest.items()})
        self._price_at = {symbol: us_to_datetime(received_us) for symbol, (received_us, _) in latest.items()}
        for account, ccy, amount in await store.client_cash():
            self.margin.on_cash(account, ccy, amount)
        self.margin.on_positions(list(positions.values()))
        self.margin.take_breaks()     # unpriced before the restart: its breaks are stored already
        self.margin.take_priced_again()
        for account, currency in await store.unresolved_unpriced():
            # priced while the engine was down: resolved at the next commit
            self.margin.resolve_if_priced(account, currency)
        self.margin.flush([], BatchChanges(), now_us())
        # the margin state has hysteresis: an account stays in margin call until
        # its level is above the band, so the state is restored, not re-derived
        # (an unpriced account's: the state of its last full valuation)
        self.margin.restore(await store.margin_states())
        if rewait:
            await self._rebuild_pending()      # the house fills among them wait for their record
        log.info("posttrade_loaded", cursor=self.cursor, positions=len(positions), nets=len(nets),
                 waiting=self.confirm.matcher.pending_count)

    # -- feeding ------------------------------------------------------------
    def submit(self, fills: list[tuple[int, Fill]]) -> None:
        """Called by the intake after its commit (same event loop).  Memory stays
        bounded: when the pipeline is too far behind, the fills are left to the
        database (they are committed) and read back by cursor."""
        if not fills:
            return
        if self._behind or self._queued + len(fills) > self.max_queued:
            self._behind = True
            return
        self._queued += len(fills)
        self.queue.put_nowait(fills)

    def submit_quotes(self, quotes: list[Quote]) -> None:
        """Called by the intake after committing market data: the newest price
        per pair moves margin at the next batch (or at once when idle)."""
        for quote in quotes:
            current = self._quotes.get(quote.symbol)
            if current is None or quote.received_at >= current[0]:
                self._quotes[quote.symbol] = (quote.received_at, quote.price)
        if self.queue.empty():
            self.queue.put_nowait([])          # wake the loop: a batch of no fills, only prices

    def poke(self) -> None:
        """The intake committed something (another process: the fills, quotes
        and breaks are in the database): read what is new."""
        self._behind = True
        self._quotes_due = True
        if self.queue.empty():
            self.queue.put_nowait([])          # wake the loop

    async def _read_quotes(self) -> None:
        """The latest market-data price per pair, as the intake committed it."""
        self._quotes_due = False
        for symbol, price, received_us in await self.store.market_prices():
            at = us_to_datetime(received_us)
            marked = self._price_at.get(symbol)
            current = self._quotes.get(symbol)
            if (marked is None or at > marked) and (current is None or at > current[0]):
                self._quotes[symbol] = (at, price)

    async def catch_up(self) -> None:
        """Process the fills committed by the intake but not yet here."""
        if self._quotes_due:
            await self._read_quotes()
        while True:
            fills = await self.store.fills_after(self.cursor, self.catch_up_batch)
            if not fills or (self._stopping and self.cursor >= fills[-1][0]):
                if self._quotes:
                    await self._process_safely([])     # prices alone move margin too
                return
            if not await self._process_safely(fills):
                return                                 # stopping after a failure

    async def _catch_up_once(self) -> None:
        """Everything after the cursor, raising on a failure (the caller
        reloads and retries)."""
        while True:
            fills = await self.store.fills_after(self.cursor, self.catch_up_batch)
            if not fills:
                if self._quotes:
                    await self.process([])
                return
            await self.process(fills)

    async def run(self) -> None:
        await self.catch_up()
        timer = asyncio.create_task(self._timer())
        try:
            while True:
                if self._behind and self.queue.empty():
                    self._behind = False            # read what was left to the database
                    await self.catch_up()
                    continue
                if self._stopping and self.queue.empty():
                    break
                try:
                    fills = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    continue
                while not self.queue.empty() and len(fills) < 2000:
                    fills += self.queue.get_nowait()
                self._queued -= len(fills)
                await self._process_safely(fills)
        finally:
            timer.cancel()

    async def stop(self) -> None:
        self._stopping = True

    async def _process_safely(self, fills: list[tuple[int, Fill]]) -> bool:
        """Process ``fills``.  Should that fail, the in-memory state is rebuilt
        from the database and everything after the cursor is processed again
        (the fills are committed), waiting ``self.backoff`` before each new
        attempt (0.5 s doubling to 30 s, reset by a success).  False when it
        gave up because the pipeline is stopping (the next start catches up
        from the cursor)."""
        backoff = self.backoff
        reload = False
        while True:
            try:
                if reload:
                    await self._reload()
                    self._reloading = False
                    await self._catch_up_once()
                else:
                    await self.process(fills)
                backoff.reset()
                return True
            except Exception as exc:
                self._reloading = True      # the timer's work waits for the reload
                delay = backoff.next()
                log.error("posttrade_reload_failed" if reload else "posttrade_failed",
                          error=repr(exc)[:300], fills=len(fills), retry_in_s=delay)
                if self._stopping:
                    return False
                await asyncio.sleep(delay)
                reload = True

    async def _reload(self) -> None:
        """The stages' state from the database (after a failed commit, the
        in-memory state may be ahead of it)."""
        async with self._exclusive:
            await self._load_state()

    async def _load_state(self, keep_confirm: bool = False) -> None:
        """``load`` with the lock held; the state stays marked stale until it
        succeeds (the next batch or tick reloads first).  ``keep_confirm``
        (after a failed tick, which changes nothing in the confirm stage but
        its expiries, carried in ``_unsaved_expiry``): the fills waiting for
        their counterpart and the validator's order state are kept (without
        it, the waiting fills are rebuilt from the store)."""
        confirm = self.confirm if keep_confirm else None
        self._stale = True
        await self.load(rewait=confirm is None)
        if confirm is not None:
            self.confirm = confirm
            await self._rebuild_pending()
        else:
            self._unsaved_expiry = None
        self._stale = False

    async def _rebuild_pending(self) -> None:
        """The house fills waiting for their platform record (``book.pending``),
        rebuilt with the kept matcher: each LP fill it still holds whose
        active booking (in the database) is on a house account.  ``load``
        starts the book stage empty; without this, a platform record matched
        after a failed tick allocated nothing (the fill stayed on the house,
        its ``unallocated`` break open, the confirmation confirmed)."""
        waiting = self.confirm.matcher.waiting_lp_fills()
        if not waiting:
            return
        arrived = {(f.session, f.exec_id): at for f, at in waiting}
        stored = await self.store.active_trade_bookings(arrived)
        for key, at in arrived.items():            # oldest first, as they were remembered
            booking = stored.get(key)
            if booking is not None:
                self.book.remember(key, booking, datetime_to_us(at))

    # -- the pipeline -----------------------------------------------------------
    async def process(self, fills: list[tuple[int, Fill]]) -> None:
        async with self._exclusive:
            if self._stale:                  # after a failed tick
                await self._load_state(keep_confirm=True)
            await self._process(fills)

    async def _process(self, fills: list[tuple[int, Fill]]) -> None:
        fills = [(i, f) for i, f in fills if i > self.cursor]
        quotes, self._quotes = self._quotes, {}
        if not fills and not quotes:
            return
        w = BatchChanges()
        now = datetime.now(UTC)
        stamp = now_us()
        breaks: list[Break] = []
        events: list[MarginEvent] = []
        # What only needs the batch's final state is applied once per batch:
        # the last price per pair, the last position per (account, pair), the
        # last net per key.  Margin, exposures and instructions are current
        # at every commit.
        # the latest price per pair: market data, then the batch's fills, by receive time
        latest: dict[str, tuple[datetime, Decimal]] = dict(quotes)
        positions: dict[tuple[str, str], Position] = {}
        try:
            await self.book.begin_batch(f for _, f in fills)
            waiting = self.intake_waiting
            on_fill, book = self.confirm.on_fill, self.book.book
            apply_position, apply_net = self.positions.apply, self.net.apply
            for n, (fill_id, fill) in enumerate(fills, 1):
                if waiting is not None and not n % self.yield_every and waiting():
                    await asyncio.sleep(0)
                bookable, found = on_fill(fill_id, fill, now, w, stamp)
                if fill.settl_date is None:
                    # spot by SettlType: the engine's value date settles it, and
                    # its breaks' cut-off (escalations) follows from that date
                    value_date = self.confirm.validator.value_date_of(fill)
                    found = [b if b.value_date is not None else replace(b, value_date=value_date)
                             for b in found]
                    fill = replace(fill, settl_date=value_date)
                if found:
                    breaks += found
                match = self.confirm.last
                lp_fill = fill.session in self.lp_sessions
                if not bookable:
                    if not lp_fill and match is not None and match.counterpart is not None \
                            and _allocates(match):
                        # a platform record: the LP fill it matched may wait on the house
                        moved = self.book.allocate_pending(match.counterpart, fill, w, stamp)
                        if moved:
                            for booking in moved:
                                position = apply_position(booking)
                                if position is not None:
                                    positions[(position.account, position.pair)] = position
                                apply_net(booking)
                            lp = match.counterpart
                            self._resolve_unallocated(
                                lp.session, lp.exec_id, f"match:{fill.session}/{fill.exec_id}",
                                f"allocated to {fill.account} by the platform record", w, stamp)
                    continue
                # the platform record's account only if the record agrees with
                # the fill (a mismatch in anything but the account books on the house)
                counterpart = match.counterpart if match is not None and lp_fill else None
                disagreeing = None
                if counterpart is not None and match is not None and not _allocates(match):
                    counterpart, disagreeing = None, counterpart
                awaiting = match is not None and match.state is MatchState.RECEIVED
                bookings, booking_breaks = book(fill_id, fill, w, stamp, counterpart, awaiting, disagreeing)
                if booking_breaks:
                    breaks += booking_breaks
                if fill.exec_ref_id and self._reverses_house(bookings):
                    self._resolve_unallocated(
                        fill.session, fill.exec_ref_id, "engine",
                        f"{fill.kind.name.lower()} {fill.exec_id}", w, stamp)
                for booking in bookings:
                    position = apply_position(booking)
                    if position is not None:
                        positions[(position.account, position.pair)] = position
                    apply_net(booking)
                # the fill's price marks the pair only if it booked and is not
                # off-market (flagged price_out_of_tolerance): a refused or
                # off-market price must not revalue every account holding the pair
                if not bookings or (found and any(b.type is BreakType.PRICE_OUT_OF_TOLERANCE
                                                  for b in found)):
                    continue
                symbol = fill.pair.symbol
                seen = latest.get(symbol)
                if seen is None or fill.received_at >= seen[0]:
                    latest[symbol] = (fill.received_at, fill.spot_rate or fill.last_px)
            # a price moves every account holding or converting through the pair
            # (each account revalued once per batch, with all its new prices)
            changed: dict[str, Decimal] = {}
            for symbol, (received, price) in latest.items():
                marked = self._price_at.get(symbol)
                if marked is not None and received < marked:
                    continue                    # older than the price already applied
                self._price_at[symbol] = received
                changed[symbol] = price
            events += self.margin.on_prices(changed)
            events += self.margin.on_positions(list(positions.values()))
            for account in sorted({acc for acc, _ in positions}):
                breaks += self.margin.exposure_breaks(account)
                if fills:
                    events += self._protect_negative_balance(account, fills[-1][0], w, stamp)
            breaks += self.margin.take_breaks()
            self._resolve_priced_again(w, stamp)
            self.positions.end_batch(w, stamp)
            breaks += self.settle.on_changes(self.net.end_batch(w, stamp), now, w)
            for brk in breaks:
                self.breaks.add(brk, w, stamp)
            self.margin.flush(events, w, stamp)
            if fills:
                w.cursor = fills[-1][0]
            if w:
                await self.store.write(w)
                self.committed.set()
        except BaseException:
            for symbol, value in quotes.items():      # not applied: keep them for the retry
                self._quotes.setdefault(symbol, value)
            raise
        finally:
            self.book.end_batch()
            self.positions.abort_batch()
            self.net.abort_batch()
        if fills:
            self.cursor = fills[-1][0]
            self.processed += len(fills)

    def _resolve_priced_again(self, w: BatchChanges, stamp: int) -> None:
        """A currency an account held without a rate has one now: its
        ``margin_unpriced`` break is resolved by the engine."""
        for brk in self.margin.take_priced_again():
            account, currency = brk.keys["account"], brk.keys["currency"]
            rate = f"{currency}/{self.reference.accounts[account].currency}"
            self.breaks.resolve(brk, "engine", f"a {rate} rate arrived: the margin of {account} is priced",
                                w, stamp)

    async def _timer(self) -> None:
        """The timer's work every ``timer_seconds`` (or at once when a command
        arrives); after a failure the next attempt waits ``tick_backoff``
        (0.5 s doubling to 30 s)."""
        wait = self.timer_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tick_now.wait(), wait)
            self.tick_now.clear()
            try:
                await self.tick()
                self.tick_backoff.reset()
                wait = self.timer_seconds
            except Exception as exc:
                wait = self.tick_backoff.next()
                log.error("posttrade_timer_failed", error=repr(exc)[:300], retry_in_s=wait)

    async def tick(self, now: datetime | None = None) -> None:
        """The timer's work in one transaction.  Should it fail, the state is
        reloaded from the database and the work is done again in parts: the
        expiries, cut-offs and escalations, then each waiting command in a
        transaction of its own; a command that fails alone for what it is is
        marked failed in the inbox with its error (and answered, if it came
        from the bus), so the commands after it go through.  Raises only when
        the database itself fails (the state stays marked stale: the next
        tick or batch reloads it first; the command waits in the inbox)."""
        if self._reloading:
            return
        async with self._exclusive:
            if self._reloading:        # a batch failed while this waited for the lock
                return
            if self._stale:
                await self._load_state(keep_confirm=True)
            try:
                await self._tick(now)
            except Exception as exc:
                self._stale = True         # its in-memory effects are not in the database
                log.error("posttrade_tick_failed", error=repr(exc)[:300])
                try:
                    await self._recover_tick(now)
                except BaseException:
                    self._stale = True
                    raise

    async def _tick(self, now: datetime | None = None, inbox: list[tuple[int, str, str]] | None = None,
                    timers: bool = True) -> None:
        """Inbox, confirmation expiry, settlement cut-offs and escalations (one
        transaction); ``inbox``: only these commands, ``timers=False``: no
        expiry or cut-off."""
        now = now or datetime.now(UTC)
        stamp = now_us()
        w = BatchChanges()
        breaks: list[Break] = []
        if timers:
            expired = self.confirm.expire(now, w, stamp)
            if self._unsaved_expiry is not None:          # a failed tick's, first
                carried, rows = self._unsaved_expiry
                expired = carried + expired
                for key, row in rows.items():
                    w.confirmations.setdefault(key, row)
            self._unsaved_expiry = (expired, dict(w.confirmations))
            breaks += expired
            breaks += self.settle.run_cut_offs(now, w)
        events: list[MarginEvent] = []
        for inbox_id, kind, payload_text in await self.store.pending_inbox() if inbox is None else inbox:
            origin = Origin(inbox_id)
            written = w.extent()
            try:
                parsed = json.loads(payload_text)
                if not isinstance(parsed, dict):
                    raise ValueError("the command is not a JSON object")
                origin = origin_of(inbox_id, parsed)
                result, found, evs = await self._apply(parse_inbox(kind, parsed), origin, w, stamp)
                breaks += found
                events += evs
            except (ValueError, KeyError, TypeError) as exc:
                if w.extent() != written:
                    # not a refusal: it failed after writing part of what it
                    # does (and moving the state in memory): the tick fails,
                    # the recovery reloads and fails this command alone
                    raise
                result = f"error: {exc}"
                log.warning("inbox_rejected", id=inbox_id, kind=kind, error=str(exc))
                if origin.via_bus:
                    code = ("unknown_break" if isinstance(exc, UnknownBreak) else "illegal_transition"
                            if isinstance(exc, IllegalBreakTransition) else "withdrawal_refused"
                            if isinstance(exc, WithdrawalRefused) else "invalid_command")
                    self._reply(origin, False, now, w, stamp, error=code, message=str(exc))
            w.inbox_done.append((inbox_id, result))
        breaks += self.margin.take_breaks()
        self._resolve_priced_again(w, stamp)
        for brk in breaks:
            self.breaks.add(brk, w, stamp)
        await self.breaks.escalate(self.store, now, w, stamp)
        self.margin.flush(events, w, stamp)
        if w:
            await self.store.write(w)
            self.committed.set()
        if timers:
            self._unsaved_expiry = None

    async def _recover_tick(self, now: datetime | None) -> None:
        """After a failed tick (lock held, state stale): reload, then the
        timer's own work, then each waiting command alone.  A command that
        fails for what it is (a constraint, bad data, a bug) is marked failed
        at once; one that fails because the database is unavailable
        (``database_unavailable``) is not: the error is raised, the timer
        backs off and later ticks try it again."""
        await self._load_state(keep_confirm=True)
        await self._tick(now, inbox=[])                # not a command's fault if this fails
        for row in await self.store.pending_inbox():
            try:
                await self._tick(now, inbox=[row], timers=False)
            except Exception as exc:
                self._stale = True
                await self._load_state(keep_confirm=True)     # undo what it did in memory
                if self.store.unavailable(exc):
                    # the database, not the command: never its failure; the
                    # tick raises, the timer backs off and a later tick
                    # applies it, however long the outage lasts
                    raise
                await self._fail_command(row, exc, now or datetime.now(UTC))

    def _reverses_house(self, bookings: tuple[Booking, ...]) -> bool:
        return any(b.kind is BookingKind.REVERSAL and self.houses.is_house(b.account) for b in bookings)

def _allocates(match: MatchResult) -> bool:
    """A match whose platform record may give the LP fill its account: a
    confirmed one, or a mismatch in the account alone (the platform's
    record names the client).  A record that differs in side, quantity,
    price, pair or value date is not the fill's: the fill stays on the house."""
    if match.state is MatchState.CONFIRMED:
        return True
    return match.state is MatchState.MISMATCHED and all(d.field == "account" for d in match.differences)
