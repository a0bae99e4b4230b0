"""Which idle instances go first when the node needs memory: Greedy-Dual or LRU.

Keeping an instance warm is caching (FaasCache, ASPLOS '21): an instance is worth its memory
in proportion to how often it is called and how much a cold start of its function costs.
Greedy-Dual gives each instance the priority

    clock at its last use + frequency x cold-start cost / size

and evicts the lowest first; the priority of the one evicted becomes the new clock, so an
instance not used since many evictions ages out even if it was once popular, and a new or just
used instance starts from the current clock. ``frequency`` is how often the instance's
*function* is called on this node (``CallRate``: its calls, decayed with a half-life of
``FREQUENCY_HALF_LIFE_S``), plus one, as FaasCache counts a function's invocations: an
instance that has not served yet (one just started, or prewarmed for a predicted call) or that
replaced one stopped between its function's calls is worth its function's calls, not its own,
which restart at 0 with every instance (with the instance's own count, a simulated day of the
learned windows evicted most prewarmed instances before their call, and 12 % more calls were
cold). That is the worth of the instance the function's next call takes; one that only a call
arriving while others run would take (an extra instance a peak left) is worth those calls'
frequency (``FunctionPool.idle_values``); ``cost`` is the function's measured start time,
``size`` the instance's measured (or booked) memory. LRU orders by last use alone (what the
node did before, and what Lambda and OpenWhisk do).

The clock changes only at evictions, so the clock "at the last use" of an instance is read
from the history of its changes at the time of that use (``last_used``): no hook on every
call is needed. The history keeps its last ``HISTORY`` changes; an instance last used before
the oldest kept one counts from clock 0, which only makes it go sooner.

Pure: no I/O, no clock of its own (times come with the candidates and the evictions).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

EvictionName = Literal["greedy-dual", "lru"]
HISTORY = 4096
MIN_SIZE_MB = 1.0  # a size below it (a reading of a process that just started) counts as it
MIN_COST_S = 0.001  # a start measured faster than it (a fake) counts as it
FREQUENCY_HALF_LIFE_S = 4 * 3600.0
"""A call counts half as much toward its function's frequency after this long: the range of
the keep-alive histogram (``keepalive.RANGE_S``). On a simulated day 1 h and no decay at all
gave within 1 % of the same cold calls, 10 minutes 4 % more: the decay is there so that a
function popular hours ago does not keep that value for ever."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An idle instance that may be evicted, as the policy sees it."""

    key: Hashable  # what the caller evicts (the instance)
    last_used: float  # when it last ended a call (or started), on the node's clock
    frequency: float  # how often its function is called here (see ``CallRate``), plus one
    cost_s: float  # its function's measured start time
    size_mb: float  # the memory it holds, measured or booked


class EvictionPolicy(Protocol):
    def order(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """``candidates``, the first to evict first."""
        ...

    def evicted(self, candidate: Candidate, now: float) -> None:
        """``candidate`` (from ``order``) was evicted at ``now``."""
        ...


class Lru:
    """The least recently used first."""

    def order(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        return sorted(candidates, key=lambda c: c.last_used)

    def evicted(self, candidate: Candidate, now: float) -> None:
        pass


class GreedyDual:
    """Greedy-Dual-Size-Frequency (see the module's docstring)."""

    def __init__(self) -> None:
        self.clock = 0.0
        self._times: list[float] = []  # when the clock changed, ascending
        self._values: list[float] = []  # the clock from then on

    def clock_at(self, when: float) -> float:
        """The clock in effect at time ``when``."""
        i = bisect.bisect_right(self._times, when)
        return self._values[i - 1] if i else 0.0

    def priority(self, candidate: Candidate) -> float:
        value = (
            candidate.frequency
            * max(candidate.cost_s, MIN_COST_S)
            / max(candidate.size_mb, MIN_SIZE_MB)
        )
        return self.clock_at(candidate.last_used) + value

    def order(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (self.priority(c), c.last_used))

    def evicted(self, candidate: Candidate, now: float) -> None:
        # Victims go lowest first, so the clock only rises; max() keeps it so if a caller
        # evicts out of order.
        clock = max(self.clock, self.priority(candidate))
        if self._times and now < self._times[-1]:
            now = self._times[-1]  # a clock never goes back; keeps the history sorted
        self.clock = clock
        self._times.append(now)
        self._values.append(clock)
        if len(self._times) > HISTORY:
            del self._times[: HISTORY // 2]
            del self._values[: HISTORY // 2]


class CallRate:
    """How often a function is called on this node: its calls, each weighing half as much
    every ``half_life_s`` (an exponentially decayed count). Greedy-Dual's frequency."""

    __slots__ = ("_at", "_count", "half_life_s")

    def __init__(self, half_life_s: float = FREQUENCY_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._count = 0.0
        self._at = 0.0

    def _decayed(self, now: float) -> float:
        if now <= self._at:
            return self._count
        return self._count * math.pow(0.5, (now - self._at) / self.half_life_s)

    def called(self, now: float) -> None:
        """One call arrived at ``now``."""
        at = self._at
        if now <= at:  # twice per call: _decayed inlined
            self._count += 1.0
        else:
            self._count = self._count * math.pow(0.5, (now - at) / self.half_life_s) + 1.0
            self._at = now

    def count(self, now: float) -> float:
        """The decayed count of calls at ``now``."""
        return self._decayed(now)

    def count_expecting(self, now: float, within_s: float) -> float:
        """The decayed count at ``now``, or, if more, the one a steady rate of a call every
        ``within_s`` would have (a decayed count of calls at rate r averages r x half_life_s /
        ln 2): an instance waiting for a call predicted within ``within_s`` (a learned
        keep-alive window: kept because the call it expects pays for it) is worth at least
        that rate. A
        function prewarmed before its predicted call has few calls, and its instance, idle
        until that call, went first without this (simulated day, one node: 2 % more cold
        calls, the timers' 45 % more)."""
        expected = self.half_life_s / (math.log(2) * max(within_s, 1.0))
        return max(self._decayed(now), expected)


def make_policy(name: EvictionName) -> EvictionPolicy:
    """The policy of ``--eviction``."""
    return GreedyDual() if name == "greedy-dual" else Lru()


def victims(
    ordered: Sequence[Candidate], shortfall_mb: float, *, all_or_nothing: bool = True
) -> list[Candidate]:
    """The first of ``ordered`` whose sizes free at least ``shortfall_mb``. When all of them
    together would not: none with ``all_or_nothing`` (evicting them would not make the room a
    start asks for), else all of them (relief from pressure: every MiB helps)."""
    chosen: list[Candidate] = []
    freed = 0.0
    for candidate in ordered:
        if freed >= shortfall_mb:
            break
        chosen.append(candidate)
        freed += candidate.size_mb
    return chosen if freed >= shortfall_mb or not all_or_nothing else []
