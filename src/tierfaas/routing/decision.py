"""The router's decision, as a pure function: run here, forward to a warm node, or start here.

Rules, in order (SPEC section 4):
1. This node has a warm instance with a free slot, or one due to free within
   ``QUEUE_HERE_MAX_S`` (from the function's recent call time and the calls queued ahead):
   run here. No network hop beats any; and a forward costs more than waiting out a 1 ms
   call (0.5 ms idle, 2.5-3 ms on busy cores, docs/benchmarks.md).
2. The request has used its hops (``hops >= hop_limit``): run here, warm or cold. A forwarded
   request is never forwarded again by default (hop limit 1), so A -> B -> A cannot happen.
3. A candidate that is warm, not this node, not on the request's path and not already tried
   this time: forward to it; among several, the less loaded of two picked at random (the
   "power of two choices", which spreads load almost as well as the least loaded of all
   without every sender herding onto the same node).
4. Warm nowhere (as far as this node knows) and not here either: forward to the function's
   *home*, a node picked by rendezvous hashing over the live nodes, which may start it. Every
   node picks the same home, so a burst of first calls arriving round-robin on every node
   starts one instance on one node, instead of one on each node before the routing table has
   heard of any (the table needs a batch window to spread).
   Before that, with the cluster as one cache (``--cluster-cache``): when a start here would
   evict another function's idle instance and the candidates came from the route cache (not a
   lookup made for this call), ``Refresh``: ask the table again first. A cached "warm
   nowhere" lives 50 ms and a dropped route empties an entry; the function may have warmed up
   on another node since, and a lookup (~75 µs) is cheaper than an eviction and a cold start.
5. Nothing to forward to (or the home refused: busy): run here. If this node has warm
   instances (all busy) the call queues for one; otherwise it is a cold start, which adds
   capacity, and the node registers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node where the function is warm, and the load it last reported (0..1, None: unknown)."""

    node: str
    load: float | None = None


# A slot due to free sooner than this is worth waiting for rather than forwarding.
QUEUE_HERE_MAX_S = 0.002


@dataclass(frozen=True, slots=True)
class LocalState:
    """This node's instances of the function, and when the next slot is due to free
    (seconds from now; inf when unknown)."""

    warm_instances: int
    free_slots: int
    slot_due_s: float = math.inf
    start_evicts: bool = False
    """A start here would evict another function's idle instance (False with the cluster
    cache off: then it never matters)."""

    @property
    def runs_here_now(self) -> bool:
        """Rule 1: a free slot, or one due soon enough to wait for."""
        return self.free_slots > 0 or (
            self.warm_instances > 0 and self.slot_due_s <= QUEUE_HERE_MAX_S
        )


Route = Literal["local-warm", "forwarded-warm", "local-cold"]


@dataclass(frozen=True, slots=True)
class RunHere:
    cold: bool

    @property
    def route(self) -> Route:
        return "local-cold" if self.cold else "local-warm"


@dataclass(frozen=True, slots=True)
class Forward:
    node: str
    start: bool = False  # to the function's home, which may start an instance


@dataclass(frozen=True, slots=True)
class Refresh:
    """Ask the table where the function is warm (not the route cache), then decide again."""


Decision = RunHere | Forward | Refresh

# One generator for the two-choices picks: seeding a new one per call reads os.urandom, about
# 2 % of a busy node's CPU.
_RNG = random.Random()


def decide(
    local: LocalState,
    candidates: Sequence[Candidate],
    *,
    self_name: str,
    hops: int,
    hop_limit: int,
    path: Collection[str] = (),
    tried: Collection[str] = (),
    rng: random.Random | None = None,
    home: str | None = None,
    fresh: bool = True,
) -> Decision:
    """Where this request runs. Pure: the same inputs (and ``rng`` state) give the same answer.
    ``fresh``: the candidates come from a lookup made for this call (not the route cache)."""
    if local.runs_here_now:
        return RunHere(cold=False)
    if hops < hop_limit:
        eligible = [
            c
            for c in candidates
            if c.node != self_name and c.node not in path and c.node not in tried
        ]
        if eligible:
            return Forward(_two_choices(eligible, rng or _RNG).node)
        if local.start_evicts and local.warm_instances == 0 and not fresh:
            return Refresh()
        cold_everywhere = not candidates and local.warm_instances == 0
        if cold_everywhere and home not in (None, self_name, *path, *tried):
            assert home is not None
            return Forward(home, start=True)
    return RunHere(cold=local.warm_instances == 0)


def _two_choices(eligible: Sequence[Candidate], rng: random.Random) -> Candidate:
    if len(eligible) == 1:
        return eligible[0]
    a, b = rng.sample(list(eligible), 2)
    # Unknown load counts as half loaded: try it, but prefer a node known to be idle.
    load_a = 0.5 if a.load is None else a.load
    load_b = 0.5 if b.load is None else b.load
    return a if load_a <= load_b else b
