"""Breaks stage: store every break the other stages detect (and log it).

A break's id is stable (type + keys), so the same discrepancy seen again
updates ``last_seen_us`` and ``occurrences`` instead of adding a row.
Publishing to the settlement desk (MQTT) comes with the outbox (issue 5).
"""

from __future__ import annotations

import structlog

from adapters.db.posttrade import PostTradeWrite, to_json
from stp.breaks import Break

log = structlog.get_logger("engine.breaks")


class BreakSink:
    def __init__(self) -> None:
        self.detected = 0

    def add(self, brk: Break, w: PostTradeWrite, now_us: int) -> None:
        self.detected += 1
        w.put("breaks", brk.break_id, (
            brk.break_id, brk.type.value, brk.level.value, to_json(brk.keys), brk.summary,
            to_json(brk.ours), to_json(brk.theirs), "open", now_us, now_us, 1))
        log.warning("break_detected", break_id=brk.break_id, type=brk.type.value,
                    severity=brk.level.value, summary=brk.summary, **brk.keys)
