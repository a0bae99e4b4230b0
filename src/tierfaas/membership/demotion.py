"""Demotion of a run that was declared dead and came back (a paused or frozen process).

Kinship gives a resumed run its *same* epoch and tells the run itself nothing, so if ranks
came from the epoch alone, an old master that was SIGSTOPped, replaced, then SIGCONTed would
take its role back, and the cluster would flap twice. Instead:

1. Every observer that saw ``(name, epoch)`` dead and then sees it alive demotes it at once,
   provisionally, ranking it after every run with a settled cohort (its cohort counts as
   pending), and tells it "you were declared dead".
2. The run, on that word (if it knows it was paused) or when it measures a pause long enough
   to be certainly dead, publishes a new cohort, one more than the highest among the live
   runs it sees (``tierfaas.topology.next_cohort``), with ``since=<ms>`` for releases before
   cohorts. Every node, including ones that join later, then ranks it as if it had joined
   then, with no clock compared: views converge in one gossip round.
3. A provisional demotion that is not confirmed within ``grace_s`` is dropped. That is the
   partition case: both sides saw each other dead, nobody paused, so nobody confirms, and the
   older master wins back its role once the partition heals, as the spec requires.

``Resurrections`` is the observer's bookkeeping; it is pure and takes its clocks.
"""

from __future__ import annotations

from collections.abc import Callable

from tierfaas.clock import Clock

NOTICE_PREFIX = b"tierfaas/declared-dead/"
"""User message to a revived run: the prefix, then its epoch in ASCII."""


def notice_for(epoch: int) -> bytes:
    return NOTICE_PREFIX + str(epoch).encode()


def parse_notice(data: bytes) -> int | None:
    """The epoch a "you were declared dead" notice is about, or None if it is not one."""
    if not data.startswith(NOTICE_PREFIX) or len(data) > len(NOTICE_PREFIX) + 20:
        return None
    rest = data[len(NOTICE_PREFIX) :]
    return int(rest) if rest.isdigit() else None


class Resurrections:
    """Which runs this observer saw dead, and which of those it holds as demoted."""

    def __init__(self, clock: Clock, wall_ms: Callable[[], int], grace_s: float) -> None:
        self._clock = clock
        self._wall_ms = wall_ms
        self._grace_s = grace_s
        self._dead: set[tuple[str, int]] = set()
        # run -> (provisional since in ms, deadline in clock seconds)
        self._provisional: dict[tuple[str, int], tuple[int, float]] = {}

    def saw_dead(self, key: tuple[str, int]) -> None:
        self._dead.add(key)

    def forget(self, key: tuple[str, int]) -> None:
        """The run left or was replaced by a newer epoch: it cannot come back."""
        self._dead.discard(key)
        self._provisional.pop(key, None)

    def revived(self, key: tuple[str, int]) -> bool:
        """Called when a run is seen alive. True if it had been dead: it is now demoted."""
        name, epoch = key
        # A newer run of the name replaces older ones for good: forget their deaths.
        self._dead -= {k for k in self._dead if k[0] == name and k[1] < epoch}
        if key not in self._dead:
            return False
        self._dead.discard(key)
        self._provisional[key] = (self._wall_ms(), self._clock() + self._grace_s)
        return True

    def demoted_since(self, key: tuple[str, int], meta_since: int | None) -> int | None:
        """The run's demotion time: its own ``since`` metadata wins over our provisional one."""
        if meta_since is not None:
            self._provisional.pop(key, None)
            return meta_since
        held = self._provisional.get(key)
        return held[0] if held is not None else None

    def expire(self) -> list[tuple[str, int]]:
        """Drops provisional demotions nobody confirmed in time; returns their runs."""
        now = self._clock()
        gone = [k for k, (_, deadline) in self._provisional.items() if deadline <= now]
        for key in gone:
            del self._provisional[key]
        return gone

    def unconfirmed(self, key: tuple[str, int]) -> bool:
        return key in self._provisional
