"""Session schedules and the session day (stp/sessions.py), their
configuration and quickfix settings, and session_down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.config import ConfigError, gateway_time_zone, load, session_schedule
from adapters.fix.quickfix import schedule_settings, session_settings_text
from stp.breaks import DEFAULT_SEVERITY, BreakType, Severity
from stp.sessions import (
    NON_STOP_DAY,
    SessionHealth,
    SessionSchedule,
    in_session,
    resume_in_same_day,
    session_day,
)

NY = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def fx_day() -> SessionSchedule:
    return SessionSchedule(dtime(17, 0), dtime(16, 59, 59), NY)


def test_the_fx_day_rolls_at_17_new_york_in_winter_and_in_summer() -> None:
    s = fx_day()
    # December: New York is UTC-5, the day rolls at 22:00 UTC
    assert session_day(s, utc(2026, 12, 3, 21, 59, 57)) == "2026-12-02"
    assert session_day(s, utc(2026, 12, 3, 22, 0, 0)) == "2026-12-03"
    assert session_day(s, utc(2026, 12, 4, 9, 0, 0)) == "2026-12-03"
    # July: UTC-4, at 21:00 UTC
    assert session_day(s, utc(2026, 7, 1, 20, 59, 58)) == "2026-06-30"
    assert session_day(s, utc(2026, 7, 1, 21, 0, 0)) == "2026-07-01"
    # quickfix's day ends at EndTime, 16:59:59: the roll second belongs to no day
    assert in_session(s, utc(2026, 12, 3, 21, 59, 59, 500000))
    assert session_day(s, utc(2026, 12, 3, 21, 59, 58, 999999)) == "2026-12-02"
    assert session_day(s, utc(2026, 12, 3, 21, 59, 59, 500000)) is None


def test_a_daily_window_inside_one_utc_day() -> None:
    s = SessionSchedule(dtime(8, 0), dtime(18, 0), "UTC")
    assert session_day(s, utc(2026, 12, 4, 7, 59, 59)) is None
    assert session_day(s, utc(2026, 12, 4, 8, 0, 0)) == "2026-12-04"
    assert session_day(s, utc(2026, 12, 4, 18, 0, 0)) == "2026-12-04"
    assert session_day(s, utc(2026, 12, 4, 18, 0, 1)) is None


def test_weekly_sunday_to_friday_17_new_york() -> None:
    s = SessionSchedule(dtime(17, 0), dtime(17, 0), NY, start_day=1, end_day=6)
    # Sunday 2026-12-06 17:00 NY = 22:00 UTC starts the week
    assert session_day(s, utc(2026, 12, 6, 21, 59)) is None               # Sunday before 17:00
    assert session_day(s, utc(2026, 12, 6, 22, 0)) == "2026-12-06"
    assert session_day(s, utc(2026, 12, 9, 12, 0)) == "2026-12-06"        # Wednesday: same week
    assert session_day(s, utc(2026, 12, 11, 21, 59)) == "2026-12-06"      # Friday before 17:00
    assert session_day(s, utc(2026, 12, 11, 22, 0, 1)) is None            # Friday after 17:00
    assert session_day(s, utc(2026, 12, 12, 12, 0)) is None               # Saturday
    assert session_day(s, utc(2026, 12, 13, 22, 0)) == "2026-12-13"       # the next week


def test_non_stop_never_changes_day_and_resume_needs_the_same_day() -> None:
    ns = SessionSchedule(non_stop=True, zone="UTC")
    assert session_day(ns, utc(2026, 1, 1)) == session_day(ns, utc(2030, 6, 1)) == NON_STOP_DAY
    s = fx_day()
    assert resume_in_same_day(s, "2026-12-03", utc(2026, 12, 4, 9))
    assert not resume_in_same_day(s, "2026-12-02", utc(2026, 12, 4, 9))   # the morning after
    assert not resume_in_same_day(s, None, utc(2026, 12, 4, 9))


def write(tmp: Path, session: str) -> Path:
    path = tmp / "engine.toml"
    path.write_text(f"""
