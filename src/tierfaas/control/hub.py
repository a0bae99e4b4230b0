"""``TableHub``: the master's table, its batch window and its Subscribe streams, in one place.

Theory of operation. Writes go into a ``Batcher``; ``flush()`` (called when the window is
due: ``run()`` does it on a timer, or the ClusterManager's actor can call it itself) applies
the batch to the ``RoutingTable`` as one delta and hands that delta to every subscriber's
queue. Everything that touches the table is synchronous and runs on the event loop, so a
subscriber that computes its starting point (``since()``) and registers its queue in one
step can never miss or double a delta.

A subscriber that falls ``queue_max`` deltas behind (a slow replica) is not allowed to hold
master memory: its queue is cleared and marked, and its stream continues with a fresh
snapshot. A subscription ends when ``close()`` is called (the node stops being master).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from tierfaas.clock import Clock
from tierfaas.control.batcher import Batcher
from tierfaas.control.constants import BATCH_WINDOW_S, MAX_PENDING_WRITES, SUBSCRIBER_QUEUE_DELTAS
from tierfaas.control.lineage import Fork
from tierfaas.control.table import Delta, RoutingTable, Update


class _Subscriber:
    def __init__(self, queue_max: int) -> None:
        self.queue: asyncio.Queue[Delta | None] = asyncio.Queue(queue_max)
        self.overflowed = False


class TableHub:
    def __init__(
        self,
        table: RoutingTable,
        clock: Clock,
        *,
        window_s: float = BATCH_WINDOW_S,
        max_pending: int = MAX_PENDING_WRITES,
        queue_max: int = SUBSCRIBER_QUEUE_DELTAS,
        on_delta: Callable[[Delta], None] | None = None,
    ) -> None:
        self.table = table
        self.batcher = Batcher(clock, window_s=window_s, max_pending=max_pending)
        self._clock = clock
        self._queue_max = queue_max
        self._subscribers: set[_Subscriber] = set()
        self._wake = asyncio.Event()
        self._on_delta = on_delta
        self.closed = False

    # -- writes (wake the flusher) -----------------------------------------------------------

    def wrote(self) -> None:
        """Call after writing to ``batcher``: starts the window timer of ``run()``."""
        self._wake.set()

    def flush(self) -> Delta | None:
        """Applies what is pending as one delta and streams it; None if nothing changed."""
        batch = self.batcher.take()
        if batch is None:
            return None
        delta = self.table.apply_batch(batch)
        if delta is None:
            return None
        for sub in self._subscribers:
            if sub.overflowed:
                continue
            try:
                sub.queue.put_nowait(delta)
            except asyncio.QueueFull:
                sub.overflowed = True
                _drain(sub.queue)
                sub.queue.put_nowait(None)  # wakes the stream, which sends a snapshot
        if self._on_delta is not None:
            self._on_delta(delta)
        return delta

    async def run(self) -> None:
        """Flushes every batch when it is due, until cancelled. A write that arrives while
        it waits for a window's end wakes it: that write may be urgent (due at once)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (deadline := self.batcher.deadline()) is not None:
                if self.batcher.due():
                    self.flush()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=max(0.0, deadline - self._clock())
                    )
                self._wake.clear()

    # -- streams -----------------------------------------------------------------------------

    async def subscribe(
        self, from_version: int, lineage: str, *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        """The missed deltas (or a snapshot), then every delta as it is flushed. A subscriber
        that ``follows_forks`` may also resume from a position of a lineage this table forked
        from (``RoutingTable.resume_from``): after a failover, no snapshot."""
        sub = _Subscriber(self._queue_max)
        # No await between the catch-up and registering: no delta can fall between them.
        missed: list[Delta] | list[Delta | Fork] | None = None
        if from_version and follows_forks:
            missed = self.table.resume_from(from_version, lineage)
        elif from_version:
            missed = self.table.since(from_version, lineage)
        first: list[Update] = list(missed) if missed is not None else [self.table.snapshot()]
        self._subscribers.add(sub)
        try:
            for update in first:
                yield update
            while not self.closed:
                delta = await sub.queue.get()
                if delta is not None:
                    yield delta
                elif sub.overflowed:
                    sub.overflowed = False
                    _drain(sub.queue)
                    yield self.table.snapshot()
                else:
                    return  # closed
        finally:
            self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """Ends every subscription (this node is no longer master)."""
        self.closed = True
        for sub in self._subscribers:
            _drain(sub.queue)
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)


def _drain(queue: asyncio.Queue[Delta | None]) -> None:
    while not queue.empty():
        queue.get_nowait()
