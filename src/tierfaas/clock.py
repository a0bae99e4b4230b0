"""The clock and the scheduler every timer in tierfaas is written against.

A ``Clock`` is a zero-argument callable returning monotonic seconds; a ``Scheduler`` runs
callbacks at times of its clock. Code with a timeout, TTL, batch window or keep-alive takes
them injected, so unit tests fire those timers by advancing a ``tierfaas.testing.FakeClock``
(which is both) instead of sleeping, and production code reads and schedules on one time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
"""Returns monotonic seconds. Production code passes ``time.monotonic``."""

monotonic: Clock = time.monotonic


class Timer(Protocol):
    """A scheduled callback; ``cancel()`` keeps it from running (no-op once it ran)."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Runs callbacks at times of ``clock``. Callbacks run on the event loop's thread, one at a
    time, never re-entrantly from ``call_at``/``call_later`` themselves."""

    @property
    def clock(self) -> Clock: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Runs ``callback`` once ``clock()`` reaches ``when`` (soon, if it already has)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Runs ``callback`` ``delay`` seconds of ``clock`` from now."""
        ...


class LoopScheduler:
    """The production scheduler: the running asyncio loop's timers, on ``clock``.

    ``call_at`` converts to a delay on the clock, so the clock need not be the loop's own
    (uvloop's ``loop.time()`` has millisecond steps and is cached per iteration)."""

    def __init__(self, clock: Clock = monotonic) -> None:
        self._clock = clock

    @property
    def clock(self) -> Clock:
        return self._clock

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        return self.call_later(when - self._clock(), callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)
