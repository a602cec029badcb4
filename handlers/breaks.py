"""Breaks stage: store every break the other stages detect (and log it).

A break's id is stable (type + keys), so the same discrepancy seen again
updates ``last_seen_us`` and ``occurrences`` instead of adding a row.
Each detection also goes into the outbox, in the same transaction, for the
relay to publish (CloudEvent id = break id: consumers drop repeats).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from adapters.db.posttrade import PostTradeWrite, to_json
from stp.breaks import Break
from stp.events import break_detected


def _at(now_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_us)

log = structlog.get_logger("engine.breaks")


class BreakSink:
    def __init__(self, topic_prefix: str = "fxstp") -> None:
        self.detected = 0
        self.prefix = topic_prefix

    def add(self, brk: Break, w: PostTradeWrite, now_us: int) -> None:
        self.detected += 1
        w.publish(break_detected(brk, self.prefix, _at(now_us)), now_us)
        w.put("breaks", brk.break_id, (
            brk.break_id, brk.type.value, brk.level.value, to_json(brk.keys), brk.summary,
            to_json(brk.ours), to_json(brk.theirs), "open", now_us, now_us, 1))
        log.warning("break_detected", break_id=brk.break_id, type=brk.type.value,
                    severity=brk.level.value, summary=brk.summary, **brk.keys)
