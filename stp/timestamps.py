"""Stored times: integer microseconds since the epoch (UTC), to and from
datetimes (pure conversions; reading the clock is the callers' business)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def us_to_datetime(us: int) -> datetime:
    """A stored time (integer microseconds since the epoch, UTC) as a datetime."""
    return EPOCH + timedelta(microseconds=int(us))


def datetime_to_us(at: datetime) -> int:
    return (at - EPOCH) // _ONE_US
