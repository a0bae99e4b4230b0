"""The node's memory for instances: the sum of ``memory_mb`` of the live and starting ones.

A start books its function's ``memory_mb`` first; when that would exceed the budget, the least
recently used idle instances of *other* functions are evicted to make room (unless the start
asks not to evict: an extra or a prewarmed instance is never worth a warm one elsewhere). A
start that finds no room is not made; its calls wait, then get 429. With ``warm_elsewhere`` set
(``--cluster-cache``), idle instances whose function is also warm on another node are evicted
first (``duplicates.duplicates_first``), then the rest, least recently used first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tierfaas.runtime.duplicates import WarmElsewhere, duplicates_first
from tierfaas.runtime.ports import PoolInstance


class IdleInstances(Protocol):
    """A holder of instances the budget may evict (a pool)."""

    def idle_instances(self) -> list[PoolInstance]: ...


class MemoryBudget:
    def __init__(self, budget_mb: int, holders: Iterable[IdleInstances] = ()) -> None:
        self.budget_mb = budget_mb
        self.used_mb = 0
        self._holders = list(holders)
        # Where a function is warm on another node (the router's routes), when the node uses
        # the cluster as one cache; None: evict as if this node were alone.
        self.warm_elsewhere: WarmElsewhere | None = None

    def add(self, holder: IdleInstances) -> None:
        """``holder``'s idle instances may be evicted for other holders' starts."""
        self._holders.append(holder)

    def book(self, memory_mb: int, *, exclude: object = None, evict: bool = True) -> bool:
        """Books ``memory_mb`` for a new instance; true if it fits. Past the budget, and with
        ``evict``, it first evicts the least recently used idle instances not of ``exclude``
        (they free their memory at once, though their processes end a moment later)."""
        budget = self.budget_mb
        if self.used_mb + memory_mb > budget:
            if not evict:
                return False
            idle = [
                instance
                for holder in self._holders
                if holder is not exclude
                for instance in holder.idle_instances()
            ]
            idle.sort(key=lambda instance: instance.last_used)
            if self.warm_elsewhere is not None:
                idle = duplicates_first(idle, lambda i: i.spec.name, self.warm_elsewhere)
            for instance in idle:
                if self.used_mb + memory_mb <= budget:
                    break
                instance.kill("evicted")
                instance.holds_memory = False
                self.used_mb -= instance.spec.memory_mb
            if self.used_mb + memory_mb > budget:
                return False
        self.used_mb += memory_mb
        return True

    def would_evict(self, memory_mb: int) -> bool:
        """Whether booking ``memory_mb`` now would have to evict (or fail): the router asks
        before a start, to forward to a warm node instead."""
        return self.used_mb + memory_mb > self.budget_mb

    def release(self, memory_mb: int) -> None:
        """An instance that held ``memory_mb`` is gone (or never started)."""
        self.used_mb = max(0, self.used_mb - memory_mb)
