"""stp.backoff: the one rule every retry loop waits by (the doubling itself
is checked in test_money_breaks.py)."""

from __future__ import annotations

import pytest

from stp.backoff import Backoff


def test_immediate_failures_are_retried_at_once_then_the_doubling_starts() -> None:
    b = Backoff(1.0, 30.0, immediate=1)
    assert [b.next() for _ in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    b.reset()
    assert b.next() == 0.0 and b.next() == 1.0
    assert Backoff(1.0, 4.0, immediate=2).delay(1) == 0.0 and Backoff(1.0, 4.0, immediate=2).delay(2) == 1.0
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, immediate=-1)


def test_a_fixed_backoff_waits_the_same_however_long_it_fails() -> None:
    b = Backoff.fixed(2.0)
    assert [b.next() for _ in range(5)] == [2.0] * 5
    assert b.delay(10_000) == 2.0
    with pytest.raises(ValueError):
        Backoff.fixed(0)
