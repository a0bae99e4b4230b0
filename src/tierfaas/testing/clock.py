"""A clock for tests: ``now()`` returns what it was set to, and only ``advance()`` moves it.

``FakeClock`` is also a ``tierfaas.clock.Scheduler``: callbacks scheduled on it run, in time
order, when ``advance()`` moves time past them. ``run_for()`` does the same from async code
and lets the event loop run what each callback wakes before the next one fires, so that a
chain of timers and tasks (a call ends, the next waiter gets the slot, its call starts a
timer of its own) plays out at the simulated times it would at real ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from tierfaas.clock import Clock


class FakeTimer:
    """One callback scheduled on a ``FakeClock``."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic seconds under the test's control, and the timers scheduled on them."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()  # timers due at one time run in scheduling order

    def __call__(self) -> float:
        return self._now

    @property
    def clock(self) -> Clock:
        return self

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(max(when, self._now), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        return self.call_at(self._now + max(0.0, delay), callback)

    def next_due(self) -> float | None:
        """When the earliest pending timer is due, or None with none pending."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Moves time ``seconds`` on, running each timer due by then at its own time, in
        order (also those the callbacks schedule within the step)."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        target = self._now + seconds
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            self._fire_next()
        self._now = target

    async def run_for(self, seconds: float) -> None:
        """Like ``advance()``, from a coroutine: before each timer fires, and at the end,
        the event loop runs whatever is ready (see ``settle``)."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        target = self._now + seconds
        await settle()
        while True:
            due = self.next_due()
            if due is None or due > target:
                break
            self._fire_next()
            await settle()
        self._now = target
        await settle()

    async def sleep(self, seconds: float) -> None:
        """Returns once the clock has moved ``seconds`` on (by ``advance`` or ``run_for``)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.call_later(seconds, wake)
        await done

    def _fire_next(self) -> None:
        when, _, timer = heapq.heappop(self._timers)
        self._now = max(self._now, when)
        timer.cancelled = True  # ran: cancelling it later does nothing
        timer.callback()


async def settle(rounds: int = 50) -> None:
    """Lets the event loop run what is ready, and what that makes ready, ``rounds`` times over:
    enough for the chains of futures and tasks in tierfaas (none of them waits on I/O or on
    real time when the clock is fake)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
