"""Anti-entropy: the decision that makes a node's warm set and the master's table agree again.

Theory of operation. The table is soft state fed by deltas (Register/Unregister), and a delta
can be lost in ways the sender never hears of: the master drops a node's routes when gossip
declares it dead, and the node, back with the same run (a long pause, a partition), gets no
event at all; a write reaches a master that loses its role before its batch is flushed; a
write is rejected because the master does not yet see the node alive. So every node checks,
on a timer, that the master holds what it has warm: it sends its run (name, epoch) and the
master answers with a ``Digest`` (count and an order-free 64-bit hash of the function names)
of what it holds for that run, its pending batch included. When the node's write queue is
idle (nothing pending, nothing in flight) both describe the same moment, so any difference is
a loss, and the node re-announces its whole warm set (``Verdict.ANNOUNCE``). When the master
does not hold the run alive yet (``Verdict.WAIT``), an announce would be rejected: the node
asks again after ``retry_s`` rather than a full period, so it is repaired as soon as gossip
has it back.

Why a digest and not periodic announces: a check costs one small unary call whatever the
warm set's size (measured in benchmarks/control_plane.py), and the master answers it from
its in-memory index in microseconds; a full announce would cost the whole set every period.

Everything here is pure: ``digest`` and ``verdict`` are functions of data, and ``CheckTimer``
reads an injected clock and schedules nothing itself (the write queue sleeps until it is due).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from tierfaas.clock import Clock
from tierfaas.control.constants import DIGEST_PERIOD_S, DIGEST_RETRY_S

_MASK = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Digest:
    """A set of function names, compressed: how many, and the sum of their hashes mod 2**64
    (order-free, so either side computes it from an unordered set)."""

    count: int
    hash: int


@functools.lru_cache(maxsize=65_536)
def _name_hash(function: str) -> int:
    return int.from_bytes(hashlib.blake2b(function.encode(), digest_size=8).digest(), "big")


def digest(functions: Iterable[str]) -> Digest:
    """The digest of a set of function names (each counted once)."""
    names = set(functions)
    return Digest(len(names), sum(_name_hash(f) for f in names) & _MASK)


@dataclass(frozen=True, slots=True)
class MasterView:
    """The master's answer to a check: whether it holds the node's run alive, the digest of
    what its table (and pending batch) holds for that run, and its table position."""

    alive: bool
    digest: Digest
    version: int = 0
    lineage: str = ""


class Verdict(enum.Enum):
    AGREE = "agree"  # nothing to do until the next period
    ANNOUNCE = "announce"  # the master lost something: send the whole warm set
    WAIT = "wait"  # the master does not hold this run alive yet: ask again soon


def verdict(local: Digest, master: MasterView) -> Verdict:
    """What a node whose write queue is idle does about the master's answer, ``local`` being
    the digest of its warm set when it asked."""
    if not master.alive:
        return Verdict.WAIT
    return Verdict.AGREE if master.digest == local else Verdict.ANNOUNCE


class CheckTimer:
    """When the next check is due. The first is due at once (a node that starts, or resumes
    after a pause, asks straight away); then every ``period_s``, or ``retry_s`` after a
    ``WAIT`` or a ``hurry()`` (a write the master rejected)."""

    def __init__(
        self, clock: Clock, *, period_s: float = DIGEST_PERIOD_S, retry_s: float = DIGEST_RETRY_S
    ) -> None:
        if period_s <= 0 or retry_s <= 0:
            raise ValueError("period_s and retry_s must be above 0")
        self._clock = clock
        self.period_s = period_s
        self.retry_s = retry_s
        self.next_at = clock()

    def delay(self) -> float:
        """Seconds until the next check is due (0 if it is)."""
        return max(0.0, self.next_at - self._clock())

    def due(self) -> bool:
        return self._clock() >= self.next_at

    def checked(self, outcome: Verdict | None) -> None:
        """A check ended with ``outcome`` (None: the master could not be asked)."""
        soon = outcome is Verdict.WAIT
        self.next_at = self._clock() + (self.retry_s if soon else self.period_s)

    def hurry(self) -> None:
        """Check within ``retry_s`` (the master rejected a write: it may have lost this run)."""
        self.next_at = min(self.next_at, self._clock() + self.retry_s)
