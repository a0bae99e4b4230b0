"""``ClusterState``: what this node knows of the cluster. Owned by the ClusterManager task only.

Members are keyed by ``(name, epoch)``, one run of a node, so a crash and restart under the
same name never mixes the old run's routes with the new run's. The methods are synchronous
and do no I/O: the actor calls them one message at a time, which is what makes them safe
without locks.

What others read of it the actor publishes as values that never change once made: a
``MemberView`` (the live runs, replaced whole on every membership change, so the router's hot
path reads it with no message) and a ``RunGone`` for each run that stops taking forwards.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tierfaas.config import Address
from tierfaas.membership.base import (
    JoinStatus,
    MemberDown,
    MemberInfo,
    MembershipEvent,
    MemberState,
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
class MemberView:
    """The live runs (alive or suspect) of this node's membership, the newest run of each
    name, as the ClusterManager last published them. Never modified: a change publishes a new
    view, so a reader holds a consistent one for as long as it keeps the reference."""

    runs: Mapping[str, MemberInfo] = field(default_factory=dict)

    def get(self, name: str | None) -> MemberInfo | None:
        return self.runs.get(name) if name is not None else None

    def endpoint(self, name: str) -> NodeEndpoint | None:
        """Where the live run of ``name`` serves; None if no run of it is live."""
        m = self.runs.get(name)
        return None if m is None else NodeEndpoint(m.name, m.epoch, m.http, m.rpc)

    def rpc_of(self, name: str | None) -> str | None:
        """The control-plane address of the live run of ``name``, if it published one."""
        m = self.get(name)
        return str(m.rpc) if m is not None and m.rpc is not None else None

    def holds(self, route: NodeEndpoint) -> bool:
        """``route`` names a live run (alive or suspect: a suspect keeps its routes)."""
        m = self.runs.get(route.name)
        return m is not None and m.epoch == route.epoch

    def routable(self, route: NodeEndpoint) -> bool:
        """``route`` names a live run that is not suspect: a call may be forwarded to it."""
        m = self.runs.get(route.name)
        return m is not None and m.epoch == route.epoch and m.state is MemberState.ALIVE


@dataclass(frozen=True, slots=True)
class RunGone:
    """A run stopped taking forwards: ``suspect`` (it keeps its rank and its routes, and comes
    back if it answers again) or ``dead``/``left`` (its routes go)."""

    name: str
    epoch: int
    reason: Literal["suspect", "dead", "left"]

    @property
    def down(self) -> bool:
        """Dead or left, not merely suspect."""
        return self.reason != "suspect"

    @staticmethod
    def of(event: MembershipEvent) -> RunGone | None:
        """The run ``event`` takes out of forwarding, if any."""
        match event:
            case MemberSuspect(member=m):
                return RunGone(m.name, m.epoch, "suspect")
            case MemberDown(member=m, reason=why):
                return RunGone(m.name, m.epoch, why)
        return None


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

    def view(self) -> MemberView:
        """The live runs now, the newest of each name (see ``MemberView``)."""
        runs: dict[str, MemberInfo] = {}
        for m in self.members.values():
            current = runs.get(m.name)
            if current is None or current.epoch < m.epoch:
                runs[m.name] = m
        return MemberView(runs)

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
                    "cohort": None if m.cohort_pending else m.cohort,
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
