"""``Dispatcher``: which of the node's queued calls start now.

Event-driven: it looks again when a call is added, when a running one ends (at that call's
function alone: nothing else changed) and when the earliest call not yet due becomes due
(one timer on the injected scheduler), never on a polling loop. Each function may run at
most its async share of its slots here at once (``share_limit``), so synchronous calls
always find the rest free; calls of one function start in the order they are due (then
accepted). The decision itself is ``admit``, pure.

It keeps the queued calls in memory (one heap per function) and knows nothing of the store:
``start(call)`` hands a call to the service, which runs it and calls ``finished``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tierfaas.calls.model import Call
from tierfaas.clock import Clock, Scheduler, Timer


def share_limit(max_instances: int, concurrency: int, share: float) -> int:
    """How many calls of a function may run as async calls on one node at once: ``share`` of
    its slots (``max_instances`` x ``concurrency``), at least 1."""
    return max(1, math.floor(max_instances * concurrency * share))


@dataclass(frozen=True, slots=True)
class Admission:
    start: tuple[str, ...]
    """The functions whose earliest queued call starts now (one each)."""
    wake_at: float | None
    """When the earliest call not yet due becomes due (None: none waits for a time)."""


def admit(
    heads: Mapping[str, float],
    running: Mapping[str, int],
    limits: Mapping[str, int],
    now: float,
) -> Admission:
    """``heads``: per function with queued calls, when its earliest one is due. A function
    starts its head if it is due and the function runs fewer than its limit; a head not due
    yet sets the wake-up time (one held back only by the limit waits for a call to end)."""
    start: list[str] = []
    wake_at: float | None = None
    for function, due in heads.items():
        if due > now:
            wake_at = due if wake_at is None else min(wake_at, due)
        elif running.get(function, 0) < limits.get(function, 1):
            start.append(function)
    return Admission(tuple(sorted(start)), wake_at)


class Dispatcher:
    """Holds the queued own calls; ``start(call)`` is called for each that may run now (the
    call counts as running until ``finished(call.function)``). ``limit(function)`` is its
    async share; ``wall`` the Unix clock the calls' ``due_at`` are on."""

    def __init__(
        self,
        start: Callable[[Call], None],
        limit: Callable[[str], int],
        scheduler: Scheduler,
        wall: Clock,
    ) -> None:
        self._start = start
        self._limit = limit
        self._scheduler = scheduler
        self._wall = wall
        self._calls: dict[str, Call] = {}
        self._heaps: dict[str, list[tuple[float, float, str]]] = {}
        self.running: dict[str, int] = {}
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self.paused = False
        """While paused (the restart claim, a drain) nothing starts; ``resume()`` looks again."""

    @property
    def queued(self) -> int:
        return len(self._calls)

    @property
    def running_total(self) -> int:
        return sum(self.running.values())

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._calls

    def add(self, call: Call) -> None:
        """Queues ``call`` (again) to start once due; a call already queued is replaced."""
        function = call.function
        if (
            not self._heaps.get(function)
            and not self.paused
            and call.call_id not in self._calls
            and call.due_at <= self._wall()
        ):
            # Nothing of its function waits: it starts now if the function has room (the
            # common case of a fresh accept, without the heap's push and pop).
            running = self.running.get(function, 0)
            if running < self._limit(function):
                self.running[function] = running + 1
                self._start(call)
                return
        self._calls[call.call_id] = call
        heap = self._heaps.setdefault(call.function, [])
        heapq.heappush(heap, (call.due_at, call.accepted_at, call.call_id))
        self._kick_one(call.function)

    def remove(self, call_id: str) -> Call | None:
        """Takes a queued call out (it is not started); None if it is not queued here."""
        return self._calls.pop(call_id, None)  # its heap entry is skipped when reached

    def finished(self, function: str) -> None:
        """A call of ``function`` that ``start`` was given has ended."""
        left = self.running.get(function, 0) - 1
        if left > 0:
            self.running[function] = left
        else:
            self.running.pop(function, None)
        if function in self._heaps:  # else nothing of it waits (``_head`` drops empty heaps)
            self._kick_one(function)

    def resume(self) -> None:
        self.paused = False
        self.kick()

    def _head(self, function: str) -> tuple[float, float, str] | None:
        """The function's earliest queued call, dropping entries of calls removed or
        re-queued since they were pushed."""
        heap = self._heaps.get(function)
        while heap:
            due, _, call_id = heap[0]
            call = self._calls.get(call_id)
            if call is not None and call.due_at == due and call.function == function:
                return heap[0]
            heapq.heappop(heap)
        self._heaps.pop(function, None)
        return None

    def kick(self) -> None:
        """Starts whatever may start now and sets the timer for the next due call."""
        if self.paused:
            return
        while True:
            heads = {}
            for function in list(self._heaps):
                head = self._head(function)
                if head is not None:
                    heads[function] = head[0]
            limits = {function: self._limit(function) for function in heads}
            decision = admit(heads, self.running, limits, self._wall())
            for function in decision.start:
                _, _, call_id = heapq.heappop(self._heaps[function])
                call = self._calls.pop(call_id)
                self.running[function] = self.running.get(function, 0) + 1
                self._start(call)
            if not decision.start:
                self._arm(decision.wake_at)
                return

    def _kick_one(self, function: str) -> None:
        """``kick`` for one function, after a change that concerns it alone (a call of it
        added, or ended): no other function's calls can start because of it, so the others
        are not looked at (this runs twice per call: it must cost little)."""
        if self.paused:
            return
        limit: int | None = None
        while True:
            head = self._head(function)
            if head is None:
                return
            due, _, call_id = head
            if due > self._wall():
                if self._timer_at is None or due < self._timer_at:
                    self._arm(due)
                return
            if limit is None:
                limit = self._limit(function)
            running = self.running.get(function, 0)
            if running >= limit:
                return
            heapq.heappop(self._heaps[function])
            call = self._calls.pop(call_id)
            self.running[function] = running + 1
            self._start(call)

    def _arm(self, wake_at: float | None) -> None:
        if wake_at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = wake_at
        if wake_at is not None:
            self._timer = self._scheduler.call_later(wake_at - self._wall(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.kick()

    def close(self) -> None:
        self.paused = True
        self._arm(None)
