"""Storage of the post-trade stages: one transaction per batch
(``stp.changes.BatchChanges``, mapped to rows in ``adapters.db.rows``), and
the reads a start, a restart, a reversal, the timer's work and a
reconciliation need, each as domain values.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.intake_rows import fill_from_row
from adapters.db.repository import Database, database_unavailable, now_us
from adapters.db.rows import ChangesWriter, stored_date
from stp.booking import Booking, BookingKind, Posting, TradeAmounts
from stp.breaks import StoredBreak
from stp.changes import BatchChanges, MarkingFills
from stp.fills import ExecKind, Fill, Side
from stp.margin import MarginState
from stp.netting import NetKey
from stp.positions import Position
from stp.reconcile import ReconRun
from stp.reference import Ssi
from stp.settlement import Instruction, InstructionState
from stp.timestamps import us_to_datetime
from stp.valuedates import CurrencyPair

# unreversed trade bookings (callers add their conditions)
_ACTIVE_TRADES = ("SELECT b.booking_id, b.account, b.counterparty, b.pair, b.side, b.base_amount, "
                  "b.quote_amount, b.price, b.value_date FROM bookings b WHERE b.kind = 'trade' "
                  "AND NOT EXISTS (SELECT 1 FROM bookings r WHERE r.reverses = b.booking_id) ")
# the same with the postings of each (one row per posting, in posting id order)
_ACTIVE_TRADES_WITH_POSTINGS = (
    "SELECT b.booking_id, b.fill_session, b.fill_exec_id, b.account, b.counterparty, b.pair, b.side, "
    "b.base_amount, b.quote_amount, b.price, b.value_date, p.ledger, p.party, p.amount, p.value_date "
    "FROM bookings b LEFT JOIN postings p ON p.booking_id = b.booking_id WHERE b.kind = 'trade' "
    "AND NOT EXISTS (SELECT 1 FROM bookings r WHERE r.reverses = b.booking_id) ")
_FILL_COLUMNS = ("id, session, exec_id, kind, exec_ref_id, order_id, cl_ord_id, account, symbol, "
                 "side, currency, last_qty, last_px, cum_qty, leaves_qty, avg_px, order_qty, trade_date, "
                 "settl_type, settl_date, transact_us, received_us, spot_rate, forward_points, content_hash")


class PostTradeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.writer = ChangesWriter(db.engine.dialect.paramstyle == "qmark", db.is_sqlite)
        self.query = self.writer.query

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is about reaching the database (try again later)."""
        return database_unavailable(exc)

    async def write(self, w: BatchChanges) -> None:
        stamp = now_us()
        async with self.db.engine.begin() as conn:
            await self.writer.write(conn, w)
            mark_done = self.query("UPDATE inbox SET applied_us = ?, result = ?, reply = ? WHERE id = ?")
            replies = w.inbox_replies
            for inbox_id, result in w.inbox_done:
                await conn.exec_driver_sql(mark_done, (stamp, result, replies.get(inbox_id), inbox_id))
            if w.cursor is not None:
                await self._set_cursor(conn, w.cursor, stamp)

    async def record_recon(self, w: BatchChanges, run: ReconRun) -> None:
        """A reconciliation's breaks and events, and the run with its file, in
        one transaction."""
        stamp = now_us()
        async with self.db.engine.begin() as conn:
            await self.writer.write(conn, w)
            as_of = None if run.as_of is None else run.as_of.isoformat()
            await conn.exec_driver_sql(self.query(
                "INSERT INTO recon_runs (kind, session, as_of, source, content, lines, matched, breaks, "
                "run_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (run.kind, run.session, as_of, run.source[:255], run.content, run.lines, run.matched,
                 run.breaks, stamp))

    async def _set_cursor(self, conn: AsyncConnection, fill_id: int, stamp: int) -> None:
        result = await conn.exec_driver_sql(
            self.query("UPDATE pipeline_cursor SET last_fill_id = ?, updated_us = ? WHERE stage = ?"),
            (fill_id, stamp, "posttrade"))
        if result.rowcount == 0:
            await conn.exec_driver_sql(
                self.query("INSERT INTO pipeline_cursor (stage, last_fill_id, updated_us) VALUES (?, ?, ?)"),
                ("posttrade", fill_id, stamp))

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.db.engine.connect() as conn:
            return [tuple(r) for r in (await conn.exec_driver_sql(self.query(sql), params)).all()]

    # -- restart ------------------------------------------------------------
    async def cursor(self) -> int:
        rows = await self.fetch("SELECT last_fill_id FROM pipeline_cursor WHERE stage = ?", ("posttrade",))
        return int(rows[0][0]) if rows else 0

    async def next_ids(self) -> tuple[int, int, int]:
        """Next booking seq, posting id, margin event id."""
        b = await self.fetch("SELECT COALESCE(MAX(seq), 0) FROM bookings")
        p = await self.fetch("SELECT COALESCE(MAX(id), 0) FROM postings")
        e = await self.fetch("SELECT COALESCE(MAX(id), 0) FROM margin_events")
        return int(b[0][0]) + 1, int(p[0][0]) + 1, int(e[0][0]) + 1

    async def fills_after(self, fill_id: int, limit: int) -> list[tuple[int, Fill]]:
        rows = await self.fetch(f"SELECT {_FILL_COLUMNS} FROM fills WHERE id > ? ORDER BY id LIMIT ?",
                                (fill_id, limit))
        return [(int(r[0]), fill_from_row(r[1:])) for r in rows]

    async def waiting_fills(self) -> list[tuple[int, Fill]]:
        rows = await self.fetch(
            f"SELECT {', '.join('f.' + c.strip() for c in _FILL_COLUMNS.split(','))} FROM fills f "
            "JOIN confirmations c ON c.fill_id = f.id WHERE c.state = 'received' ORDER BY f.id")
        return [(int(r[0]), fill_from_row(r[1:])) for r in rows]

    async def active_trade_bookings(self, keys: Iterable[tuple[str, str]]
                                    ) -> dict[tuple[str, str], Booking]:
        """``active_trade_booking`` of many fill keys (session, exec_id) at once:
        one query per session and 500 keys (a batch's cancels and corrections)."""
        by_session: dict[str, list[str]] = {}
        for session, exec_id in keys:
            by_session.setdefault(session, []).append(exec_id)
        heads: dict[str, tuple[Any, ...]] = {}
        postings: dict[str, list[Posting]] = {}
        for session, exec_ids in by_session.items():
            for i in range(0, len(exec_ids), 500):
                chunk = exec_ids[i:i + 500]
                rows = await self.fetch(
                    _ACTIVE_TRADES_WITH_POSTINGS + "AND b.fill_session = ? AND b.fill_exec_id IN ("
                    + ", ".join("?" * len(chunk)) + ") ORDER BY p.id", (session, *chunk))
                for r in rows:
                    booking_id = r[0]
                    if booking_id not in heads:
                        heads[booking_id] = r[:11]
                        postings[booking_id] = []
                    if r[11] is not None:
                        postings[booking_id].append(Posting(r[11], r[12], Decimal(r[13]), stored_date(r[14])))
        out: dict[tuple[str, str], Booking] = {}
        for booking_id, r in heads.items():
            key = (r[1], r[2])
            if key in out:
                continue
            out[key] = Booking(
                booking_id=booking_id, kind=BookingKind.TRADE, fill_key=key, reverses=None,
                account=r[3], counterparty=r[4], pair=r[5], postings=tuple(postings[booking_id]),
                trade=_trade(r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]))
        return out

    async def active_trade_booking(self, session: str, exec_id: str) -> Booking | None:
        rows = await self.fetch(_ACTIVE_TRADES + "AND b.fill_session = ? AND b.fill_exec_id = ?",
                                (session, exec_id))
        if not rows:
            return None
        r = rows[0]
        postings = await self.fetch("SELECT ledger, party, amount, value_date FROM postings "
                                    "WHERE booking_id = ? ORDER BY id", (r[0],))
        return Booking(
            booking_id=r[0], kind=BookingKind.TRADE, fill_key=(session, exec_id), reverses=None,
            account=r[1], counterparty=r[2], pair=r[3],
            postings=tuple(Posting(p[0], p[1], Decimal(p[2]), stored_date(p[3])) for p in postings),
            trade=_trade(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]))



    # -- the stages' state at a start -------------------------------------------
    async def positions(self) -> dict[tuple[str, str], Position]:
        out: dict[tuple[str, str], Position] = {}
        for account, pair, qty, avg, pnl, flow in await self.fetch(
                "SELECT account, pair, quantity, average_price, realised_pnl, quote_flow FROM positions"):
            q, a = Decimal(qty), None if avg is None else Decimal(avg)
            cost = (q * a) if a is not None else Decimal(0)
            out[(account, pair)] = Position(account, pair, q, a, Decimal(pnl), cost, Decimal(flow))
        return out

    async def dated_positions(self) -> dict[tuple[str, str], dict[date | None, Decimal]]:
        dated: dict[tuple[str, str], dict[date | None, Decimal]] = {}
        for account, pair, vd, qty in await self.fetch(
                "SELECT account, pair, value_date, quantity FROM position_value_dates"):
            dated.setdefault((account, pair), {})[_day(vd)] = Decimal(qty)
        return dated

    async def nets(self) -> dict[NetKey, Decimal]:
        return {NetKey(cp, ccy, _day(vd)): Decimal(amount) for cp, ccy, vd, amount in await self.fetch(
            "SELECT counterparty, currency, value_date, amount FROM nets")}

    async def marking_fills(self, lp_sessions: Collection[str]) -> dict[str, MarkingFills]:
        """Per pair, the latest LP fill that booked and was not off-market (no
        ``price_out_of_tolerance`` break), and the latest such trade: what
        marked the pair live, and confirmation's reference price."""
        flagged = set()
        for (keys,) in await self.fetch("SELECT keys FROM breaks WHERE type = 'price_out_of_tolerance'"):
            key = json.loads(keys)
            flagged.add((key.get("session"), key.get("exec_id")))
        out: dict[str, MarkingFills] = {}
        for (symbol,) in await self.fetch("SELECT DISTINCT symbol FROM fills"):
            mark: Fill | None = None
            trade: Fill | None = None
            below = 2 ** 62
            while mark is None or trade is None:
                rows = await self.fetch(f"SELECT {_FILL_COLUMNS} FROM fills WHERE symbol = ? AND id < ? "
                                        "ORDER BY id DESC LIMIT 200", (symbol, below))
                if not rows:
                    break
                below = int(rows[-1][0])
                ids = [int(r[0]) for r in rows]
                booked = {int(fill_id) for (fill_id,) in await self.fetch(
                    "SELECT DISTINCT fill_id FROM bookings WHERE fill_id IN ("
                    + ", ".join("?" * len(ids)) + ")", tuple(ids))}
                for r in rows:
                    fill = fill_from_row(r[1:])
                    if fill.session not in lp_sessions or int(r[0]) not in booked \
                            or (fill.session, fill.exec_id) in flagged:
                        continue
                    mark = mark or fill
                    if trade is None and fill.kind is ExecKind.TRADE:
                        trade = fill
            if mark is not None:
                out[str(symbol)] = MarkingFills(mark, trade)
        return out

    async def market_prices(self) -> list[tuple[str, Decimal, int]]:
        """(symbol, price, received_us): each pair's latest market data."""
        return [(str(symbol), Decimal(price), int(received)) for symbol, price, received in await self.fetch(
            "SELECT symbol, price, received_us FROM market_prices")]

    async def client_cash(self) -> list[tuple[str, str, Decimal]]:
        """(account, currency, amount) of every client cash posting (deposits,
        withdrawals, adjustments)."""
        return [(str(account), str(ccy), Decimal(amount)) for account, ccy, amount in await self.fetch(
            "SELECT b.account, p.ledger, p.amount FROM postings p JOIN bookings b "
            "ON b.booking_id = p.booking_id WHERE b.kind IN ('cash', 'adjustment') "
            "AND p.party LIKE 'client:%'")]

    async def unresolved_unpriced(self) -> list[tuple[str, str]]:
        """(account, currency) of the margin_unpriced breaks not resolved."""
        out = []
        for (keys,) in await self.fetch(
                "SELECT keys FROM breaks WHERE type = 'margin_unpriced' AND state <> 'resolved'"):
            key = json.loads(keys)
            out.append((str(key.get("account")), str(key.get("currency"))))
        return out

    async def margin_states(self) -> dict[str, MarginState]:
        """account -> its margin state at the last commit (an unpriced
        account's: the state of its last full valuation)."""
        return {str(account): cast(MarginState, str(state)) for account, state in await self.fetch(
            "SELECT account, COALESCE(priced_state, state) FROM margin_accounts")}

    async def instructions_since(self, since: date) -> list[Instruction]:
        rows = await self.fetch(
            "SELECT counterparty, currency, value_date, version, adjustment, amount, state, ssi, "
            "instructed_us, settled_us, failure_reason, updated_us FROM instructions WHERE value_date >= ? "
            "ORDER BY counterparty, currency, value_date, version", (since,))
        out = []
        for r in rows:
            state = InstructionState(r[6])
            ssi = None
            if r[7]:
                s = json.loads(r[7])
                ssi = Ssi(counterparty=r[0], currency=r[1], bank_bic=s["bank_bic"], account=s["account"],
                          version=int(s["version"]))
            finished = _dt(r[9])
            out.append(Instruction(
                key=NetKey(r[0], r[1], _day(r[2])), amount=Decimal(r[5]), state=state, version=int(r[3]),
                adjustment=bool(r[4]), ssi=ssi, instructed_at=_dt(r[8]),
                settled_at=finished if state is InstructionState.SETTLED else None,
                failed_at=finished if state is InstructionState.FAILED else None,
                failure_reason=r[10], updated_at=_dt(r[11])))
        return out

    # -- the timer's work ---------------------------------------------------------
    async def pending_inbox(self) -> list[tuple[int, str, str]]:
        """(id, kind, payload JSON) of the commands not applied yet, in order."""
        return [(int(i), str(kind), str(payload)) for i, kind, payload in await self.fetch(
            "SELECT id, kind, payload FROM inbox WHERE applied_us IS NULL ORDER BY id")]

    async def booking_exists(self, booking_id: str) -> bool:
        return bool(await self.fetch("SELECT 1 FROM bookings WHERE booking_id = ?", (booking_id,)))

    async def stored_break(self, break_id: str) -> StoredBreak | None:
        rows = await self.fetch(f"SELECT {_BREAK_COLUMNS} FROM breaks WHERE break_id = ?", (break_id,))
        return _stored_break(rows[0]) if rows else None

    async def escalations_due(self, until_us: int, limit: int = 1000) -> list[StoredBreak]:
        """The unresolved breaks not escalated yet whose cut-off is at or
        before ``until_us``, soonest first."""
        return [_stored_break(r) for r in await self.fetch(
            f"SELECT {_BREAK_COLUMNS} FROM breaks WHERE escalated_us IS NULL AND cut_off_us IS NOT NULL "
            "AND cut_off_us <= ? AND state <> 'resolved' ORDER BY cut_off_us LIMIT ?", (until_us, limit))]

    # -- reconciliation -----------------------------------------------------------
    async def session_fills(self, session: str) -> list[Fill]:
        """Every fill of ``session`` (the engine's side of a statement)."""
        rows = await self.fetch(f"SELECT {_FILL_COLUMNS} FROM fills WHERE session = ? ORDER BY id",
                                (session,))
        return [fill_from_row(r[1:]) for r in rows]

    async def counterparty_nets(self, counterparty: str) -> dict[tuple[str, date], Decimal]:
        rows = await self.fetch("SELECT currency, value_date, amount FROM nets WHERE counterparty = ?",
                                (counterparty,))
        return {(str(c), d): Decimal(a) for c, vd, a in rows if (d := stored_date(vd)) is not None}


_BREAK_COLUMNS = "break_id, type, severity, state, keys, summary, cut_off_us, occurrence"


def _stored_break(r: tuple[Any, ...]) -> StoredBreak:
    return StoredBreak(str(r[0]), str(r[1]), str(r[2]), str(r[3]), json.loads(r[4]), str(r[5]),
                       None if r[6] is None else int(r[6]), int(r[7]))


def _dt(us: int | None) -> datetime | None:
    return None if us is None else us_to_datetime(us)


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))



def _trade(account: str, counterparty: str, pair: str, side: str, base: str, quote: str, price: str,
           value_date: Any) -> TradeAmounts:
    return TradeAmounts(account=account, counterparty=counterparty, pair=CurrencyPair.parse(pair),
                        side=Side(side), base_amount=Decimal(base), quote_amount=Decimal(quote),
                        price=Decimal(price), value_date=stored_date(value_date))
