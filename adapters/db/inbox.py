"""The inbox: the desk's and the bus's commands (settlement status, cash,
allocations, break lifecycle) waiting for the engine, and their payloads.

Commands go into the ``inbox`` table and the running engine applies them in
order (within a second); a stopped engine applies them when it starts, so a
command is never lost and is applied once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database, now_us


async def enqueue(db: Database, kind: str, payload: dict[str, Any]) -> int:
    store = PostTradeStore(db)
    sql = store.query("INSERT INTO inbox (kind, payload, created_us) VALUES (?, ?, ?) RETURNING id")
    async with db.engine.begin() as conn:
        result = await conn.exec_driver_sql(sql, (kind, json.dumps(payload, sort_keys=True), now_us()))
        return int(result.scalar_one())


async def wait_applied(db: Database, inbox_id: int, timeout: float, poll: float = 0.2) -> str | None:
    """The result of inbox command ``inbox_id`` once the engine has applied
    (or refused) it: "booked ...", "error: ...", or None if it has not within
    ``timeout`` seconds (the engine is not running, or behind)."""
    store = PostTradeStore(db)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await store.fetch("SELECT applied_us, result FROM inbox WHERE id = ?", (inbox_id,))
        if rows and rows[0][0] is not None:
            return str(rows[0][1])
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(poll)


@dataclass(frozen=True, slots=True)
class Queued:
    """What ``enqueue_once`` found: a new inbox row, or the one that already
    holds the request id (its kind, payload, whether it was applied and the
    reply it got)."""

    inbox_id: int
    new: bool
    kind: str
    payload: dict[str, Any]
    applied: bool = False
    reply: str | None = None


async def enqueue_once(db: Database, kind: str, payload: dict[str, Any], request_id: str) -> Queued:
    """Queue a command unless its request id is in the inbox already.

    The inbox's unique index on ``request_id`` decides, so two deliveries of
    one command never make two rows, whatever the timing and across restarts
    (``INSERT .. ON CONFLICT DO NOTHING``, then the existing row is read in
    the same transaction)."""
    store = PostTradeStore(db)
    insert = store.query("INSERT INTO inbox (kind, payload, created_us, request_id) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (request_id) DO NOTHING RETURNING id")
    existing = store.query("SELECT id, kind, payload, applied_us, reply FROM inbox WHERE request_id = ?")
    async with db.engine.begin() as conn:
        row = (await conn.exec_driver_sql(insert, (kind, json.dumps(payload, sort_keys=True), now_us(),
                                                   request_id))).first()
        if row is not None:
            return Queued(int(row[0]), True, kind, payload)
        first: tuple[Any, ...] = tuple((await conn.exec_driver_sql(existing, (request_id,))).one())
    return Queued(int(first[0]), False, str(first[1]), json.loads(first[2]), first[3] is not None, first[4])


async def enqueue_batch(db: Database, commands: list[tuple[str, dict[str, Any], str | None]],
                        rows_per_statement: int = 500) -> list[Queued]:
    """Queue ``(kind, payload, request_id)`` commands in one transaction (what
    the command listener received at once): one commit for the lot, and one
    INSERT per run of up to ``rows_per_statement`` commands with request ids.
    Each gets what ``enqueue`` (no request id) or ``enqueue_once`` would have
    given it on its own, in order: inbox ids follow the order of arrival, and
    a request id twice in one batch is queued once (the second finds the
    first's row, not applied yet).  Raises, with nothing queued, if the
    transaction fails."""
    store = PostTradeStore(db)
    plain = store.query("INSERT INTO inbox (kind, payload, created_us) VALUES (?, ?, ?) RETURNING id")
    out: list[Queued | None] = [None] * len(commands)
    first_at: dict[str, int] = {}          # request id -> where it first comes in this batch
    stamp = now_us()
    async with db.engine.begin() as conn:
        run: list[int] = []

        async def insert_run() -> None:
            if not run:
                return
            values = ", ".join(["(?, ?, ?, ?)"] * len(run))
            sql = store.query(f"INSERT INTO inbox (kind, payload, created_us, request_id) VALUES {values} "
                              "ON CONFLICT (request_id) DO NOTHING RETURNING id, request_id")
            params: list[Any] = []
            for i in run:
                kind, payload, request_id = commands[i]
                params += [kind, json.dumps(payload, sort_keys=True), stamp, request_id]
            for returned in (await conn.exec_driver_sql(sql, tuple(params))).all():
                row: tuple[Any, ...] = tuple(returned)
                i = first_at[str(row[1])]
                out[i] = Queued(int(row[0]), True, commands[i][0], commands[i][1])
            run.clear()

        for i, (kind, payload, request_id) in enumerate(commands):
            if request_id is None:          # inserted where it came, between the runs
                await insert_run()
                result = await conn.exec_driver_sql(plain, (kind, json.dumps(payload, sort_keys=True), stamp))
                out[i] = Queued(int(result.scalar_one()), True, kind, payload)
            elif request_id not in first_at:
                first_at[request_id] = i
                run.append(i)
                if len(run) >= rows_per_statement:
                    await insert_run()
        await insert_run()
        # request ids an earlier row holds: that row's command, state and reply
        held = [request_id for request_id, i in first_at.items() if out[i] is None]
        for at in range(0, len(held), rows_per_statement):
            chunk = held[at:at + rows_per_statement]
            sql = store.query("SELECT id, kind, payload, applied_us, reply, request_id FROM inbox "
                              f"WHERE request_id IN ({', '.join('?' * len(chunk))})")
            for held_row in (await conn.exec_driver_sql(sql, tuple(chunk))).all():
                row = tuple(held_row)
                out[first_at[str(row[5])]] = Queued(int(row[0]), False, str(row[1]), json.loads(row[2]),
                                                    row[3] is not None, row[4])
    queued: list[Queued] = []
    for i, (_, _, request_id) in enumerate(commands):
        found = out[i]
        if found is None:                   # a repeat within this batch: the first's row, waiting
            assert request_id is not None
            first = out[first_at[request_id]]
            assert first is not None
            found = first if not first.new else Queued(first.inbox_id, False, first.kind, first.payload)
        queued.append(found)
    return queued


async def prune_inbox(db: Database, retention_us: int, now: int | None = None) -> int:
    """Delete the applied inbox rows older than ``retention_us`` (applied
    then), which releases their request ids; return how many.  Rows waiting
    to be applied stay whatever their age, and so does the newest row: SQLite
    gives a new row the highest id + 1, and a reused id would repeat an
    earlier reply's event id (``reply-inbox-<id>``), which consumers drop as
    a repeat."""
    store = PostTradeStore(db)
    cutoff = (now if now is not None else now_us()) - retention_us
    sql = store.query("DELETE FROM inbox WHERE applied_us IS NOT NULL AND applied_us < ? "
                      "AND id < (SELECT MAX(id) FROM inbox)")
    async with db.engine.begin() as conn:
        result = await conn.exec_driver_sql(sql, (cutoff,))
    return int(result.rowcount or 0)


def settlement_status_payload(counterparty: str, currency: str, value_date: date, status: str,
                              reason: str | None, version: int | None) -> dict[str, Any]:
    if status not in ("settled", "failed"):
        raise ValueError("status must be settled or failed")
    return {"counterparty": counterparty, "currency": currency, "value_date": value_date.isoformat(),
            "status": status, "reason": reason, "version": version}


def cash_payload(account: str, currency: str, amount: Decimal, value_date: date | None,
                 reference: str | None) -> dict[str, Any]:
    return {"account": account, "currency": currency, "amount": str(amount),
            "value_date": value_date.isoformat() if value_date else None,
            "reference": reference or uuid.uuid4().hex}


def allocate_payload(session: str, exec_id: str, account: str, by: str,
                     reason: str | None) -> dict[str, Any]:
    """The inbox payload of an allocation (``run_engine.py allocate``)."""
    return {"session": session, "exec_id": exec_id, "account": account, "by": by.strip(),
            "reason": reason}
