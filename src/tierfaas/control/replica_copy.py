"""``ReplicaCopy``: a replica's read copy of the master's table, fed by the Subscribe stream.

What it guarantees: the copy only ever holds a state the master's table held. A snapshot
replaces it; a delta is applied only on top of exactly its ``prev_version`` in the same
lineage; a ``Fork`` (a new master that kept its copy, ``tierfaas.control.lineage``) is
followed only from exactly its start, the (lineage, version) the new master forked from.
An update the copy already holds (a duplicate after a resume) is ignored; any other that
does not fit is a *gap* (a lost message, or a new master's lineage): ``apply`` answers
``GAP`` and the caller re-subscribes from ``resume_point()``, which the master answers with
the missing entries or a snapshot. Nothing here does I/O.
"""

from __future__ import annotations

import enum

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.lineage import Fork
from tierfaas.control.table import Delta, RoutingTable, Snapshot, Update


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # already held: ignored
    GAP = "gap"  # does not fit: re-subscribe from resume_point()


class ReplicaCopy:
    def __init__(self) -> None:
        self.table = RoutingTable()
        self.loaded = False
        """False until the first snapshot: an empty copy must not answer as an empty table."""

    @property
    def version(self) -> int:
        return self.table.version

    @property
    def lineage(self) -> str:
        return self.table.lineage

    def resume_point(self) -> tuple[int, str]:
        """(from_version, lineage) for the next ``Subscribe``."""
        return (self.table.version, self.table.lineage) if self.loaded else (0, "")

    def apply(self, update: Update) -> Outcome:
        if isinstance(update, Snapshot):
            self.table.load(update)
            self.loaded = True
            return Outcome.APPLIED
        if isinstance(update, Fork):
            return self._follow(update)
        return self._apply_delta(update)

    def _follow(self, fork: Fork) -> Outcome:
        if not self.loaded:
            return Outcome.GAP
        if self.table.lineage == fork.lineage and self.table.version >= fork.version:
            return Outcome.DUPLICATE
        if (self.table.lineage, self.table.version) != fork.start:
            return Outcome.GAP  # another history, or ahead of the fork point: a snapshot
        self.table.follow_fork(fork)
        return Outcome.APPLIED

    def _apply_delta(self, delta: Delta) -> Outcome:
        if not self.loaded or delta.lineage != self.table.lineage:
            return Outcome.GAP
        if delta.version <= self.table.version:
            return Outcome.DUPLICATE
        if delta.prev_version != self.table.version:
            return Outcome.GAP
        self.table.apply_delta(delta)
        return Outcome.APPLIED

    def query(self, function: str) -> list[NodeEndpoint]:
        return self.table.query(function)

    def clear(self) -> None:
        """Forgets the copy (this node stopped being a replica)."""
        self.table = RoutingTable()
        self.loaded = False
