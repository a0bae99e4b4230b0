"""``Supervisor``: the node's long-lived background tasks, restarted when they crash.

A background task (the table hub, the write queue, the replicator, the cluster actor) that
raises would otherwise end silently: asyncio logs its exception only when the task is garbage
collected, and the node goes on answering with a table nobody updates. Under a supervisor a
crash is logged with its traceback, counted in ``tierfaas_task_crashes_total{task}``, and the
task started again after a backoff (doubling from ``initial_backoff_s`` to ``max_backoff_s``,
reset once a run lasted ``stable_s``). A task that crashes ``crash_loop`` times within
``window_s`` is crash-looping: the node reports not ready (``not_ready_reason``, read by
``/readyz``) until it has gone ``window_s`` without a crash, while the restarts go on. A task
spawned with ``restart=False`` (a one-shot job) is not started again: its crash makes the
node not ready for good, since what it was to do is not done.

Cancelling a supervised task (``stop()`` of its owner) ends it without a restart, and a task
that returns is finished. A ``CancelledError`` the task did not ask for (a future it awaited
was cancelled under it) is a crash: it would otherwise end the task as silently as a stop.
Time comes from the injected clock and sleep, so unit tests drive crashes and backoffs with a
``FakeClock``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from tierfaas.clock import Clock, monotonic

log = logging.getLogger("tierfaas.supervision")

Sleep = Callable[[float], Coroutine[Any, Any, None]]

INITIAL_BACKOFF_S = 0.1
"""First wait before a crashed task starts again: long enough that a task failing at once
does not spin the event loop, short enough that a one-off crash costs a blink."""

MAX_BACKOFF_S = 5.0
"""Longest wait between restarts of a task that keeps crashing."""

STABLE_S = 30.0
"""A run this long before its crash counts as healthy: the next restart waits the shortest
backoff again."""

CRASH_LOOP = 5
WINDOW_S = 60.0
"""``CRASH_LOOP`` crashes of one task within ``WINDOW_S`` make the node report not ready: it
is not fixing itself, and a load balancer should send its traffic elsewhere."""


class Supervisor:
    """Starts, watches and restarts the node's background tasks (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Clock = monotonic,
        sleep: Sleep = asyncio.sleep,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        stable_s: float = STABLE_S,
        crash_loop: int = CRASH_LOOP,
        window_s: float = WINDOW_S,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._initial_s = initial_backoff_s
        self._max_s = max_backoff_s
        self._stable_s = stable_s
        self._crash_loop = crash_loop
        self._window_s = window_s
        self._crashes: dict[str, deque[float]] = {}  # task -> its recent crash times
        self._failed: list[str] = []  # one-shot tasks that crashed
        self.crashes = Counter(
            "tierfaas_task_crashes",
            "Crashes of the node's background tasks, by task (each crash is logged, and the "
            "task restarted unless it was a one-shot job)",
            ["task"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    def spawn(
        self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Runs ``run()`` in a task named ``name``, again after each crash (unless
        ``restart`` is false). Cancel the returned task to stop it for good."""
        self.crashes.labels(name)  # the series exists (at 0) before any crash
        loop = asyncio.get_running_loop()
        return loop.create_task(self._supervise(name, run, restart), name=name)

    def backoff_s(self, attempt: int) -> float:
        """The wait before restart number ``attempt`` (1-based) of a run of crashes."""
        return float(min(self._max_s, self._initial_s * 2 ** min(max(0, attempt - 1), 32)))

    def not_ready_reason(self) -> str | None:
        """Why the node should not take traffic because of its tasks; None if it may."""
        if self._failed:
            return f"background task {self._failed[0]} crashed and is not restarted"
        now = self._clock()
        for name, times in self._crashes.items():
            recent = sum(1 for t in times if now - t < self._window_s)
            if recent >= self._crash_loop:
                return (
                    f"background task {name} keeps crashing ({recent} crashes in the last "
                    f"{self._window_s:g} s)"
                )
        return None

    async def _supervise(
        self, name: str, run: Callable[[], Awaitable[None]], restart: bool
    ) -> None:
        attempt = 0
        while True:
            started = self._clock()
            try:
                await run()
                return  # finished: nothing to restart
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # a stop: the task ends for good
                # Raised from inside (an awaited future cancelled under it, such as a gRPC
                # call whose channel was closed), not a stop: a crash like any other.
                log.exception("background task %s was cancelled from inside", name)
                self._record(name)
            except Exception:
                log.exception("background task %s crashed", name)
                self._record(name)
            if not restart:
                self._failed.append(name)
                return
            attempt = 1 if self._clock() - started >= self._stable_s else attempt + 1
            delay = self.backoff_s(attempt)
            log.warning("restarting background task %s in %g s", name, delay)
            await self._sleep(delay)

    def _record(self, name: str) -> None:
        self.crashes.labels(name).inc()
        times = self._crashes.setdefault(name, deque(maxlen=self._crash_loop))
        times.append(self._clock())