[[lp]]
name = "LP1"
host = "127.0.0.1"
port = 9000
sender_comp_id = "STP"
target_comp_id = "LP1"
{session}
""")
    return path


def schedule(tmp: Path, session: str) -> SessionSchedule:
    return session_schedule(load(write(tmp, session), env={}).lps[0])


def test_configured_schedules(tmp_path: Path) -> None:
    assert schedule(tmp_path, "") == fx_day()                               # the default: the FX day
    daily = schedule(tmp_path, 'start_time = "17:00:00"\ntime_zone = "America/New_York"')
    assert daily == fx_day()                                                # no end: reset at start
    legacy = schedule(tmp_path, 'start_time = "00:00:00"\nend_time = "00:00:00"')
    assert legacy == SessionSchedule(dtime(0), dtime(23, 59, 59), "UTC")    # UTC midnight, as quickfix did
    weekly = schedule(tmp_path, 'start_time = "17:00:00"\nend_time = "17:00:00"\nstart_day = "Sunday"\n'
                                'end_day = "fri"\ntime_zone = "America/New_York"')
    assert (weekly.start_day, weekly.end_day, weekly.end) == (1, 6, dtime(17))
    assert schedule(tmp_path, "non_stop = true").non_stop


@pytest.mark.parametrize("session, message", [
    ('non_stop = true\nstart_time = "17:00:00"', "never resets"),
    ('end_time = "17:00:00"', "needs a start_time"),
    ('start_time = "17:00:00"\nstart_day = "sunday"', "go together"),
    ('start_time = "17:00:00"\nend_time = "17:00:00"\nstart_day = "mon"\nend_day = "monday"', "must differ"),
    ('start_time = "25:00:00"', "HH:MM:SS"),
    ('start_time = "17:00:00"\ntime_zone = "Mars/Olympus"', "IANA"),
    ('start_time = "17:00:00"\nend_time = "17:00:00"\nstart_day = "someday"\nend_day = "friday"',
     "day of the week"),
])
def test_bad_schedules_are_refused(tmp_path: Path, session: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, session), env={})


def test_quickfix_settings_for_each_schedule(tmp_path: Path) -> None:
    assert schedule_settings(fx_day(), NY) == ["StartTime=17:00:00", "EndTime=16:59:59", "UseLocalTime=Y"]
    assert schedule_settings(SessionSchedule(non_stop=True, zone="UTC")) == ["NonStopSession=Y"]
    weekly = SessionSchedule(dtime(17), dtime(17), NY, 1, 6)
    assert schedule_settings(weekly, NY) == ["StartTime=17:00:00", "EndTime=17:00:00", "StartDay=Sunday",
                                         "EndDay=Friday", "UseLocalTime=Y"]
    cfg = load(write(tmp_path, ""), env={})
    text = session_settings_text(cfg, "lp")
    assert "StartTime=17:00:00\nEndTime=16:59:59\nUseLocalTime=Y" in text
    assert gateway_time_zone(cfg) == NY
    utc_daily = SessionSchedule(dtime(8), dtime(7, 59, 59), "UTC")
    assert schedule_settings(utc_daily, "UTC")[-1] == "UseLocalTime=Y"     # whole seconds: no gap
    assert schedule_settings(utc_daily, NY)[-1] == "UseLocalTime=N"       # beside a New York session


def test_sessions_in_two_time_zones_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'start_time = "17:00:00"\ntime_zone = "America/New_York"')
    path.write_text(path.read_text() + """
