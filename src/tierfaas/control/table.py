"""``RoutingTable``: function -> the node runs where it is warm, with versions and a delta log.

Theory of operation. The master owns one table and changes it only through ``apply`` (or
``apply_batch``), once per batch window; every call that changes something returns a
``Delta`` carrying exactly the changes that took effect, stamped ``prev_version -> version``
(``version`` grows by one per delta). Replicas hold a copy of the same class and replay those
deltas with ``apply_delta``: because a delta lists only effective changes and replays them
with the same rules, a replica at version V that applies the delta V -> V+1 holds exactly
the master's table at V+1. A bounded log of recent deltas lets ``since()`` answer a replica
that is slightly behind with the deltas it missed, and one too far behind (or from another
lineage) with ``None``: it then gets a ``Snapshot``.

A *lineage* names one master's numbering. When a replica is promoted after a failover it
starts a new lineage, so version 17 of the old master can never be mistaken for version 17
of the new one (they may hold different changes if the last batch was lost). The promoted
table records where it forked (``lineage.Fork``) in its delta log, so a replica whose
position the log passes through resumes with the entries after it instead of a snapshot
(``resume_from``; see ``tierfaas.control.lineage`` for why that is safe).

Rules (per function, per node name; a name has at most one run in a function's routes):
- ADD of run (name, e): kept if no run of that name is there or the one there has epoch
  <= e (a restarted node replaces its old run); ignored if a newer run is there.
- REMOVE of run (name, e): removes that run if it is the one there; otherwise a no-op.
These make stale messages from a dead run harmless. The table does no I/O and reads no
clock: it is driven by data and tested without sockets.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.constants import DELTA_LOG_DELTAS
from tierfaas.control.lineage import Fork, resume_from


class Op(enum.IntEnum):
    """The same numbers as ``tierfaas.v1.ChangeOp`` on the wire."""

    ADD = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class Change:
    op: Op
    function: str
    route: NodeEndpoint


@dataclass(frozen=True, slots=True)
class Delta:
    """The effective changes that take a table of ``lineage`` from ``prev_version`` to
    ``version``."""

    lineage: str
    prev_version: int
    version: int
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole table at ``version``: function -> its routes."""

    lineage: str
    version: int
    routes: Mapping[str, tuple[NodeEndpoint, ...]]

    def changes(self) -> Iterator[Change]:
        """The snapshot as ADD changes (its wire form)."""
        for function, routes in self.routes.items():
            for route in routes:
                yield Change(Op.ADD, function, route)


Update = Snapshot | Delta | Fork
"""What a Subscribe stream carries. A ``Fork`` is sent only to a subscriber that follows
forks (``SubscribeRequest.follows_forks``)."""


class GapError(Exception):
    """A delta does not apply on top of this table's version or lineage: re-subscribe."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Writes gathered over one batch window, applied in this order: drops, announces, pairs.

    ``drops``: (node name, highest epoch dropped, None for every run);
    ``announces``: (the node run, its whole warm set); ``changes``: single ADD/REMOVEs.
    """

    drops: tuple[tuple[str, int | None], ...] = ()
    announces: tuple[tuple[NodeEndpoint, frozenset[str]], ...] = ()
    changes: tuple[Change, ...] = ()

    def __len__(self) -> int:
        return len(self.drops) + sum(len(f) + 1 for _, f in self.announces) + len(self.changes)


