"""``ClusterState``: what this node knows of the cluster. Owned by the ClusterManager task only.

Members are keyed by ``(name, epoch)``, one run of a node, so a crash and restart under the
same name never mixes the old run's routes with the new run's. The methods are synchronous
and do no I/O: the actor calls them one message at a time, which is what makes them safe
without locks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tierfaas.config import Address
from tierfaas.membership.base import (
    JoinStatus,
    MemberDown,
    MemberInfo,
    MembershipEvent,
    MemberSuspect,
    MemberUp,
    MemberUpdated,
    NameConflictSelf,
    Resync,
)
from tierfaas.topology import ReplicaPolicy, Role, Topology, compute_topology

DEPARTED_KEPT = 32


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """Where a run of a node serves: its HTTP and gRPC addresses (None if not published)."""

    name: str
    epoch: int
    http: Address | None
    rpc: Address | None


@dataclass(frozen=True, slots=True)
class RoleChange:
    """This node's role changed (None: not part of a cluster). ``reason`` is for humans."""

    old: Role | None
    new: Role | None
    reason: str
    topology: Topology


@dataclass
class ClusterState:
    self_name: str
    replicas: ReplicaPolicy = "sqrt"
    joined: bool = False
    join_reason: str = "not started"
    members: dict[tuple[str, int], MemberInfo] = field(default_factory=dict)
    topology: Topology = field(default_factory=Topology)
    role: Role | None = None
    departed: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DEPARTED_KEPT))
    """The last runs that left or died, newest last, for operators (``/v1/cluster``)."""

    # -- membership --------------------------------------------------------------------------

    def apply(self, event: MembershipEvent) -> str | None:
        """Applies a membership event; returns a reason if the topology may have changed."""
        old = self.topology
        match event:
            case MemberUp(member=m) | MemberSuspect(member=m) | MemberUpdated(member=m):
                new_run = self._put(m)
                if isinstance(event, MemberUp):
                    demoted = " (demoted: it was declared dead)" if m.demoted_since else ""
                    return f"{m.name} {'joined' if new_run else 'is alive'}{demoted}"
                return f"{m.name} {'suspect' if isinstance(event, MemberSuspect) else 'updated'}"
            case MemberDown(member=m, reason=why):
                role = old.role_of(m.name)
                self._drop(m.name, m.epoch)
                self.departed.append(
                    {"name": m.name, "epoch": m.epoch, "reason": why, "at": int(time.time() * 1000)}
                )
                return f"{role or 'member'} {m.name} {why}"
            case Resync(members=ms):
                self.resync(ms)
                return "membership resync"
            case JoinStatus(joined=joined, reason=reason):
                self.joined, self.join_reason = joined, reason
                return "joined the cluster" if joined else f"not joined: {reason}"
            case NameConflictSelf():
                return None
        return None

    def resync(self, members: Iterable[MemberInfo]) -> None:
        fresh = {m.key: m for m in members if m.state.live}
        for key in list(self.members):
            if key not in fresh:
                self._drop(*key)
        for m in fresh.values():
            self._put(m)

    def resync_local(self, local: MemberInfo) -> None:
        """Stores this node's own record, which membership events never carry."""
        if local.epoch:
            self._put(local)

    def _put(self, m: MemberInfo) -> bool:
        """Stores a run; returns True if it was not known. Older runs of the name go."""
        for key in [k for k in self.members if k[0] == m.name and k[1] < m.epoch]:
            self._drop(*key)
        if not m.state.live:
            self._drop(m.name, m.epoch)
            return False
        new = m.key not in self.members
        self.members[m.key] = m
        return new

    def _drop(self, name: str, epoch: int) -> None:
        self.members.pop((name, epoch), None)

    def recompute(self) -> tuple[Role | None, Role | None]:
        """Recomputes the topology; returns (old role, new role) of this node. A node that has
        not joined a cluster has no role: it must not act as a cluster of one."""
        old = self.role
        self.topology = compute_topology(self.members.values(), self.replicas)
        self.role = self.topology.role_of(self.self_name) if self.joined else None
        return old, self.role

    # -- views -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """``{"self", "master", "joined", "join_reason", "members": [...]}`` in rank order."""
        topo = self.topology
        rows = []
        by_name = {m.name: m for m in self.members.values()}
        for name in topo.members:
            m = by_name[name]
            rows.append(
                {
                    "name": name,
                    "role": topo.role_of(name),
                    "replica": topo.replica_of.get(name),
                    "http": str(m.http) if m.http else None,
                    "rpc": str(m.rpc) if m.rpc else None,
                    "version": m.version,
                    "state": m.state.value,
                    "epoch": m.epoch,
                }
            )
        return {
            "self": self.self_name,
            "master": topo.master if self.joined else None,
            "joined": self.joined,
            "join_reason": self.join_reason,
            "members": rows,
            "departed": list(self.departed),
        }
