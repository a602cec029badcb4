"""FIX session schedules, the session day, and sessions that cannot stay up.

Pure: no clock (the time is always an argument), no I/O.

A *session day* is one period of a schedule: at its start both sides begin
again from MsgSeqNum 1.  ``session_day`` names the period a moment falls in
(the local date its period started on) exactly as quickfix 1.16 decides
whether two moments are in the same period (``TimeRange::isInRange`` and
``isInSameRange``; quickfix resets a session whose store was created in
another period): so the engine's committed sequence numbers and quickfix's
own numbering change day at the same boundary.

Schedules:

- **daily**: ``start`` and ``end`` wall-clock times in ``zone``.  In session
  from ``start`` to ``end`` (``start`` > ``end`` wraps past midnight).  A
  daily reset (``end == start`` as configured) is given to quickfix as
  ``end = start - 1 s``: quickfix's own rule for ``StartTime == EndTime`` is
  a reset at local midnight, whatever the time.  quickfix's day then ends at
  ``end``: the second before ``start`` (the roll) belongs to no day (it
  resets at ``end`` and again at ``start``); nothing should be sent in it.
- **weekly**: ``start_day`` ``start`` to ``end_day`` ``end`` (days 1 =
  Sunday .. 7 = Saturday, as quickfix numbers them), e.g. Sunday 17:00 to
  Friday 17:00 New York; out of session between.
- **non-stop**: never resets (quickfix ``NonStopSession=Y``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from stp.breaks import Break, BreakType

NON_STOP_DAY = "non-stop"
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"})


@dataclass(frozen=True, slots=True)
class SessionSchedule:
    """A session's schedule, in quickfix's terms (``end`` already adjusted:
    see the module docstring)."""

    start: dtime = dtime(17, 0, 0)
    end: dtime = dtime(16, 59, 59)
    zone: str = "America/New_York"
    start_day: int | None = None          # 1 = Sunday .. 7 = Saturday; both or neither
    end_day: int | None = None
    non_stop: bool = False

    @property
    def utc(self) -> bool:
        return self.zone in UTC_ZONES

    @property
    def weekly(self) -> bool:
        return self.start_day is not None

    def describe(self) -> str:
        if self.non_stop:
            return "non-stop (never resets)"
        if self.weekly:
            assert self.start_day is not None and self.end_day is not None
            return (f"weekly {DAY_NAMES[self.start_day - 1].title()} {self.start} to "
                    f"{DAY_NAMES[self.end_day - 1].title()} {self.end} {self.zone}")
        return f"daily {self.start} to {self.end} {self.zone}"


def daily_reset_end(start: dtime) -> dtime:
    """The EndTime that gives quickfix a daily session resetting at ``start``
    with no gap: one second before it."""
    moment = datetime.combine(date(2000, 1, 2), start) - timedelta(seconds=1)
    return moment.time()


def quickfix_weekday(d: date) -> int:
    """quickfix's day of the week: 1 = Sunday .. 7 = Saturday."""
    return (d.weekday() + 1) % 7 + 1


def _wall_clock(schedule: SessionSchedule, at: datetime) -> datetime:
    """``at`` as naive wall-clock time in the schedule's zone, in whole
    seconds, as quickfix's local time (UseLocalTime=Y: ``LocalTimeStamp(
    getTimeT())``) reads it; the gateway gives every session its local time
    but a UTC one beside sessions in another zone (README)."""
    if at.tzinfo is None:
        raise ValueError("session_day needs an aware datetime")
    zone = UTC if schedule.utc else ZoneInfo(schedule.zone)
    return at.astimezone(zone).replace(tzinfo=None, microsecond=0)


def in_session(schedule: SessionSchedule, at: datetime) -> bool:
    """quickfix's ``TimeRange::isInRange`` for this schedule."""
    if schedule.non_stop:
        return True
    local = _wall_clock(schedule, at)
    t, st, et = local.time(), schedule.start, schedule.end
    if not schedule.weekly:
        return st <= t <= et if st < et else (t >= st or t <= et)
    sd, ed = schedule.start_day, schedule.end_day
    assert sd is not None and ed is not None
    day = quickfix_weekday(local.date())
    if sd < ed:
        if day < sd or day > ed:
            return False
    elif ed < day < sd:
        return False
    if day == sd and t < st:
        return False
    return not (day == ed and t > et)