class RoutingTable:
    """The table of one lineage. ``log_limit`` bounds the delta log (in deltas): a replica
    more than that many batches behind gets a snapshot; raising it costs master memory."""

    def __init__(
        self, lineage: str = "", version: int = 0, *, log_limit: int = DELTA_LOG_DELTAS
    ) -> None:
        if log_limit < 1:
            raise ValueError("log_limit must be at least 1")
        self.lineage = lineage
        self.version = version
        self._routes: dict[str, dict[str, NodeEndpoint]] = {}
        self._by_node: dict[str, set[str]] = {}
        self._log: deque[Delta | Fork] = deque(maxlen=log_limit)

    # -- reads -------------------------------------------------------------------------------

    def query(self, function: str) -> list[NodeEndpoint]:
        return list(self._routes.get(function, {}).values())

    def as_dict(self) -> dict[str, list[NodeEndpoint]]:
        """function -> routes, for comparisons and the admin view."""
        return {f: list(by_name.values()) for f, by_name in self._routes.items()}

    def functions_of(self, node: str) -> set[str]:
        return set(self._by_node.get(node, ()))

    def runs_of(self, node: str) -> dict[str, int]:
        """function -> the epoch of ``node``'s run that holds it (anti-entropy digests)."""
        return {f: self._routes[f][node].epoch for f in self._by_node.get(node, ())}

    def __len__(self) -> int:
        """The number of (function, route) entries."""
        return sum(len(by_name) for by_name in self._routes.values())

    def snapshot(self) -> Snapshot:
        routes = {f: tuple(by_name.values()) for f, by_name in self._routes.items()}
        return Snapshot(self.lineage, self.version, routes)

    def since(self, version: int, lineage: str) -> list[Delta] | None:
        """The deltas after ``version`` of ``lineage``, oldest first; ``None`` if the caller
        needs a snapshot (another lineage, ahead of us, or older than the log holds)."""
        if lineage != self.lineage:
            return None
        entries = self.resume_from(version, lineage)
        if entries is None:
            return None
        deltas = [e for e in entries if isinstance(e, Delta)]
        return deltas if len(deltas) == len(entries) else None

    def resume_from(self, version: int, lineage: str) -> list[Delta | Fork] | None:
        """What takes a copy at (``lineage``, ``version``) to this table: ``since`` across
        forks too (a copy of the lineage this one forked from, at or before the fork point,
        gets that lineage's missed deltas, the fork, then this lineage's deltas); ``None``
        if it needs a snapshot (``lineage.resume_from``)."""
        return resume_from(self._log, (self.lineage, self.version), (lineage, version))

    # -- writes (master) ---------------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> Delta | None:
        """Applies ``changes`` in order; returns the delta of those that took effect (logged
        and versioned), or None if nothing changed (the version stays)."""
        effective: list[Change] = []
        for change in changes:
            self._apply_one(change, effective)
        return self._close(effective)

    def apply_batch(self, batch: Batch) -> Delta | None:
        """Applies one batch window's writes as one delta (see ``Batch`` for the order)."""
        effective: list[Change] = []
        for name, epoch in batch.drops:
            for change in self._drop_changes(name, epoch):
                self._apply_one(change, effective)
        for route, functions in batch.announces:
            for change in self._announce_changes(route, functions):
                self._apply_one(change, effective)
        for change in batch.changes:
            self._apply_one(change, effective)
        return self._close(effective)

    def drop_node(self, name: str, epoch: int | None = None) -> Delta | None:
        """Removes every route of ``name`` (only runs up to ``epoch`` if given): the node is
        dead or left."""
        return self.apply(list(self._drop_changes(name, epoch)))

    def announce(self, route: NodeEndpoint, functions: Iterable[str]) -> Delta | None:
        """Makes ``route``'s node warm for exactly ``functions``: its older runs and the
        functions it no longer has go, the others are added."""
        return self.apply(list(self._announce_changes(route, frozenset(functions))))

    def restart_lineage(self, lineage: str) -> None:
        """Keeps the routes under a new lineage (a promoted replica becoming master), and
        logs the ``Fork`` from the old one: a subscriber holding a position of the old
        lineage that the log passes through resumes across it (``resume_from``); any other
        gets a snapshot of the new lineage."""
        if lineage == self.lineage:
            return
        if self.lineage:
            self._log.append(Fork(self.lineage, lineage, self.version))
        else:
            self._log.clear()  # a table of no lineage: nothing anyone holds continues here
        self.lineage = lineage

    # -- replay (replicas) -------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> None:
        """Replaces the whole table with ``snapshot``."""
        self._routes.clear()
        self._by_node.clear()
        self._log.clear()
        self.lineage, self.version = snapshot.lineage, snapshot.version
        for change in snapshot.changes():
            self._apply_one(change, [])

    def apply_delta(self, delta: Delta) -> None:
        """Replays a master's delta; raises ``GapError`` unless it applies to exactly this
        table's lineage and version."""
        if delta.lineage != self.lineage or delta.prev_version != self.version:
            raise GapError(
                f"delta {delta.lineage}:{delta.prev_version}->{delta.version} does not apply "
                f"to {self.lineage}:{self.version}"
            )
        for change in delta.changes:
            self._apply_one(change, [])
        self.version = delta.version
        self._log.append(delta)

    def follow_fork(self, fork: Fork) -> None:
        """Continues as ``fork.lineage`` (same routes, same version); raises ``GapError``
        unless this table is at exactly the fork's start. Logged, so that this copy, if
        promoted in turn, lets replicas of either lineage resume from it."""
        if (self.lineage, self.version) != fork.start:
            raise GapError(
                f"fork {fork.parent}:{fork.version}->{fork.lineage} does not apply to "
                f"{self.lineage}:{self.version}"
            )
        self.lineage = fork.lineage
        self._log.append(fork)

    # -- internals ---------------------------------------------------------------------------

    def _close(self, effective: list[Change]) -> Delta | None:
        if not effective:
            return None
        delta = Delta(self.lineage, self.version, self.version + 1, tuple(effective))
        self.version += 1
        self._log.append(delta)
        return delta

    def _apply_one(self, change: Change, effective: list[Change]) -> None:
        route = change.route
        by_name = self._routes.get(change.function)
        current = by_name.get(route.name) if by_name else None
        if change.op is Op.ADD:
            if current == route or (current is not None and current.epoch > route.epoch):
                return
            if by_name is None:
                by_name = self._routes[change.function] = {}
            by_name[route.name] = route
            self._by_node.setdefault(route.name, set()).add(change.function)
        else:
            if current is None or current.epoch != route.epoch or by_name is None:
                return
            del by_name[route.name]
            if not by_name:
                del self._routes[change.function]
            functions = self._by_node[route.name]
            functions.discard(change.function)
            if not functions:
                del self._by_node[route.name]
        effective.append(change)

    def _drop_changes(self, name: str, epoch: int | None) -> Iterator[Change]:
        for function in sorted(self._by_node.get(name, ())):
            current = self._routes[function][name]
            if epoch is None or current.epoch <= epoch:
                yield Change(Op.REMOVE, function, current)

    def _announce_changes(self, route: NodeEndpoint, functions: frozenset[str]) -> Iterator[Change]:
        for function in sorted(self._by_node.get(route.name, ())):
            current = self._routes[function][route.name]
            if current.epoch < route.epoch or (
                current.epoch == route.epoch and function not in functions
            ):
                yield Change(Op.REMOVE, function, current)
        for function in sorted(functions):
            held = self._routes.get(function)
            if held is not None and held.get(route.name) == route:
                # This very run holds it already: the ADD would change nothing. Skipping it
                # here, not in ``_apply_one``, matters after a failover, when every node
                # re-announces its whole warm set and nearly every pair is held already
                # (300,000 such pairs took ~1 s of the new master's loop; docs/scale.md).
                continue
            yield Change(Op.ADD, function, route)
