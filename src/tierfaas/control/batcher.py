"""``Batcher``: the master's write buffer for one batch window.

Why batch: every change the master applies is streamed to every replica, and one message per
registration would cost each replica a gRPC message per cold start. Gathering the writes for
a short window (default 100 ms) turns a burst into one delta per window, and lets writes to
the same (function, node run) cancel out before they cost anything.

What it guarantees: ``take()`` returns a ``Batch`` whose effect on a ``RoutingTable``
(``apply_batch``) is the same as applying every write in arrival order, for writes that name
one run per node (the normal case: the ClusterManager resolves a node name to its live run
before it writes). Coalescing rules:
- a later write to the same (function, node, epoch) replaces the earlier one (so register
  then unregister within one window leaves a REMOVE, which is a no-op if the route was not
  in the table: nothing is streamed);
- ``announce`` (a node's whole warm set) replaces the node's earlier pending writes of that
  run or older; later single writes of that run are folded into the announced set;
- ``drop_node`` cancels the node's earlier pending writes of the runs it drops.
Runs of one node mixed in one window resolve by the table's epoch rules (the newest run
wins). ``due()`` says when to flush. The window is a *rate limit*, leading edge first: a write
that comes after a quiet window (none flushed for ``window_s``) is due at once, and writes
that follow within ``window_s`` of a flush wait for the window's end and go out together, or
sooner once ``max_pending`` are waiting (a bound on memory and on the size of one delta). So
a burst still costs one delta per window, while a lone registration reaches the replicas in
a round trip instead of a window later. An *urgent* write is due at once, window or not: the
master marks so the registration of a function that no node has yet (its first cold start
anywhere), because until the replicas hear of it every node that gets a call for the function
starts an instance of its own; there is one such write per function warming up, so they
cannot flood the replicas. So is the unregistration of a function's last node (it was evicted
or reaped everywhere): the table drops it at once, and no node forwards to a run that has none.
The clock is injected; the batcher never sleeps or schedules anything itself.
"""

from __future__ import annotations

import math

from tierfaas.clock import Clock
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.table import Batch, Change, Op

PairKey = tuple[str, str, int]  # (function, node name, epoch)


class Batcher:
    def __init__(self, clock: Clock, *, window_s: float = 0.1, max_pending: int = 10_000) -> None:
        if window_s < 0:
            raise ValueError("window_s must be 0 or more")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._clock = clock
        self.window_s = window_s
        self.max_pending = max_pending
        self._first_at: float | None = None
        self._last_take = -math.inf  # when the last batch was taken
        self._urgent = False  # an urgent write is pending: due at once
        self._pairs: dict[PairKey, Change] = {}
        self._announces: dict[str, tuple[NodeEndpoint, set[str]]] = {}
        self._drops: dict[str, int | None] = {}
        self._size = 0

    # -- writes ------------------------------------------------------------------------------

    def register(self, function: str, route: NodeEndpoint, *, urgent: bool = False) -> None:
        self._pair(Change(Op.ADD, function, route))
        self._urgent = self._urgent or urgent

    def unregister(self, function: str, route: NodeEndpoint, *, urgent: bool = False) -> None:
        self._pair(Change(Op.REMOVE, function, route))
        self._urgent = self._urgent or urgent

    def announce(self, route: NodeEndpoint, functions: set[str] | frozenset[str]) -> None:
        self._forget(route.name, route.epoch)
        self._announces[route.name] = (route, set(functions))
        self._touch(1 + len(functions))

    def drop_node(self, name: str, epoch: int | None = None) -> None:
        self._forget(name, epoch)
        if name in self._drops:
            old = self._drops[name]
            self._drops[name] = None if old is None or epoch is None else max(old, epoch)
        else:
            self._drops[name] = epoch
        self._touch(1)

    def pending_adds(self, function: str) -> list[NodeEndpoint]:
        """The runs registered for ``function`` in the pending batch (not yet in the table):
        the master names them in its answers at once, before the batch is flushed."""
        return [c.route for c in self._pairs.values() if c.function == function and c.op is Op.ADD]

    def overlay(self, name: str, held: dict[str, int]) -> dict[str, int]:
        """What ``name`` holds once the pending batch is applied, given what it holds now
        (``held``: function -> the epoch of the run holding it, ``RoutingTable.runs_of``):
        the same rules and order as ``RoutingTable.apply_batch``, for one node name. The
        master's anti-entropy digest counts the writes it has accepted but not yet flushed."""
        result = dict(held)
        if name in self._drops:
            dropped = self._drops[name]
            result = {f: e for f, e in result.items() if dropped is not None and e > dropped}
        announced = self._announces.get(name)
        if announced is not None:
            route, functions = announced
            result = {
                f: e
                for f, e in result.items()
                if e > route.epoch or (e == route.epoch and f in functions)
            }
            for function in functions:
                _add(result, function, route.epoch)
        for (function, node, epoch), change in self._pairs.items():
            if node != name:
                continue
            if change.op is Op.ADD:
                _add(result, function, epoch)
            elif result.get(function) == epoch:
                del result[function]
        return result

    # -- flushing ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Writes pending (an announce counts as one plus its functions)."""
        return self._size

    def deadline(self) -> float | None:
        """When the pending writes are due (clock seconds), or None if nothing is pending."""
        if self._first_at is None:
            return None
        if self._urgent:
            return self._first_at
        return max(self._first_at, self._last_take + self.window_s)

    def due(self) -> bool:
        deadline = self.deadline()
        if deadline is None:
            return False
        return self._size >= self.max_pending or self._clock() >= deadline

    def take(self) -> Batch | None:
        """Everything pending, as one batch (None if nothing), and starts a new window."""
        if self._first_at is None:
            return None
        batch = Batch(
            drops=tuple(self._drops.items()),
            announces=tuple((route, frozenset(fs)) for route, fs in self._announces.values()),
            changes=tuple(self._pairs.values()),
        )
        self._pairs.clear()
        self._announces.clear()
        self._drops.clear()
        self._first_at = None
        self._size = 0
        self._last_take = self._clock()
        self._urgent = False
        return batch

    # -- internals ---------------------------------------------------------------------------

    def _pair(self, change: Change) -> None:
        route = change.route
        announced = self._announces.get(route.name)
        if announced is not None and announced[0].epoch == route.epoch:
            functions = announced[1]
            if change.op is Op.ADD:
                functions.add(change.function)
            else:
                functions.discard(change.function)
            self._touch(1)
            return
        key = (change.function, route.name, route.epoch)
        # Moved to the end: the pending order is the order of each pair's last write.
        self._pairs.pop(key, None)
        self._pairs[key] = change
        self._touch(1)

    def _forget(self, name: str, epoch: int | None) -> None:
        """Drops the pending writes of ``name``'s runs up to ``epoch`` (None: all runs)."""
        for key in [k for k in self._pairs if k[1] == name and (epoch is None or k[2] <= epoch)]:
            del self._pairs[key]
        announced = self._announces.get(name)
        if announced is not None and (epoch is None or announced[0].epoch <= epoch):
            del self._announces[name]

    def _touch(self, count: int) -> None:
        # _size counts writes received, not kept: an upper bound that makes max_pending flush
        # a busy window early without recounting the coalesced maps on every write.
        self._size += count
        if self._first_at is None:
            self._first_at = self._clock()


def _add(held: dict[str, int], function: str, epoch: int) -> None:
    """An ADD under the table's rule: kept unless a newer run holds the function."""
    if held.get(function, epoch) <= epoch:
        held[function] = epoch
