"""Where a replica may resume after a failover: forks between lineages, and the decision.

Theory of operation. A *position* (lineage, version) names exactly one content of the
routing table: a lineage has one writer (the master that drew its random name), its version
grows by one per delta, and a replica's copy only ever holds a state that writer held
(``ReplicaCopy``). A promoted replica keeps its copy and draws a new lineage for its own
writes; it records a ``Fork``: "the table at (parent, version) *is* the table at (lineage,
version)". The fork and the deltas around it sit in the new master's delta log, in order.

So a replica may resume from the log exactly when its position is one the log passes
through: the entries after it (old-lineage deltas it missed, the fork, the new master's
deltas) take its copy, one checked step at a time, to the master's table. Any other
position gets a snapshot. In particular a replica *ahead* of the fork point (it applied a
delta of the old master that the promoted replica never received) is on no position of the
new history: its copy holds changes the new master's table does not, so it must not resume,
and does not: a version number alone would match, the (lineage, version) pair does not.

The decision is ``resume_from``: pure, over the log as a sequence, tested without a network.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierfaas.control.table import Delta

Position = tuple[str, int]
"""(lineage, version): one content of the table."""


@dataclass(frozen=True, slots=True)
class Fork:
    """The table of ``parent`` at ``version`` continues as ``lineage`` (same content, same
    version): a promoted replica's copy, now a new master's table."""

    parent: str
    lineage: str
    version: int

    @property
    def start(self) -> Position:
        return (self.parent, self.version)

    @property
    def end(self) -> Position:
        return (self.lineage, self.version)


def start_of(entry: Delta | Fork) -> Position:
    """The position an entry of the log applies to."""
    if isinstance(entry, Fork):
        return entry.start
    return (entry.lineage, entry.prev_version)


def end_of(entry: Delta | Fork) -> Position:
    """The position an entry of the log leads to."""
    if isinstance(entry, Fork):
        return entry.end
    return (entry.lineage, entry.version)


def resume_from(
    log: Sequence[Delta | Fork], head: Position, held: Position
) -> list[Delta | Fork] | None:
    """The entries of ``log`` that take a copy at ``held`` to the table at ``head``, oldest
    first: ``[]`` when it is there already, ``None`` when ``held`` is no position the log
    passes through (another history, a version ahead of a fork or of the head, or older
    than the log reaches): the copy then needs a snapshot.

    ``log`` is the table's delta log (``RoutingTable``), contiguous and ending at ``head``;
    a log that is not (a bug) answers ``None`` too: a snapshot is always safe."""
    if held == head:
        return []
    if not held[0]:
        return None  # a copy of no lineage holds nothing that can be continued
    entries = list(log)  # a deque does not slice
    for index, entry in enumerate(entries):
        if start_of(entry) == held:
            tail = entries[index:]
            return tail if _leads(tail, head) else None
    return None


def _leads(entries: Sequence[Delta | Fork], head: Position) -> bool:
    """Whether ``entries`` follow each other without a hole and end at ``head``."""
    for before, after in itertools.pairwise(entries):
        if end_of(before) != start_of(after):
            return False
    return bool(entries) and end_of(entries[-1]) == head
