"""Intake: from the FIX gateway's hand-off to committed journal and fills.

One asyncio task drains the ``InboundQueue`` in batches (whatever arrived
while the previous batch was committing, up to ``batch_max``), decides each
message's outcome with the core (``stp.fills.normalise``, ``stp.intake``),
and commits the batch in one transaction (journal rows, new fills,
conflicts, each session's last inbound MsgSeqNum, the latest quote per
pair from market data).  DontKnowTrades and BusinessMessageRejects go out
after the commit.  Logging is per batch and per problem, never per fill.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from handlers.breaks import BreakSink
from handlers.ports import InboundSource, IntakeStore
from stp.backoff import Backoff
from stp.breaks import Break
from stp.changes import BatchChanges
from stp.fills import Fill, NotAFill, Rejection, normalise
from stp.fixwire import GarbledMessage, fields_of, parse_text
from stp.inbound import SESSION_EVENTS, Inbound
from stp.intake import Conflict, IntakeBatch, IntakeState, JournalEntry, Outcome, dedupe
from stp.journal import Parsed, escaped_text, intake_break, journal_raw, message_seq, tolerant_fields
from stp.limits import (
    AmountLimits,
    Reference,
    check_fill_move,
    check_quote,
    trade_move,
    usable_reference,
)
from stp.marketdata import OTHER, Quote, QuoteRejection, parse_snapshot
from stp.sessions import SessionHealth, SessionSchedule, session_day

log = structlog.get_logger("engine.intake")

DontKnowSender = Callable[[str, dict[int, str], str, str], bool]


class LatencyHistogram:
    """Receipt-to-commit latencies in log-spaced buckets (bounded memory)."""

    BOUNDS: tuple[float, ...] = tuple(0.0001 * 1.1 ** i for i in range(160))  # 0.1 ms .. ~400 s

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.n = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.n += 1

    def quantile(self, q: float) -> float:
        if not self.n:
            return 0.0
        target = q * self.n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= target:
                return self.BOUNDS[min(i, len(self.BOUNDS) - 1)]
        return self.BOUNDS[-1]


@dataclass(slots=True)
class IntakeCounters:
    messages: int = 0
    batches: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dont_know_sent: int = 0
    business_rejects_sent: int = 0
    quotes_refused: int = 0
    started: float = field(default_factory=time.monotonic)


class KnownExecutions:
    """(session, ExecID) -> content hash of recently stored fills (bounded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._map: dict[tuple[str, str], str] = {}

    def get(self, key: tuple[str, str]) -> str | None:
        return self._map.get(key)

    def add(self, key: tuple[str, str], content_hash: str) -> None:
        m = self._map
        if len(m) >= self.limit:
            for old in list(m)[: self.limit // 10]:   # drop the oldest tenth
                del m[old]
        m[key] = content_hash

    def __contains__(self, key: object) -> bool:
        return key in self._map


class Intake:
    def __init__(self, queue: InboundSource, db: IntakeStore, state: IntakeState,
                 send_dont_know: DontKnowSender | None = None, batch_max: int = 2000,
                 known_symbols: frozenset[str] | None = None, topic_prefix: str = "fxstp",
                 limits: AmountLimits | None = None) -> None:
        self.queue = queue
        self.db = db
        self.state = state
        self.send_dont_know = send_dont_know
        self.batch_max = batch_max
        self.known_symbols = known_symbols
        self.known = KnownExecutions()
        self.latency = LatencyHistogram()
        self.counters = IntakeCounters()
        self.last_seq = dict(state.last_seq)
        # the session day each committed last_seq belongs to; the schedules that
        # define it (set by the engine); each session's logons and logouts
        self.days: dict[str, str | None] = dict(state.session_days)
        self.schedules: dict[str, SessionSchedule] = {}
        self.health: dict[str, SessionHealth] = {}
        self.on_committed: Callable[[list[tuple[int, Fill]]], None] | None = None
        self.on_quotes: Callable[[list[Quote]], None] | None = None
        self.quote_sessions: frozenset[str] | None = None    # who may send market data (the LPs)
        self.send_business_reject: DontKnowSender | None = None
        self.break_sink = BreakSink(topic_prefix)
        self.committed: asyncio.Event | None = None   # set when a commit queued bus events
        self.after_commit: Callable[[], None] | None = None   # called after every commit
        self._stopping = False
        self._busy = False
        self.stop_commit_s = 30.0     # how long a stopping engine keeps trying to commit
        # amount limits (stp.limits) and each pair's reference price: the
        # latest accepted price (fill or quote), moved only after a commit
        self.limits = limits if limits is not None else AmountLimits()
        self.reference_prices: dict[str, Reference] = {}

    async def load_reference_prices(self) -> None:
        """The reference prices at start, as they were when the engine
        stopped: each pair's latest accepted quote (market_prices), then the
        trades accepted after it replayed in order, each moving the reference
        only as it did live (``stp.limits.trade_move``: within the tolerance
        of a fresh reference, or after a stale one).  A pair without a usable
        quote replays all its trades.  A fill beyond the tolerance (flagged
        price_out_of_tolerance) therefore does not centre the band after a
        restart either.  A price outside the pair's absolute bounds, stored
        before the limits existed, is not used."""
        limits, max_age = self.limits, self.limits.band_max_age
        refs: dict[str, Reference] = {}
        after: dict[str, int] = {}           # the journal id of the pair's quote: its trades after it
        for symbol, price_text, received_us, journal_id in await self.db.latest_quotes():
            price = Decimal(price_text)
            if usable_reference(price, limits.of(symbol)):
                refs[symbol] = (price, _EPOCH + timedelta(microseconds=received_us))
                after[symbol] = journal_id
        traded = await self.db.traded_symbols()
        since = min((after.get(symbol, 0) for symbol in traded), default=None)
        if since is None:
            self.reference_prices.update(refs)
            return
        last_id = 0
        while True:
            rows = await self.db.trades_after(since, last_id)
            for fill_id, journal_id, symbol, price_text, received_us in rows:
                last_id = fill_id
                if journal_id <= after.get(symbol, 0):
                    continue                 # before the pair's quote, which replaced it
                pair_limits = limits.of(symbol)
                price = Decimal(price_text)
                if not usable_reference(price, pair_limits):
                    continue
                moved = trade_move(price, _EPOCH + timedelta(microseconds=received_us), pair_limits,
                                   refs.get(symbol), max_age)
                if moved is not None:
                    refs[symbol] = moved
            if not rows:
                break
        self.reference_prices.update(refs)

    def drained(self) -> bool:
        """Everything handed over so far is committed."""
        return not self._busy and not len(self.queue)

    async def run(self) -> None:
        queue = self.queue
        while True:
            if not len(queue):
                if self._stopping:
                    return
                queue.wakeup.clear()
                if not len(queue):
                    await queue.wakeup.wait()
            batch = queue.take(self.batch_max)
            if batch:
                self._busy = True
                try:
                    await self._process_until_committed(batch)
                finally:
                    self._busy = False

    async def _process_until_committed(self, items: list[Inbound]) -> None:
        """A batch that fails to commit is kept and tried again (database down,
        network cut): nothing is lost and nothing behind it overtakes it;
        the gateway is slowed down by the full queue meanwhile.

        When the engine is stopping, it tries for ``stop_commit_s`` at most,
        then leaves what it could not commit: none of it counts as received
        (the sessions' committed sequence numbers stay behind it), so the
        counterparties resend it at the next start.  The retries wait 0.5 s
        doubling to 30 s, at most 2 s apart while stopping."""
        backoff = Backoff(0.5, 30.0)
        stopping_since: float | None = None
        while True:
            try:
                await self.process(items)
                return
            except Exception as exc:
                if self._stopping:
                    stopping_since = stopping_since or time.monotonic()
                    if time.monotonic() - stopping_since >= self.stop_commit_s:
                        left = len(items) + len(self.queue.take(len(self.queue)))
                        log.error("intake_left_uncommitted", messages=left, error=repr(exc)[:300],
                                  note="not counted as received: resent at the next start")
                        return
                delay = min(backoff.next(), 2.0) if self._stopping else backoff.next()
                log.error("intake_commit_failed", error=repr(exc)[:300], messages=len(items),
                          retry_in_s=delay)
                await asyncio.sleep(delay)

    async def drain_and_stop(self) -> None:
        """Commit whatever is queued, then end ``run``."""
        self._stopping = True
        self.queue.wakeup.set()

    async def process(self, items: list[Inbound]) -> None:
        """Decide, commit, and only then update the in-memory state."""
        batch = IntakeBatch()
        dk: list[tuple[str, dict[int, str], str, str]] = []
        bmr: list[tuple[str, dict[int, str], str, str]] = []
        quotes: list[Quote] = []
        parsed: list[tuple[Inbound, int, dict[int, str] | None, Parsed]] = []
        for item in items:
            if item.kind in SESSION_EVENTS:
                parsed.append((item, 0, None, None))
                continue
            fields: dict[int, str] | None
            text = item.raw if not item.binary else escaped_text(item.raw)
            if item.kind in ("oversized", "poison") or item.truncated:
                fields = tolerant_fields(text, item.truncated)
            else:
                try:
                    fields = fields_of(text)
                except GarbledMessage:
                    fields = None
            received_us = int(item.received * 1_000_000)
            result: Parsed = None
            if fields is not None and item.kind == "app":
                at = _EPOCH + timedelta(microseconds=received_us)
                if fields.get(35) == "W":
                    if self.quote_sessions is not None and item.session not in self.quote_sessions:
                        result = QuoteRejection(OTHER, "market data is accepted from LP sessions only")
                    elif fields.get(43) == "Y":
                        # a resent snapshot: an old price, not the market now
                        result = NotAFill("resent snapshot (PossDupFlag=Y): kept, not applied")
                    else:
                        result = parse_snapshot(parse_text(text).fields, item.session, at,
                                                self.known_symbols)
                else:
                    result = normalise(fields, item.session, at, self.known_symbols)
            parsed.append((item, received_us, fields, result))
        # one query for the keys the cache does not know
        missing = list({(f.session, f.exec_id) for _, _, _, f in parsed
                        if isinstance(f, Fill) and (f.session, f.exec_id) not in self.known})
        from_db = await self.db.known_hashes(missing) if missing else {}
        staged = _Staged(self.known, from_db, self.state, self.last_seq, self.days)
        accepted: list[tuple[int, Fill]] = []
        problems: list[Break] = []
        limits, max_age, refs = self.limits, self.limits.band_max_age, self.reference_prices
        new_refs: dict[str, Reference] = {}      # this batch's reference prices, applied after the commit
        for item, received_us, fields, result in parsed:
            if item.kind in SESSION_EVENTS:
                self._session_event(item, staged, batch, problems)
                continue
            known: str | None = None          # the stored content hash of a fill's (session, ExecID)
            moved: Reference | None = None    # the reference price it sets if it is accepted
            if isinstance(result, Fill):
                known = staged.known_hash((result.session, result.exec_id))
                # a new report only: a duplicate or conflict of a stored fill books nothing anyway
                if known is None:
                    symbol = result.pair.symbol
                    refused, moved = check_fill_move(result, limits.of(symbol), new_refs.get(symbol)
                                                     or refs.get(symbol), max_age, fields)
                    if refused is not None:
                        result = refused
            elif isinstance(result, Quote):
                symbol = result.symbol
                ref = new_refs.get(symbol) or refs.get(symbol)
                refused_quote = check_quote(result, limits.of(symbol), ref, max_age)
                if refused_quote is not None:
                    result = refused_quote
                elif ref is None or result.received_at >= ref[1]:
                    moved = (result.price, result.received_at)
            outcome, reason, exec_id = self._decide(item, fields, result, staged, dk, bmr, known)
            if moved is not None and outcome in (Outcome.ACCEPTED, Outcome.MARKET_DATA):
                new_refs[symbol] = moved
            seq = message_seq(fields, item.kind)
            journal_id = staged.next_journal_id
            staged.next_journal_id += 1
            f = fields or {}
            batch.journal.append(JournalEntry(
                journal_id, item.session, seq, f.get(35, "?")[:8], received_us, f.get(43) == "Y",
                exec_id[:64] if exec_id else None, outcome.value if outcome is not None else item.kind,
                reason, *journal_raw(item)))
            if isinstance(result, Quote):
                quotes.append(result)
                batch.prices[result.symbol] = (result, journal_id, received_us)
            if outcome is Outcome.ACCEPTED and isinstance(result, Fill):
                batch.fills.append((staged.next_fill_id, journal_id, result))
                accepted.append((staged.next_fill_id, result))
                staged.next_fill_id += 1
            # a refused quote is answered (BMR), journaled and counted, not a break:
            # an LP streaming a pair not traded here would raise one per snapshot
            # an oversized report is never booked: a break (a market data snapshot is
            # replaced by the next one, as a refused quote)
            problem = (outcome in (Outcome.CONFLICT, Outcome.DONT_KNOW, Outcome.BUSINESS_REJECT,
                                   Outcome.SESSION_REJECT, Outcome.POISON)
                       and not isinstance(result, QuoteRejection))
            oversized = outcome is Outcome.OVERSIZED and (fields or {}).get(35) != "W"
            if outcome is not None and (problem or oversized):
                problems.append(intake_break(outcome, item, fields or {}, seq, reason, known, result))
            if outcome is Outcome.CONFLICT and isinstance(result, Fill):
                batch.conflicts.append(Conflict(
                    staged.next_conflict_id, journal_id, item.session, result.exec_id,
                    known or "", result.content_hash, received_us))
                staged.next_conflict_id += 1
            if item.kind == "reset":
                staged.last_seq[item.session] = 0
                batch.resets.add(item.session)
                batch.last_seq[item.session] = 0
                staged.new_day(batch, item.session, self._day(item.session, item.received))
            elif seq > staged.last_seq.get(item.session, 0) or item.session in batch.resets:
                staged.last_seq[item.session] = seq
                batch.last_seq[item.session] = seq
                if staged.days.get(item.session) is None:
                    # a session's first commit (or a row from before session days)
                    staged.new_day(batch, item.session, self._day(item.session, item.received))
        if problems:
            batch.breaks = BatchChanges()
            stamp = int(time.time() * 1_000_000)
            for brk in problems:
                self.break_sink.add(brk, batch.breaks, stamp)
        await self.db.write_intake(batch)
        # committed: now the in-memory state may move on
        committed = time.time()
        staged.apply(self)
        refs.update(new_refs)
        counters = self.counters
        counters.batches += 1
        counters.messages += len(batch.journal)          # the gateway's session events are not messages
        outcomes = counters.outcomes
        for entry in batch.journal:
            outcomes[entry.outcome] = outcomes.get(entry.outcome, 0) + 1
        add = self.latency.add
        for item in items:
            if item.kind not in SESSION_EVENTS:
                add(committed - item.received)
        if batch.breaks is not None and self.committed is not None:
            self.committed.set()
        if self.after_commit is not None:
            self.after_commit()
        if accepted and self.on_committed is not None:
            self.on_committed(accepted)
        if quotes and self.on_quotes is not None:
            self.on_quotes(quotes)
        for session, fields_, reason, text in dk:
            if self.send_dont_know is not None and self.send_dont_know(session, fields_, reason, text):
                counters.dont_know_sent += 1
        for session, fields_, reason, text in bmr:
            if self.send_business_reject is not None and self.send_business_reject(session, fields_, reason,
                                                                                    text):
                counters.business_rejects_sent += 1
        if batch.conflicts or dk:
            log.warning("intake_problems", conflicts=len(batch.conflicts), dont_know=len(dk))

    def _day(self, session: str, at: float) -> str | None:
        schedule = self.schedules.get(session)
        if schedule is None:
            return None
        return session_day(schedule, _EPOCH + timedelta(microseconds=int(at * 1_000_000)))

    def _session_event(self, item: Inbound, staged: _Staged, batch: IntakeBatch,
                       problems: list[Break]) -> None:
        """A logon, logout or ops' sequence reset the gateway reported, in
        order with the session's messages: the session's status, its
        ``session_down`` break, and a reset of its sequence state when
        quickfix's numbers went back (a new session day: quickfix's schedule
        or the counterparty starting from 1) or ops set them."""
        event = json.loads(item.raw)
        session = item.session
        at_us = int(event.get("at_us") or item.received * 1_000_000)
        at = _EPOCH + timedelta(microseconds=at_us)
        health = staged.health_of(session, self.health)
        status = batch.status.setdefault(session, {})
        committed = staged.last_seq.get(session, 0)
        if item.kind == "session_logon":
            status.update(logged_on=True, last_logon_us=at_us)
            health.logon(at)
            next_target = event.get("next_target")
            if isinstance(next_target, int) and next_target - 1 < committed:
                # quickfix counts from fewer than what is committed: its numbers
                # were reset (the session day rolled over, or ResetSeqNumFlag)
                log.warning("intake_session_sequence_reset", session=session, committed_seq=committed,
                            next_target=next_target, session_day=self._day(session, at_us / 1e6))
                self._commit_reset(session, next_target - 1, at_us, staged, batch)
        elif item.kind == "session_logout":
            reason = str(event.get("reason") or "disconnected")
            status.update(logged_on=False, last_logout_us=at_us, last_reason=reason[:500])
            brk = health.logout(at, reason, bool(event.get("was_logged_on")))
            if brk is not None:
                problems.append(brk)
        elif item.kind == "seq_set":
            request = event.get("request")
            if event.get("ok"):
                before, after = event["before"], event["after"]
                self._commit_reset(session, int(after["next_target"]) - 1, at_us, staged, batch)
                log.warning("intake_session_reset_applied", session=session, request=request, before=before,
                            after=after, committed_before=committed)
                if isinstance(request, int):
                    batch.resets_applied.append({
                        "id": request, "state": "applied", "before_last_seq": committed,
                        "before_inbound": before["next_target"], "before_outbound": before["next_sender"],
                        "after_inbound": after["next_target"], "after_outbound": after["next_sender"],
                        "applied_us": at_us})
            elif isinstance(request, int):
                batch.resets_applied.append({"id": request, "state": "failed", "applied_us": at_us,
                                             "error": str(event.get("error") or "refused by the gateway")})

    def _commit_reset(self, session: str, last: int, at_us: int, staged: _Staged, batch: IntakeBatch) -> None:
        staged.last_seq[session] = last
        batch.last_seq[session] = last
        batch.resets.add(session)
        staged.new_day(batch, session, self._day(session, at_us / 1e6))

    def _decide(self, item: Inbound, fields: dict[int, str] | None, result: Parsed, staged: _Staged,
                dk: list[tuple[str, dict[int, str], str, str]],
                bmr: list[tuple[str, dict[int, str], str, str]], known: str | None = None,
                ) -> tuple[Outcome | None, str | None, str | None]:
        """The outcome of one message (``known``: for a fill, the content hash
        already stored under its session and ExecID)."""
        if item.kind == "reset":
            log.info("intake_sequence_reset", session=item.session)
            return None, "counterparty reset sequence numbers (ResetSeqNumFlag=Y)", None
        if item.kind == "poison" and fields is not None:
            log.error("intake_poison_message", session=item.session, seq=fields.get(34),
                      msg_type=fields.get(35), exec_id=fields.get(17), size=item.size)
            if fields.get(35) == "8":
                dk.append((item.session, fields, "Z", "message quarantined: could not be processed"))
            return Outcome.POISON, ("quarantined: the FIX gateway died twice on this message; its "
                                    "MsgSeqNum is committed, raw from quickfix's message log"), fields.get(17)
        if item.kind == "oversized" and fields is not None:
            log.warning("intake_oversized_message", session=item.session, seq=fields.get(34),
                        msg_type=fields.get(35), size=item.size)
            return Outcome.OVERSIZED, (f"{item.size} bytes, over [engine] max_message_bytes: session "
                                       "Reject sent (quickfix); journaled truncated, raw_size is its "
                                       "true size"), fields.get(17)
        if fields is None:
            log.error("intake_unparseable", session=item.session, raw=item.raw[:200])
            return Outcome.UNPARSEABLE, "could not parse the message quickfix accepted", None
        exec_id = fields.get(17)
        if item.kind == "unsupported":
            log.warning("intake_business_reject", session=item.session, seq=fields.get(34),
                        msg_type=fields.get(35))
            return Outcome.BUSINESS_REJECT, f"unsupported message type {fields.get(35)}", exec_id
        if item.kind == "session_reject":
            return Outcome.SESSION_REJECT, (f"Reject sent for MsgSeqNum {fields.get(45)}: "
                                            f"{fields.get(58, '')} (373={fields.get(373, '')}, "
                                            f"371={fields.get(371, '')})"), None
        if isinstance(result, Rejection):
            log.warning("intake_dont_know", session=item.session, seq=fields.get(34),
                        exec_id=exec_id, dk_reason=result.dk_reason, text=result.text)
            dk.append((item.session, fields, result.dk_reason, result.text))
            return Outcome.DONT_KNOW, f"DKReason={result.dk_reason}: {result.text}", exec_id
        if isinstance(result, NotAFill):
            return Outcome.NOT_A_FILL, result.text, exec_id
        if isinstance(result, Quote):
            return Outcome.MARKET_DATA, None, None
        if isinstance(result, QuoteRejection):
            self.counters.quotes_refused += 1
            if self.counters.quotes_refused <= 10 or not self.counters.quotes_refused % 1000:
                log.warning("intake_quote_refused", session=item.session, seq=fields.get(34),
                            reason=result.reason, text=result.text, refused=self.counters.quotes_refused)
            bmr.append((item.session, fields, result.reason, result.text))
            return Outcome.BUSINESS_REJECT, f"BusinessRejectReason={result.reason}: {result.text}", None
        assert isinstance(result, Fill)
        outcome = dedupe(result.content_hash, known)
        if outcome is Outcome.ACCEPTED:
            staged.new_keys[(result.session, result.exec_id)] = result.content_hash
        elif outcome is Outcome.CONFLICT:
            log.warning("intake_conflict", session=item.session, seq=fields.get(34),
                        exec_id=result.exec_id, poss_dup=fields.get(43) == "Y")
            return outcome, "ExecID reused with different content", result.exec_id
        return outcome, None, result.exec_id

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.counters.started
        return {"messages": self.counters.messages, "batches": self.counters.batches,
                "outcomes": dict(self.counters.outcomes),
                "dont_know_sent": self.counters.dont_know_sent,
                "queue_high_water": self.queue.high_water,
                "latency_p50_ms": round(self.latency.quantile(0.5) * 1000, 2),
                "latency_p99_ms": round(self.latency.quantile(0.99) * 1000, 2),
                "uptime_s": round(elapsed, 1)}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Staged:
    """A batch's view of the intake state; applied only after its commit."""

    def __init__(self, known: KnownExecutions, from_db: dict[tuple[str, str], str],
                 state: IntakeState, last_seq: dict[str, int], days: dict[str, str | None]) -> None:
        self.days = dict(days)
        self.health: dict[str, SessionHealth] = {}
        self._known = known
        self.from_db = from_db
        self.new_keys: dict[tuple[str, str], str] = {}
        self.next_journal_id = state.next_journal_id
        self.next_fill_id = state.next_fill_id
        self.next_conflict_id = state.next_conflict_id
        self.last_seq = dict(last_seq)

    def new_day(self, batch: IntakeBatch, session: str, day: str | None) -> None:
        self.days[session] = day
        batch.session_days[session] = day

    def health_of(self, session: str, committed: dict[str, SessionHealth]) -> SessionHealth:
        """The session's health as this batch changes it (a copy until the commit)."""
        if session not in self.health:
            current = committed.get(session)
            self.health[session] = copy.deepcopy(current) if current is not None else SessionHealth(session)
        return self.health[session]

    def known_hash(self, key: tuple[str, str]) -> str | None:
        return self.new_keys.get(key) or self._known.get(key) or self.from_db.get(key)

    def apply(self, intake: Intake) -> None:
        for key, h in self.from_db.items():
            intake.known.add(key, h)
        for key, h in self.new_keys.items():
            intake.known.add(key, h)
        state = intake.state
        state.next_journal_id = self.next_journal_id
        state.next_fill_id = self.next_fill_id
        state.next_conflict_id = self.next_conflict_id
        intake.last_seq = self.last_seq
        intake.days = self.days
        intake.health.update(self.health)
