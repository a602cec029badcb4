"""Breaks stage: store every break the other stages detect (and log it), and
escalate the unresolved ones as their settlement cut-off comes near; the
engine resolves a break itself (its cause is gone) through ``resolve``.

A break's id is stable (type + keys), so the same discrepancy seen again
updates ``last_seen_us`` and ``occurrences`` instead of adding a row.
Each detection also goes into the outbox, in the same transaction, for the
relay to publish (CloudEvent id = break id: consumers drop repeats).  A
resolved break detected again reopens (state open, ``occurrence`` + 1,
``reopened_us``) and its events carry the new occurrence's id (break id +
``-<n>``), so a consumer that drops repeats sees it come back; seen again
while open or acknowledged it is the same occurrence (same id).  A
break that concerns a value date keeps the earliest settlement cut-off of
its currencies (``cut_off_us``); one still open or acknowledged within
``escalate_before`` of it is re-published once as an escalation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from handlers.ports import BreakReader
from stp.breaks import Break
from stp.changes import BatchChanges, Detected, Detection, EngineResolution
from stp.events import break_detected, break_escalated
from stp.reference import ReferenceData
from stp.settlement import break_cut_off
from stp.timestamps import datetime_to_us, us_to_datetime

log = structlog.get_logger("engine.breaks")


class BreakSink:
    def __init__(self, topic_prefix: str = "fxstp", reference: ReferenceData | None = None,
                 escalate_before: timedelta = timedelta(hours=1)) -> None:
        self.detected = 0
        self.escalated = 0
        self.prefix = topic_prefix
        self.reference = reference
        self.escalate_before = escalate_before

    def add(self, brk: Break, w: BatchChanges, now_us: int) -> None:
        if brk.break_id in w.resolving:
            return          # the engine resolves it in this same write: never raised
        self.detected += 1
        cut_off = break_cut_off(brk, self.reference) if self.reference is not None else None
        key = w.publish(break_detected(brk, self.prefix, us_to_datetime(now_us)), now_us)
        w.detected.setdefault(brk.break_id, []).append(Detection(key, brk, self.prefix, now_us))
        w.breaks[brk.break_id] = Detected(brk, None if cut_off is None else datetime_to_us(cut_off), now_us)
        log.warning("break_detected", break_id=brk.break_id, type=brk.type.value,
                    severity=brk.level.value, summary=brk.summary, **brk.keys)

    def resolve(self, brk: Break, by: str, reason: str, w: BatchChanges, now_us: int) -> None:
        """The engine resolves ``brk`` itself (its cause is gone), unless it is
        resolved already: the state change and its event (with the stored
        occurrence) are written with ``w`` (``adapters.db.rows.ChangesWriter``,
        which reads the stored states of all of them at once and sees the
        write's lifecycle changes).  A detection of it in the same write is
        dropped (never raised); only ``type`` and ``keys`` of ``brk`` are used."""
        w.resolved.append(EngineResolution(brk, by, reason, self.prefix, now_us))
        w.resolving.add(brk.break_id)
        log.info("break_resolved_by_engine", break_id=brk.break_id, type=brk.type.value, reason=reason,
                 **brk.keys)

    async def escalate(self, store: BreakReader, now: datetime, w: BatchChanges, stamp: int) -> int:
        """Re-publish, once, every unresolved break whose cut-off is within
        ``escalate_before`` of ``now`` (or past)."""
        due = await store.escalations_due(datetime_to_us(now + self.escalate_before))
        resolved_now = {c.break_id for c in w.lifecycle if c.state == "resolved"} | w.resolving
        rows = [b for b in due if b.break_id not in resolved_now]       # resolved in this same run
        for b in rows:
            assert b.cut_off_us is not None
            cut_off = us_to_datetime(b.cut_off_us)
            w.publish(break_escalated(b.break_id, b.type, b.severity, b.state, b.keys, b.summary,
                                      cut_off, self.prefix, now, b.occurrence), stamp)
            w.escalated.append((stamp, b.break_id))
            log.warning("break_escalated", break_id=b.break_id, type=b.type, state=b.state,
                        cut_off=cut_off.isoformat(), minutes_left=round((cut_off - now).total_seconds() / 60))
        self.escalated += len(rows)
        return len(rows)