def session_day(schedule: SessionSchedule, at: datetime) -> str | None:
    """The session day ``at`` falls in: the local date (ISO) its period
    started on, ``NON_STOP_DAY`` for a session that never resets, None when
    ``at`` is outside session time (quickfix keeps resetting the session then).
    Two moments have the same session day exactly when quickfix keeps the
    same sequence numbers from one to the other."""
    if schedule.non_stop:
        return NON_STOP_DAY
    if not in_session(schedule, at):
        return None
    local = _wall_clock(schedule, at)
    d, t = local.date(), local.time()
    if schedule.weekly:
        assert schedule.start_day is not None
        wd, sd = quickfix_weekday(d), schedule.start_day
        if wd > sd:
            start = d - timedelta(days=wd - sd)
        elif wd < sd:
            start = d - timedelta(days=wd - sd + 7)
        else:
            start = d if t >= schedule.start else d - timedelta(days=7)
        return start.isoformat()
    if schedule.start < schedule.end:
        return d.isoformat()
    if schedule.end <= t < schedule.start:
        # quickfix's period ends at end_time (isInSameRange: session length
        # 86400 - (start - end)): it resets then and again at start_time
        return None
    return (d if t >= schedule.start else d - timedelta(days=1)).isoformat()


def resume_in_same_day(schedule: SessionSchedule, committed_day: str | None, now: datetime) -> bool:
    """May a (re)start hand quickfix the committed inbound MsgSeqNum?  Only
    within the session day it was committed in: after the boundary both sides
    count from 1 again."""
    current = session_day(schedule, now)
    return current is not None and committed_day == current


# -- a session that cannot stay logged on -------------------------------------
FAILED_LOGONS = 3             # logouts in a row without a logon ...
FAILING_FOR = timedelta(seconds=30)   # ... for this long (a day roll fails a logon or two)
FLAPS = 5                     # logouts within FLAP_WINDOW
FLAP_WINDOW = timedelta(minutes=5)


@dataclass(slots=True)
class SessionHealth:
    """Logons and logouts of one session; ``logout`` returns a
    ``session_down`` break when the session cannot stay logged on:
    ``FAILED_LOGONS`` or more logons refused in a row over ``FAILING_FOR``
    (a sequence number the other side does not accept, "MsgSeqNum too low",
    repeats at every logon; a logon or two refused is the day roll or a clock
    skew at the boundary), or ``FLAPS`` logouts of a logged-on session within
    ``FLAP_WINDOW``.  Raised once per episode, with the last reason; a logon
    ends the episode unless the session is still flapping."""

    session: str
    logged_on: bool = False
    failed_logons: int = 0
    failing_since: datetime | None = None
    down: bool = False
    recent: deque[datetime] = field(default_factory=deque)
    last_reason: str | None = None

    def logon(self, at: datetime) -> None:
        self.logged_on = True
        self.failed_logons = 0
        self.failing_since = None
        self._trim(at)
        if len(self.recent) < FLAPS:
            self.down = False

    def logout(self, at: datetime, reason: str, was_logged_on: bool) -> Break | None:
        self.logged_on = False
        self.last_reason = reason
        if not was_logged_on:
            self.failed_logons += 1
            if self.failing_since is None:
                self.failing_since = at
        else:
            self.recent.append(at)             # a session that was up, lost
        self._trim(at)
        refused = (self.failed_logons >= FAILED_LOGONS and self.failing_since is not None
                   and at - self.failing_since >= FAILING_FOR)
        if self.down or not (refused or len(self.recent) >= FLAPS):
            return None
        self.down = True
        why = (f"{self.failed_logons} logons refused in a row" if refused
               else f"{len(self.recent)} logouts in {int(FLAP_WINDOW.total_seconds() // 60)} minutes")
        return Break(BreakType.SESSION_DOWN, {"session": self.session},
                     f"{self.session} cannot stay logged on ({why}): {reason}"[:300],
                     theirs={"reason": reason[:300], "failed_logons": self.failed_logons,
                             "logouts_recent": len(self.recent), "at": at.isoformat()})

    def _trim(self, at: datetime) -> None:
        while self.recent and at - self.recent[0] > FLAP_WINDOW:
            self.recent.popleft()
