"""Retry delays that double after each failure, up to a cap, and start over
after a success: what every retry loop of the engine waits before it tries
again (a failing commit, a command store, the outbox relay's reconnect, a
failing command listener, a child process that died, the desk's watch losing
its broker).  One rule in one place, so that every loop backs off alike and
a test can read the delays off it.

Pure (no clock, no sleeping): it only computes the delays; the caller sleeps
them, and the caller says what a success is (``reset``)."""

from __future__ import annotations


class Backoff:
    """``next()`` gives the delay before the next attempt: ``first``, then
    twice the previous one, never more than ``cap``; ``reset()`` after a
    success starts again from ``first``.

    ``immediate`` failures in a row are retried at once (delay 0) before the
    doubling starts: a child process that dies after running well is started
    again at once, one that keeps dying waits ``first``, ``2 * first``...
    ``Backoff.fixed(s)`` always waits ``s``."""

    __slots__ = ("cap", "failures", "first", "immediate")

    def __init__(self, first: float = 0.5, cap: float = 30.0, immediate: int = 0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, not first={first} cap={cap}")
        if immediate < 0:
            raise ValueError(f"need immediate >= 0, not {immediate}")
        self.first = first
        self.cap = cap
        self.immediate = immediate
        self.failures = 0          # consecutive failures so far

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        """The same delay after every failure (a loop that must not wait longer
        the longer it fails: the desk's watch, a start-up probe)."""
        return cls(delay, delay)

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures before this one:
        0 for the first ``immediate``, then ``first``, doubling, at most ``cap``."""
        doubled = max(failures, 0) - self.immediate
        if doubled < 0:
            return 0.0
        return min(self.first * float(2 ** min(doubled, 64)), self.cap)

    def next(self) -> float:
        delay = self.delay(self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