[[platform]]
name = "PF"
port = 9001
sender_comp_id = "STP"
target_comp_id = "PF"
start_time = "08:00:00"
time_zone = "Europe/London"
""")
    with pytest.raises(ConfigError, match="more than one time zone"):
        load(path, env={})


def test_session_down_after_refused_logons_once_per_episode() -> None:
    h = SessionHealth("LP1")
    t = utc(2026, 12, 4, 9)
    reason = "counterparty logged out: MsgSeqNum too low, expecting 666 but received 1"
    # a day roll refuses a logon or two: not yet a session down
    assert all(h.logout(t + timedelta(seconds=2 * i), reason, was_logged_on=False) is None for i in range(4))
    assert all(h.logout(t + timedelta(seconds=2 * i), reason, was_logged_on=False) is None
               for i in range(4, 15))
    brk = h.logout(t + timedelta(seconds=30), reason, was_logged_on=False)
    assert brk is not None and brk.type is BreakType.SESSION_DOWN and brk.keys == {"session": "LP1"}
    assert "MsgSeqNum too low" in brk.summary and brk.theirs["failed_logons"] == 16
    assert DEFAULT_SEVERITY[BreakType.SESSION_DOWN] is Severity.CRITICAL
    assert h.logout(t + timedelta(seconds=32), reason, was_logged_on=False) is None   # once
    h.logon(t + timedelta(minutes=10))
    assert not h.down


def test_session_down_when_it_keeps_being_disconnected() -> None:
    h = SessionHealth("LP1")
    t = utc(2026, 12, 4, 9)
    found = []
    for i in range(5):
        h.logon(t + timedelta(seconds=30 * i))
        found.append(h.logout(t + timedelta(seconds=30 * i + 10), "disconnected", was_logged_on=True))
    assert found[:4] == [None] * 4 and found[4] is not None
    # a logout now and then is not a session down
    calm = SessionHealth("LP2")
    assert all(calm.logout(t + timedelta(minutes=10 * i), "disconnected", True) is None for i in range(10))


# -- session_day against quickfix's own pairwise rule ---------------------------
# quickfix decides "same period" for two moments (TimeRange::isInSameRange,
# called as isInSameRange(now, creation time of its store)); session_day
# names periods instead.  Transcribed from quickfix 1.16's TimeRange.cpp
# (daily case), on wall-clock times in whole seconds:

def _qf_in_range(st: dtime, et: dtime, t: datetime) -> bool:
    tod = t.time()
    return st <= tod <= et if st < et else (tod >= st or tod <= et)


def _secs(t: dtime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _qf_same_daily(st: dtime, et: dtime, time1: datetime, time2: datetime) -> bool:
    if not (_qf_in_range(st, et, time1) and _qf_in_range(st, et, time2)):
        return False
    if time1 == time2:
        return True
    if st <= et:
        return time1.date() == time2.date()
    session_length = 86400 - (_secs(st) - _secs(et))
    if time1 > time2:
        delta = _secs(time2.time()) - _secs(st)
        if delta < 0:
            delta = 86400 - abs(delta)
        return (time1 - time2).total_seconds() < session_length - delta
    return (time2 - time1).total_seconds() < session_length


@given(st.integers(0, 86399), st.integers(0, 86399),
       st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)), st.integers(1, 3 * 86400))
@settings(max_examples=3000, deadline=None)
def test_session_day_agrees_with_quickfix_is_in_same_range(start_s: int, end_s: int, creation: datetime,
                                                          later_s: int) -> None:
    start = (datetime(2000, 1, 1) + timedelta(seconds=start_s)).time()
    end = (datetime(2000, 1, 1) + timedelta(seconds=end_s)).time()
    if start == end:
        return                              # never given to quickfix (see daily_reset_end)
    schedule = SessionSchedule(start, end, "UTC")
    created = creation.replace(microsecond=0)
    now = created + timedelta(seconds=later_s)
    day_now = session_day(schedule, now.replace(tzinfo=UTC))
    day_created = session_day(schedule, created.replace(tzinfo=UTC))
    same = day_now is not None and day_now == day_created
    assert same == _qf_same_daily(start, end, now, created)
