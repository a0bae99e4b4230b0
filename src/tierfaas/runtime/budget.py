"""The node's memory for instances: what each live or starting one books, and which idle ones
give it up.

Accounting (``--memory-accounting``): ``declared`` books every instance at its function's
``memory_mb``. ``measured`` books a starting instance at an estimate (``estimate_mb``: the
function's recent measured average, else ``min(memory_mb, DEFAULT_ESTIMATE_MB)``, never above
``memory_mb``) and, as readings arrive (``measured``), at what it is measured to use. Either
way ``memory_mb`` stays each instance's hard limit (its cgroup's). Measured accounting
overcommits: the limits of the admitted instances may add up to more than the budget, which is
what keeps many small instances warm; the risk, that many grow at once, is met by ``relieve``
(evict idle instances when the measured total passes the budget or the kernel reports
pressure) and is documented in docs/operations.md.

Eviction: a start that does not fit evicts idle instances of *other* functions, in the order
of the eviction policy (``eviction.py``: Greedy-Dual, valuing an instance by the frequency of
the calls here that would take it, as its holder reports it, or LRU), and only if together
they make the room (unless the start asks not to evict: an extra or a prewarmed instance is
never worth a warm one elsewhere). A start that finds no room is not made; its calls wait,
then get 429. An evicted instance's memory is free at once, though its process ends a moment
later. With ``warm_elsewhere`` set (``--cluster-cache``), idle instances whose function is
also warm on another node go first (``duplicates.duplicates_first``), each group in the
policy's order.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from tierfaas.clock import Clock, monotonic
from tierfaas.manifest import FunctionSpec
from tierfaas.runtime import eviction, memory
from tierfaas.runtime.duplicates import WarmElsewhere, duplicates_first
from tierfaas.runtime.ports import PoolInstance

Accounting = Literal["measured", "declared"]
DEFAULT_ESTIMATE_MB = 64
"""A start's booking under measured accounting before its function was ever measured: an
instance forked from the zygote typically uses a few to a few tens of MiB."""
AVERAGE_WEIGHT = 0.3  # of a new reading in a function's moving average
RECENT_S = 60.0  # evictions_last_min's window


class IdleInstances(Protocol):
    """A holder of instances the budget may evict (a pool)."""

    def idle_values(self) -> list[tuple[PoolInstance, float]]:
        """Its idle instances the budget may evict, each with the call frequency its value
        is taken from (``eviction.CallRate``: the calls here that would find it)."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """The node's memory now, for /metrics, /v1/stats and ``tierfaas status``."""

    budget_mb: float
    booked_mb: float  # what admission counts (declared, or measured and estimated)
    measured_mb: float  # the instances' latest readings, summed
    accounting: Accounting
    evictions: Mapping[str, int]  # by reason: room, pressure, over_budget
    evictions_last_min: int = 0  # for a one-shot reader (``tierfaas status``)


