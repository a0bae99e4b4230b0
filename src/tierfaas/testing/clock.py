"""A clock for tests: ``now()`` returns what it was set to, and only ``advance()`` moves it.

Everything in tierfaas with a timeout, TTL, batch window or keep-alive takes a ``Clock``
(a zero-argument callable returning monotonic seconds), so unit tests fire those timers by
advancing a ``FakeClock`` instead of sleeping.
"""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds under the test's control."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self._now += seconds
