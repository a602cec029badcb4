"""Confirm stage: validate LP fills and match them with the platform's record.

Validation failures that make a fill unbookable (unknown pair, invalid side
or quantity) stop it here; the others (price tolerance, value date, order
quantities) are breaks and the fill is still booked, because the trade was
done with the LP.  Matching states per fill: received -> confirmed, or
mismatched (which fields, both values), or unmatched after the window.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import cast

from stp.breaks import Break, BreakType
from stp.changes import BatchChanges, Confirmation, ConfirmationState, FieldDifference
from stp.confirm import Matcher, MatchResult, MatchState, Validator
from stp.fills import Fill

UNBOOKABLE = frozenset({BreakType.UNKNOWN_PAIR, BreakType.INVALID_FILL})


class ConfirmStage:
    def __init__(self, validator: Validator, matcher: Matcher, lp_sessions: frozenset[str]) -> None:
        self.validator = validator
        self.matcher = matcher
        self.lp_sessions = lp_sessions
        # the last fill's match (its counterpart: the platform record an LP
        # fill books with, or the LP fill a platform record allocates)
        self.last: MatchResult | None = None
        # (session, exec_id) -> fill id of fills waiting for their counterpart
        self._ids: OrderedDict[tuple[str, str], int] = OrderedDict()

    def on_fill(self, fill_id: int, fill: Fill, now: datetime, w: BatchChanges,
                now_us: int) -> tuple[bool, list[Break]]:
        """(book it?, breaks) for one fill."""
        breaks: list[Break] = []
        if fill.session in self.lp_sessions:
            breaks = self.validator.validate(fill)
            result = self.matcher.add_lp(fill, now)
            bookable = not breaks or not any(b.type in UNBOOKABLE for b in breaks)
        else:
            result = self.matcher.add_platform(fill, now)
            bookable = False
        ids = self._ids
        ids[(fill.session, fill.exec_id)] = fill_id
        if len(ids) > 500_000:
            ids.popitem(last=False)
        self._record(result, w, now_us)
        self.last = result
        if result.break_ is not None:
            breaks.append(result.break_)
        return bookable, breaks

    def rewait(self, fill_id: int, fill: Fill) -> MatchResult:
        """A fill committed earlier and still waiting for its counterpart (its
        confirmation 'received'), back in the matcher as at its receipt: after a
        restart, or the reload after a failed commit, its counterpart still
        confirms it and it still expires.  Call in fill id order."""
        at = fill.received_at
        result = self.matcher.add_lp(fill, at) if fill.session in self.lp_sessions \
            else self.matcher.add_platform(fill, at)
        if result.state is MatchState.RECEIVED:
            self._ids[(fill.session, fill.exec_id)] = fill_id
        return result

    def _record(self, result: MatchResult, w: BatchChanges, now_us: int) -> None:
        diffs = tuple(FieldDifference(d.field, d.lp, d.platform) for d in result.differences)
        state = cast(ConfirmationState, str(result.state))
        rows = w.confirmations
        ids = self._ids
        for fill in (result.fill, result.counterpart):
            if fill is None:
                continue
            key = (fill.session, fill.exec_id)
            fill_id = ids.get(key)
            if fill_id is None:
                continue
            rows[fill_id] = Confirmation(fill_id, key[0], key[1], state, diffs, None, now_us)
            if state != "received":
                ids.pop(key, None)

    def expire(self, now: datetime, w: BatchChanges, now_us: int) -> list[Break]:
        breaks = self.matcher.expire(now)
        for brk in breaks:
            keys = brk.keys
            session, exec_id = keys.get("session"), keys.get("exec_id")
            state: ConfirmationState = "unmatched" \
                if brk.type in (BreakType.UNMATCHED_LP, BreakType.UNMATCHED_PLATFORM) else "mismatched"
            if session and exec_id:
                fill_id = self._ids.pop((session, exec_id), None)
                if fill_id is not None:
                    w.confirmations[fill_id] = Confirmation(fill_id, session, exec_id, state, (),
                                                            brk.summary, now_us)
        return breaks