class MemoryBudget:
    def __init__(
        self,
        budget_mb: float,
        holders: Iterable[IdleInstances] = (),
        *,
        accounting: Accounting = "declared",
        policy: eviction.EvictionPolicy | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self.budget_mb = budget_mb
        self.accounting: Accounting = accounting
        self.policy = policy if policy is not None else eviction.Lru()
        self.clock = clock
        self._holders = list(holders)
        self._starting: dict[str, deque[float]] = {}  # function -> bookings of its starts
        self._held: dict[PoolInstance, float] = {}  # live instance -> its booking
        self._readings: dict[PoolInstance, float] = {}  # live instance -> its last reading
        self._average: dict[str, float] = {}  # function -> moving average of its readings
        self.evictions: Counter[str] = Counter()
        self._recent: deque[float] = deque()  # when the evictions of the last RECENT_S were
        # Where a function is warm on another node (the router's routes), when the node uses
        # the cluster as one cache; None: evict as if this node were alone.
        self.warm_elsewhere: WarmElsewhere | None = None
        # Whether this node carries a function's travelling idle history (its learned windows):
        # of two nodes that each see the other warm, only the one without it holds a
        # duplicate, so the cluster cache does not evict both. None: both are duplicates.
        self.carries_history: Callable[[str], bool] | None = None

    def add(self, holder: IdleInstances) -> None:
        """``holder``'s idle instances may be evicted for other holders' starts."""
        self._holders.append(holder)

    # -- what is booked ----------------------------------------------------------------------

    @property
    def used_mb(self) -> float:
        """What the live and starting instances book."""
        starting = sum(sum(bookings) for bookings in self._starting.values())
        return starting + sum(self._held.values())

    @property
    def measured_mb(self) -> float:
        return sum(self._readings.values())

    def report(self) -> MemoryReport:
        self._forget_old(self.clock())
        return MemoryReport(
            self.budget_mb,
            self.used_mb,
            self.measured_mb,
            self.accounting,
            dict(self.evictions),
            len(self._recent),
        )

    def _forget_old(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - RECENT_S:
            self._recent.popleft()

    def estimate_mb(self, spec: FunctionSpec) -> float:
        """What a new instance of ``spec`` books until it is measured."""
        if self.accounting == "declared":
            return float(spec.memory_mb)
        average = self._average.get(spec.name)
        guess = average if average is not None else DEFAULT_ESTIMATE_MB
        return float(min(guess, spec.memory_mb))

    # -- the life of a booking ---------------------------------------------------------------

    def book(self, spec: FunctionSpec, *, exclude: object = None, evict: bool = True) -> bool:
        """Books a new instance of ``spec`` (``estimate_mb``); true if it fits. Past the
        budget, and with ``evict``, it first evicts idle instances not of ``exclude`` (a
        holder), in the policy's order, if they make the room."""
        need = self.estimate_mb(spec)
        shortfall = self.used_mb + need - self.budget_mb
        if shortfall > 0:
            if not evict:
                return False
            candidates = self._idle(exclude)
            if not self._evict(candidates, shortfall, "room", all_or_nothing=True):
                return False
        self._starting.setdefault(spec.name, deque()).append(need)
        return True

    def started(self, instance: PoolInstance) -> None:
        """A start booked with ``book`` made ``instance``: the booking is now its own."""
        self._held[instance] = self._take_starting(instance.spec)

    def start_failed(self, spec: FunctionSpec) -> None:
        """A start booked with ``book`` made no instance: its booking is free."""
        self._take_starting(spec)

    def stopped(self, instance: PoolInstance) -> None:
        """``instance`` is gone: its booking is free (nothing, if it was evicted)."""
        self._held.pop(instance, None)
        self._readings.pop(instance, None)

    def _take_starting(self, spec: FunctionSpec) -> float:
        bookings = self._starting.get(spec.name)
        if not bookings:
            return self.estimate_mb(spec)  # not booked (a test's instance): what it would be
        booking = bookings.popleft()
        if not bookings:
            del self._starting[spec.name]
        return booking

    # -- readings and pressure ---------------------------------------------------------------

    def measured(self, readings: Mapping[PoolInstance, int | None]) -> None:
        """The live instances' measured use, in bytes (None: not read). Under measured
        accounting each one's booking becomes its reading."""
        for instance, reading in readings.items():
            if reading is None or instance not in self._held:
                continue  # gone or evicted meanwhile
            mb = reading / memory.MiB
            self._readings[instance] = mb
            name = instance.spec.name
            average = self._average.get(name)
            self._average[name] = (
                mb if average is None else average + AVERAGE_WEIGHT * (mb - average)
            )
            if self.accounting == "measured":
                self._held[instance] = mb

    def relieve(self, pressure_pct: float | None, threshold_pct: float) -> int:
        """Evicts idle instances, lowest value first, when ``memory.relief`` says (measured
        use past the budget, or ``pressure_pct`` past ``threshold_pct``); returns how many."""
        decision = memory.relief(self.used_mb, self.budget_mb, pressure_pct, threshold_pct)
        if decision is None:
            return 0
        return self._evict(self._idle(None), decision.mb, decision.reason, all_or_nothing=False)

    # -- eviction ----------------------------------------------------------------------------

    def _idle(self, exclude: object) -> dict[PoolInstance, float]:
        """The idle instances of the holders but ``exclude``, each with its value's frequency
        (``IdleInstances.idle_values``), plus one."""
        idle: dict[PoolInstance, float] = {}
        for holder in self._holders:
            if holder is exclude:
                continue
            for instance, frequency in holder.idle_values():
                idle[instance] = frequency + 1.0
        return idle

    def _duplicated(self, function: str) -> bool:
        """Whether this node's instances of ``function`` are a duplicate for the cluster
        cache: warm elsewhere too, and this node does not carry the function's history."""
        if self.warm_elsewhere is None or not self.warm_elsewhere(function):
            return False
        return self.carries_history is None or not self.carries_history(function)

    def _evict(
        self, instances: dict[PoolInstance, float], mb: float, reason: str, *, all_or_nothing: bool
    ) -> int:
        """Evicts of ``instances`` (with their frequencies) the first in the policy's order that
        free ``mb``; returns how many (see ``eviction.victims``)."""
        candidates = {
            eviction.Candidate(
                key=instance.id,
                last_used=instance.last_used,
                frequency=frequency,
                cost_s=instance.start_s,
                size_mb=self._held[instance],
            ): instance
            for instance, frequency in instances.items()
            if instance in self._held and not instance.dead
        }
        order = self.policy.order(candidates)
        if self.warm_elsewhere is not None:
            order = duplicates_first(order, lambda c: candidates[c].spec.name, self._duplicated)
        chosen = eviction.victims(order, mb, all_or_nothing=all_or_nothing)
        now = self.clock()
        for candidate in chosen:
            instance = candidates[candidate]
            instance.kill("evicted")
            instance.holds_memory = False
            self.stopped(instance)
            self.policy.evicted(candidate, now)
            self.evictions[reason] += 1
            self._recent.append(now)
        self._forget_old(now)
        return len(chosen)

    def would_evict(self, spec: FunctionSpec) -> bool:
        """Whether booking a new instance of ``spec`` now would have to evict (or fail): the
        router asks before a start, to forward to a warm node instead."""
        return self.used_mb + self.estimate_mb(spec) > self.budget_mb
