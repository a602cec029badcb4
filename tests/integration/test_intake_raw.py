"""The journal keeps what the gateway accepted byte-exact, on SQLite and
PostgreSQL: bytes that are not UTF-8, oversized messages, poison messages,
from the gateway's frames to the committed rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters.db.repository import Database
from adapters.fix.pipe import FrameReader, decode_message, message_frame
from stp.inbound import MessageKind
from tests.integration.test_engine_intake import er
from tests.integration.test_intake_db import db, new_intake, raw  # noqa: F401 (db: a fixture)

SESSIONS = ("LP1",)


def report(seq: int, exec_id: str, **overrides: str) -> bytes:
    body = "".join(f"{tag}={value}\x01" for tag, value in er(exec_id, **overrides))
    return raw(body, seq).encode("latin-1")          # the wire bytes (str values are Latin-1 here)


def through_the_pipe(kind: MessageKind, data: bytes, limit: int = 1024 * 1024) -> Any:
    """As quickfix's binding hands the message over (surrogate escapes), framed and read back."""
    frame = message_frame(kind, 0, 1_763_456_400_000_000, data.decode("utf-8", "surrogateescape"), limit)
    [(_, payload)] = FrameReader().feed(frame)
    return decode_message(payload, SESSIONS)


async def test_reports_that_are_not_utf8_are_journaled_byte_exact_and_deduped(
        db: Database) -> None:  # noqa: F811
    dk: list[tuple[Any, ...]] = []
    intake = await new_intake(db, dk)
    latin = report(2, "LATIN-1", t58="caf\xe9 \xff\xfe")
    binary_id = report(3, "BIN-\xff\xfe")
    utf8 = report(4, "UTF8-1", t58="caf\xc3\xa9")
    await intake.process([through_the_pipe("app", m) for m in (latin, binary_id, utf8)])
    await intake.process([through_the_pipe("app", report(5, "BIN-\xff\xfe"))])        # again: duplicate
    await intake.process([through_the_pipe("app", report(6, "BIN-\xff\xfe", t31="1.2"))])  # conflict
    rows = await db.journal_rows()
    assert [(r["exec_id"], r["outcome"], r["raw_encoding"]) for r in rows] == [
        ("LATIN-1", "accepted", "latin-1"), ("BIN-\\xff\\xfe", "accepted", "latin-1"),
        ("UTF8-1", "accepted", "utf-8"), ("BIN-\\xff\\xfe", "duplicate", "latin-1"),
        ("BIN-\\xff\\xfe", "conflict", "latin-1")]
    assert rows[0]["raw"].encode("latin-1") == latin and rows[0]["raw_size"] == len(latin)
    assert rows[1]["raw"].encode("latin-1") == binary_id
    assert rows[2]["raw"].encode("utf-8") == utf8 and "café" in rows[2]["raw"]
    assert not any(r["raw_truncated"] for r in rows)
    fills = await db.fills_rows()
    assert [f["exec_id"] for f in fills] == ["LATIN-1", "BIN-\\xff\\xfe", "UTF8-1"]
    status = await db.status()
    assert status["raw_not_utf8"] == 4 and status["duplicates_ignored"] == 1 and status["conflicts"] == 1
    assert dk == []


async def test_oversized_and_poison_messages_are_journaled_and_committed(db: Database) -> None:  # noqa: F811
    dk: list[tuple[Any, ...]] = []
    intake = await new_intake(db, dk)
    big = report(2, "BIG-1", t58="x" * 3_000_000)
    poison = report(3, "POISON-1", t58="\xff")
    await intake.process([through_the_pipe("oversized", big), through_the_pipe("poison", poison),
                          through_the_pipe("app", report(4, "AFTER-1"))])
    rows = await db.journal_rows()
    assert [(r["seq_num"], r["exec_id"], r["outcome"]) for r in rows] == [
        (2, "BIG-1", "oversized"), (3, "POISON-1", "poison"), (4, "AFTER-1", "accepted")]
    assert rows[0]["raw_truncated"] and rows[0]["raw_size"] == len(big) and len(rows[0]["raw"]) <= 65536
    assert big.decode().startswith(rows[0]["raw"])
    assert rows[1]["raw"].encode(rows[1]["raw_encoding"]) == poison and "quarantined" in rows[1]["reason"]
    assert [(d[2], d[1][17]) for d in dk] == [("Z", "POISON-1")]
    status = await db.status()
    assert (status["oversized"], status["poison"], status["executions"]) == (1, 1, 1)
    assert status["sessions"]["LP1"]["last_seq"] == 4
    async with db.engine.connect() as conn:
        breaks = (await conn.exec_driver_sql("SELECT type, severity FROM breaks ORDER BY type")).all()
    assert [tuple(b) for b in breaks] == [("oversized_report", "high"), ("poison_message", "critical")]


async def test_an_oversized_report_raises_a_break_with_its_true_size(db: Database) -> None:  # noqa: F811
    """An LP fill over max_message_bytes is rejected at session level and
    never booked: the desk gets a break (the true size, what was kept), for
    an ExecutionReport and a TradeCaptureReport; a market data snapshot is
    replaced by the next one and raises none."""
    dk: list[tuple[Any, ...]] = []
    intake = await new_intake(db, dk)
    big = report(2, "BIG-1", t58="x" * 2_000_000)
    capture = raw("571=TCR-1\x0117=BIG-2\x0155=EUR/USD\x0132=1000000\x0131=1.085\x0158=" + "y" * 1_500_000
                  + "\x01", 3, msg_type="AE").encode("latin-1")
    snapshot = raw("262=MD-1\x0155=EUR/USD\x01268=1\x01269=0\x01270=1.085\x0158=" + "z" * 1_200_000 + "\x01",
                   4, msg_type="W").encode("latin-1")
    await intake.process([through_the_pipe("oversized", m) for m in (big, capture, snapshot)])
    rows = await db.journal_rows()
    assert [(r["seq_num"], r["outcome"]) for r in rows] == [
        (2, "oversized"), (3, "oversized"), (4, "oversized")]
    assert await db.fills_rows() == []
    async with db.engine.connect() as conn:
        # AsyncConnection.exec_driver_sql says CursorResult[Any]: mypy reads its rows as 1-tuples
        breaks: Sequence[tuple[Any, ...]] = (await conn.exec_driver_sql(
            "SELECT type, severity, keys, theirs FROM breaks ORDER BY keys")).all()
    assert [(b[0], b[1], json.loads(b[2])) for b in breaks] == [
        ("oversized_report", "high", {"session": "LP1", "seq": "2"}),
        ("oversized_report", "high", {"session": "LP1", "seq": "3"})]
    first, second = (json.loads(b[3]) for b in breaks)
    assert (first["msg_type"], first["exec_id"], first["size"]) == ("8", "BIG-1", len(big))
    assert first["journaled_bytes"] == len(rows[0]["raw"].encode()) < len(big)
    assert (second["msg_type"], second["size"]) == ("AE", len(capture))
    assert dk == []
