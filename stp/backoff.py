"""Retry delays that double after each failure, up to a cap, and start over
after a success: what a failing commit, a command store, the outbox relay's
reconnect, a failing command listener and a FIX gateway restart wait before
they try again.  Pure (no clock): it only computes the delays; the caller
sleeps."""

from __future__ import annotations


class Backoff:
    """``next()`` gives the delay before the next attempt: ``first``, then
    twice the previous one, never more than ``cap``; ``reset()`` after a
    success starts again from ``first``."""

    __slots__ = ("cap", "failures", "first")

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, not first={first} cap={cap}")
        self.first = first
        self.cap = cap
        self.failures = 0          # consecutive failures so far

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures before this one:
        ``first`` for none, doubling, at most ``cap``."""
        return min(self.first * float(2 ** min(max(failures, 0), 64)), self.cap)

    def next(self) -> float:
        delay = self.delay(self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
