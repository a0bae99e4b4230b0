"""Whom a node asks where a function is warm: pure, from one topology and one member view.

A worker asks its assigned replica first (replicas share the workers by rendezvous hashing),
and the master when that answer is empty (the master has heard a registration before any
replica). A target this node's gossip suspects is skipped, not tried: a suspect may be frozen
or cut off, and a query sent to it waits out its whole timeout before anything else is asked.
The worker then asks the next replica in its own rendezvous order that is alive, so the
workers of a suspect replica spread over the others instead of all landing on the master; the
master stays the last resort. A suspect master is skipped too: with nobody alive to ask, the
answer is "nowhere" and the caller runs the function itself.
"""

from __future__ import annotations

from tierfaas.cluster.state import MemberView
from tierfaas.membership.base import MemberState
from tierfaas.topology import Role, Topology, hrw_weight


def lookup_targets(
    me: str, role: Role | None, topology: Topology, view: MemberView
) -> tuple[str, ...]:
    """The nodes ``me`` asks, in order: at most one replica (a worker's only), then the
    master; each alive (not suspect) in ``view`` and not ``me``. Empty when nobody is."""

    def alive(name: str | None) -> bool:
        member = view.get(name)
        return name != me and member is not None and member.state is MemberState.ALIVE

    targets: list[str] = []
    if role == "worker":
        replica = topology.replica_of.get(me)
        if not alive(replica):  # rare: rank the others only then (a hash per replica)
            ranked = sorted(topology.replicas, key=lambda r: (hrw_weight(me, r), r), reverse=True)
            replica = next((r for r in ranked if alive(r)), None)
        if replica is not None:
            targets.append(replica)
    if role != "master" and alive(topology.master) and topology.master not in targets:
        assert topology.master is not None
        targets.append(topology.master)
    return tuple(targets)
