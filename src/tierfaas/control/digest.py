"""Anti-entropy: the decision that makes a node's warm set and the master's table agree again.

Theory of operation. The table is soft state fed by deltas (Register/Unregister), and a delta
can be lost in ways the sender never hears of: the master drops a node's routes when gossip
declares it dead, and the node, back with the same run (a long pause, a partition), gets no
event at all; a write reaches a master that loses its role before its batch is flushed; a
write is rejected because the master does not yet see the node alive. So every node checks,
on a timer, what the table holds for its run (name, epoch): the answer is a ``Digest`` (count
and an order-free 64-bit hash of the function names), which the node compares with the digest
of its own warm set, asked when its write queue is idle (nothing pending, nothing in flight).

Two tiers, as for queries: a worker asks its replica, whose copy answers from memory, so the
master is not asked by every node every period. A copy lags the master by up to a batch
window and holds none of its pending writes, so a copy that differs is only a hint
(``Verdict.CONFIRM``): the node asks the master at once, whose answer counts its pending batch
and is final. A master that differs means a loss: the node re-announces its whole warm set
(``Verdict.ANNOUNCE``). Whoever answers that it does not hold the run alive yet
(``Verdict.WAIT``) would reject an announce: the node asks the master again after ``retry_s``
rather than a full period, so it is repaired as soon as gossip has it back.

Why a digest and not periodic announces: a check costs one small unary call whatever the warm
set's size (measured in benchmarks/control_plane.py), answered from an in-memory index in
microseconds; a full announce would cost the whole set every period.

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
class RunView:
    """An answer to a check: whether the answering node holds the run alive, the digest of
    what its table holds for that run (a master's pending batch included), the table position
    it answered from, and whether that table is a replica's ``copy``."""

    alive: bool
    digest: Digest
    version: int = 0
    lineage: str = ""
    copy: bool = False


class Verdict(enum.Enum):
    AGREE = "agree"  # nothing to do until the next period
    CONFIRM = "confirm"  # a replica's copy differs: ask the master now
    ANNOUNCE = "announce"  # the master lost something: send the whole warm set
    WAIT = "wait"  # the run is not alive in the answerer's view yet: ask the master soon


def verdict(local: Digest, view: RunView) -> Verdict:
    """What a node whose write queue is idle does about an answer, ``local`` being the digest
    of its warm set when it asked."""
    if not view.alive:
        return Verdict.WAIT
    if view.digest == local:
        return Verdict.AGREE
    return Verdict.CONFIRM if view.copy else Verdict.ANNOUNCE


class CheckTimer:
    """When the next check is due, and whom it asks. The first is due at once (a node that
    starts, or resumes after a pause, asks straight away); then every ``period_s``, at once
    after a ``CONFIRM``, ``retry_s`` after a ``hurry()`` (a write the master rejected), and
    after a ``WAIT`` or a failed check ``retry_s``, doubling while they last, up to
    ``period_s``. ``ask_master`` is set from a ``CONFIRM``, a ``WAIT`` or a
    ``hurry()`` until the master has given a final answer (``AGREE`` or ``ANNOUNCE``)."""

    def __init__(
        self, clock: Clock, *, period_s: float = DIGEST_PERIOD_S, retry_s: float = DIGEST_RETRY_S
    ) -> None:
        if period_s <= 0 or retry_s <= 0:
            raise ValueError("period_s and retry_s must be above 0")
        self._clock = clock
        self.period_s = period_s
        self.retry_s = retry_s
        self.next_at = clock()
        self.ask_master = False
        self._waits = 0  # WAITs and failures in a row

    def delay(self) -> float:
        """Seconds until the next check is due (0 if it is)."""
        return max(0.0, self.next_at - self._clock())

    def due(self) -> bool:
        return self._clock() >= self.next_at

    def checked(self, outcome: Verdict | None) -> None:
        """A check ended with ``outcome`` (None: nobody could be asked)."""
        if outcome is Verdict.CONFIRM:
            delay = 0.0
        elif outcome is Verdict.WAIT or outcome is None:
            # Doubling from retry_s up to the period: quick while gossip brings the node back
            # (or a cut heals), no more than a check a period if it stays that way.
            self._waits += 1
            delay = min(self.period_s, self.retry_s * 2 ** min(self._waits - 1, 16))
        else:
            delay = self.period_s
        if outcome is not Verdict.WAIT and outcome is not None:
            self._waits = 0
        self.next_at = self._clock() + delay
        if outcome in (Verdict.CONFIRM, Verdict.WAIT):
            self.ask_master = True
        elif outcome is not None:
            self.ask_master = False

    def hurry(self) -> None:
        """Ask the master within ``retry_s`` (it rejected a write: it may have lost this run)."""
        self.next_at = min(self.next_at, self._clock() + self.retry_s)
        self.ask_master = True
        self._waits = 0
