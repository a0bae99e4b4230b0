"""The master's schedule ticker: each cron tick of a function becomes one async call.

Only the master ticks (``start`` when this node becomes master, ``stop`` when it stops being
one). A tick is fired as an async call keyed ``schedule:<function>:<tick>`` (``idempotency
_key``), so the same tick fired twice, by an old master and a new one across a failover, or
by one master whose role flapped, runs once: the keyed call's home answers the repeat with
the first call's id.

So that no tick is lost across a failover, a ticker that starts fires the ticks of the last
``catchup_s`` seconds first (the old master may have died just before or after firing them;
the key makes the repeat harmless), though none older than ``started_at``, the node's own
start: a cluster that starts at 12:00:30 owes no 11:59 tick. Then it sleeps until the next
tick of any function and fires what is due, on the wall clock (cron is UTC wall time) with
timers on the injected scheduler. The same window bounds every wake: after the process was
stopped for an hour it fires the last ``catchup_s`` of ticks, not a backlog of hundreds. A
wall clock stepped back fires nothing twice (``fired_through`` never goes back).

A fire that fails (raises, or its awaitable does: no node could take the call now) is tried
again with a doubling delay while the tick is within ``catchup_s``, then given up, logged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from tierfaas.calls import cron
from tierfaas.clock import Clock, Scheduler, Timer

if TYPE_CHECKING:
    from tierfaas.manifest import FunctionSpec

log = logging.getLogger(__name__)

Fire = Callable[[str, float], object]
"""``fire(function, tick)`` submits the tick's async call; it may return an awaitable, whose
failure (like a raise) means the call was not accepted."""

SCHEDULE_TICK_HEADER = "X-Schedule-Tick"
_EDGE_S = 0.001
"""A tick exactly at a window's start is in the window: ticks are whole minutes, and Unix
seconds near 2**31 keep a millisecond exact in a float."""


def idempotency_key(function: str, tick: float) -> str:
    """The ``Idempotency-Key`` of a tick's call: ``schedule:<function>:<tick as integer
    Unix seconds>`` (at most 84 printable ASCII characters: a name is at most 64)."""
    return f"schedule:{function}:{int(tick)}"


def crons_of(functions: Mapping[str, FunctionSpec]) -> dict[str, cron.Cron]:
    """The parsed ``schedule`` of each function that has one (the manifest checked them)."""
    return {
        name: cron.parse(spec.schedule)
        for name, spec in functions.items()
        if spec.schedule is not None
    }


def due_ticks(
    crons: Mapping[str, cron.Cron], fired_through: float, now: float
) -> list[tuple[str, float]]:
    """Every ``(function, tick)`` with ``fired_through < tick <= now``, by tick then name."""
    due = [
        (tick, name)
        for name, expression in crons.items()
        for tick in expression.ticks(fired_through, now)
    ]
    return [(name, tick) for tick, name in sorted(due)]


def next_tick(crons: Mapping[str, cron.Cron], after: float) -> float | None:
    """The first tick of any function strictly after ``after``; None without schedules."""
    return min((expression.next_after(after) for expression in crons.values()), default=None)


class ScheduleTicker:
    """Fires the schedules' ticks while started (see the module). ``wall_clock`` returns
    Unix seconds (``time.time``); timers run on ``scheduler``'s own clock."""

    def __init__(
        self,
        fire: Fire,
        wall_clock: Clock,
        scheduler: Scheduler,
        *,
        catchup_s: float = 120.0,
        started_at: float | None = None,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 30.0,
    ) -> None:
        self._fire = fire
        self._wall = wall_clock
        self._scheduler = scheduler
        self.catchup_s = catchup_s
        self.started_at = wall_clock() if started_at is None else started_at
        """Wall time of the node's start: no tick before it is ever fired."""
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._crons: dict[str, cron.Cron] = {}
        self._timer: Timer | None = None
        self._retries: set[Timer] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self.fired_through: float | None = None
        """Every tick up to this wall time has been fired (None while stopped)."""

    @property
    def running(self) -> bool:
        return self._running

    def start(self, crons: Mapping[str, cron.Cron]) -> None:
        """Starts ticking (this node became master): fires the catch-up window's ticks now,
        then each tick on time. Starting a running ticker only updates its schedules."""
        self._crons = dict(crons)
        if self._running:
            self._arm()
            return
        self._running = True
        now = self._wall()
        self.fired_through = max(now - self.catchup_s, self.started_at) - _EDGE_S
        self._wake()

    def update(self, crons: Mapping[str, cron.Cron]) -> None:
        """Takes a new release's schedules; ticks since the last wake of a newly scheduled
        function fire at once (any repeat is keyed, so harmless)."""
        self._crons = dict(crons)
        if self._running:
            self._arm()

    def stop(self) -> None:
        """Stops ticking (this node is no longer master): nothing fires from now on."""
        self._running = False
        self.fired_through = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for timer in self._retries:
            timer.cancel()
        self._retries.clear()
        for task in self._tasks:
            task.cancel()

    # -- the ticks --------------------------------------------------------------------------

    def _wake(self) -> None:
        self._timer = None
        if not self._running or self.fired_through is None:
            return
        now = self._wall()
        since = max(self.fired_through, now - self.catchup_s - _EDGE_S)
        for function, tick in due_ticks(self._crons, since, now):
            self._submit(function, tick, 0)
        self.fired_through = max(self.fired_through, now)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.fired_through is None:
            return
        tick = next_tick(self._crons, self.fired_through)
        if tick is None:
            return
        # Wall and scheduler clocks may drift apart while it sleeps: _wake reads the wall
        # clock again, fires only what is due by it and re-arms for the rest.
        delay = max(0.0, tick - self._wall())
        self._timer = self._scheduler.call_later(delay, self._wake)

    def _submit(self, function: str, tick: float, failures: int) -> None:
        try:
            result = self._fire(function, tick)
        except Exception as exc:
            self._failed(function, tick, failures, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await(result, function, tick, failures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _await(
        self, result: Awaitable[object], function: str, tick: float, failures: int
    ) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(function, tick, failures, exc)

    def _failed(self, function: str, tick: float, failures: int, exc: Exception) -> None:
        if not self._running:
            return
        delay = min(self._retry_cap_s, self._retry_base_s * 2.0 ** min(failures, 30))
        if self._wall() + delay - tick > self.catchup_s:
            log.error(
                "schedule tick %d of %s not fired (%s); past the %.0f s catch-up window, given up",
                int(tick),
                function,
                exc,
                self.catchup_s,
            )
            return
        log.warning("schedule tick %d of %s not fired yet (%s)", int(tick), function, exc)

        def again() -> None:
            self._retries.discard(timer)
            if self._running:
                self._submit(function, tick, failures + 1)

        timer = self._scheduler.call_later(delay, again)
        self._retries.add(timer)
