"""``ControlPlane``: one node's part of the warm routing table, following its role.

It composes the pieces of ``tierfaas.control`` and keeps them in step with the topology the
ClusterManager publishes (role, master, this node's replica):

- every node serves ``Control`` over gRPC and the query lane, and runs a ``WriteQueue`` that
  turns the runtime's FunctionWarm/FunctionCold events into batched Register/Unregister calls
  to the master, and re-``Announce``s the node's whole warm set whenever the master changes;
- anti-entropy runs continuously (``digest.py``): whenever its writes are idle, every node
  checks each ``DIGEST_PERIOD_S`` the digest of what the table holds for its run (a worker
  with its replica's copy, a difference confirmed with the master) and re-announces its warm
  set when the master's differs, so the table agrees with every node within about 1.2 s of
  the node being alive in the master's view, whatever was lost (a node declared dead and
  back with the same run, a batch lost with a master that stepped down, a rejected write);
- the master holds the table in a ``TableHub`` (batch window, Subscribe streams) and drops a
  node's entries as soon as gossip says it is dead or left;
- a replica feeds its ``ReplicaCopy`` from the master's stream (``Replicator``);
- the master also places every function's ``min_instances`` (``placement.py``): each
  ``PLACEMENT_PERIOD_S`` it plans over its table and the live members and sends each placed
  node its pins (``Prewarm``, a lease of ``PIN_LEASE_S`` it renews every round); a node takes
  pins only from the master it knows (``take_pins``);
- ``lookup(function)`` is the router's source of candidates: the node's own table on a master
  or replica, else its replica over the query lane (gRPC ``Query`` as the fallback), or the
  next live replica while its own is suspect (``targets.py``: a suspect is skipped, never
  waited for; a node silent for ``LOOKUP_TIMEOUT_S`` is passed over). An empty
  answer is checked with the master, which has heard a registration before any replica: the
  node is about to start the function cold, and in a burst of first calls another node may
  have just started it (one extra query per miss; hits never reach the master). It names
  no run that this node's gossip suspects: a suspect keeps its rank (it may only be slow), but
  a call sent to it may hang in a partition, and running the call here instead costs at most
  a cold start (the router, watching the same actor, drops its cached routes to it at once).

The table itself lives here, beside the actor rather than inside it: it changes at batch
rate from gRPC handlers and streams, and the actor stays the single owner of membership and
roles. Who is alive, and where, comes from the actor alone: its published ``MemberView``
(read with no message on every answer) and its ``RunGone`` notices (a dead or departed run's
entries leave the table at once). Answers never name a run that this view does not hold
alive, and never a suspect one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry

from tierfaas.clock import Clock, monotonic
from tierfaas.cluster.manager import ClusterManager
from tierfaas.cluster.state import NodeEndpoint, RoleChange, RunGone
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import NotMasterError
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import LOOKUP_TIMEOUT_S, STANDBY_SNAPSHOT_DELAY_S
from tierfaas.control.entropy_metrics import AntiEntropyMetrics
from tierfaas.control.handover import (
    HandoverError,
    Received,
    handover_refusal,
    snapshot_off_loop,
    term_refusal,
)
from tierfaas.control.hub import TableHub
from tierfaas.control.lane import QueryLaneClient
from tierfaas.control.placement import PIN_LEASE_S, PLACEMENT_PERIOD_S, Plan, Wanted, by_node, place
from tierfaas.control.replica_copy import ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.server import ControlServer
from tierfaas.control.targets import lookup_targets
from tierfaas.control.transport import ChannelClosed, Channels, NotMaster
from tierfaas.control.write_queue import WriteQueue
from tierfaas.deploy.term import SeenTerms, Term
from tierfaas.runtime.events import RuntimeEvent
from tierfaas.supervision import Supervisor
from tierfaas.topology import Role, hrw_weight

log = logging.getLogger("tierfaas.control")

# Info's failures that mean the node answers nothing (frozen, cut off, gone), not "no lane".
_SILENT = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})


class ControlPlane:
    """Follows ``cluster`` (its roles, its view of the members) once started. Takes the
    runtime's events through ``on_runtime_event``; ``on_generation`` (if given) lets this node
    take the table over in a rollout. Its anti-entropy counters go to ``registry`` (the
    node's /metrics; a private one if None)."""

    def __init__(
        self,
        cluster: ClusterManager,
        *,
        name: str,
        rpc: Address,
        lane: Address | None,
        key: bytes | None,
        window_s: float = 0.1,
        clock: Clock = monotonic,
        on_generation: Callable[[int], Awaitable[None]] | None = None,
        supervisor: Supervisor | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.cluster = cluster
        self.supervisor = supervisor or Supervisor()  # restarts the tasks below on a crash
        self.name = name
        self.key = key
        self.backend = TableBackend(self._resolve, clock, master=False, window_s=window_s)
        self.server = ControlServer(self.backend, bind=rpc, key=key, node=name, lane=lane)
        self.channels = Channels(key, live=self._live_rpcs)  # closes those of gone peers
        self.writes = WriteQueue(
            name,
            0,
            master=self._master_rpc,
            replica=self._checked_with,
            channels=self.channels,
            clock=clock,
            supervisor=self.supervisor,
            metrics=AntiEntropyMetrics(registry),
        )
        self.role: Role | None = None
        self.master: str | None = None
        self.my_replica: str | None = None
        self.replicator: Replicator | None = None
        self._delayed = False  # the replicator waits before subscribing (a standby's)
        self.lane_clients: dict[str, QueryLaneClient] = {}  # by the target's RPC address
        self._hub_task: asyncio.Task[None] | None = None
        self.on_generation = on_generation
        # Fencing the handovers this node takes (issue 17.3): the newest term it has seen, and
        # the registry's newest (set by the node when it follows a registry: a bounded read
        # off the loop that raises when the registry does not answer).
        self.terms = SeenTerms()
        self.registry_term: Callable[[], Awaitable[Term | None]] | None = None
        if on_generation is not None:
            self.server.on_handover = self.take_handover
        # min_instances (issue 19.5): what the release asks for, and this node's runtime's
        # ``pin`` (both set by the node); the master's last plan, and its placing task.
        self.wanted: dict[str, Wanted] = {}
        self.release_version: str | None = None  # pins go to members of this release only
        self.pin: Callable[[dict[str, int], float], dict[str, int]] | None = None
        self.placement: Plan = {}
        self._placer: asyncio.Task[None] | None = None
        self.server.on_prewarm = self.take_pins

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Serves the control API and follows the cluster (call after its membership started:
        the writes carry this run's epoch)."""
        await self.server.start()
        self.writes.epoch = self.cluster.local.epoch
        self.writes.start()
        self.cluster.watch_runs(self._on_run_gone)
        self.cluster.subscribe_roles(self.on_role_change)

    async def stop(self) -> None:
        self._stop_placing()
        if self._hub_task is not None:
            self._hub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._hub_task
        await self.writes.stop()
        if self.replicator is not None:
            await self.replicator.stop()
        for client in self.lane_clients.values():
            await client.close()
        self.lane_clients.clear()
        self.backend.demote(None)
        await self.server.stop()
        await self.channels.close()

    # -- the runtime: what this node has warm ------------------------------------------------

    @property
    def warm(self) -> set[str]:
        """This node's warm set: FunctionWarm seen, and no FunctionCold since (the write
        queue keeps it: it announces it and checks it against the master's digest)."""
        return self.writes.warm_set

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        """The runtime's listener: FunctionWarm/FunctionCold become writes to the master."""
        self.writes.on_event(event)

    # -- membership: who is alive, at which address (the actor's view) ------------------------

    def _on_run_gone(self, gone: RunGone) -> None:
        """The actor's run watcher: a dead or departed run's entries leave the table now (a
        suspect keeps them: answers skip it until it is alive again)."""
        hub = self.backend.hub
        if gone.down and hub is not None:
            hub.batcher.drop_node(gone.name, gone.epoch)
            hub.wrote()

    def _resolve(self, name: str) -> NodeEndpoint | None:
        return self.cluster.view.endpoint(name)

    def _rpc_of(self, name: str | None) -> str | None:
        return self.cluster.view.rpc_of(name)

    def _master_rpc(self) -> str | None:
        return self._rpc_of(self.master)

    def _checked_with(self) -> str | None:
        """Where a worker's anti-entropy checks go first: the replica its lookups go to
        (``lookup_targets``: its own, or the next live one while its own is suspect, so a
        check never waits out a suspect's timeout); the master and the replicas, and a
        worker with no live replica, ask the master."""
        if self.role != "worker":
            return None
        topology = self.cluster.current_topology
        targets = lookup_targets(self.name, self.role, topology, self.cluster.view)
        first = targets[0] if targets else None
        return self._rpc_of(first) if first is not None and first != topology.master else None

    # -- roles -------------------------------------------------------------------------------

    async def on_role_change(self, change: RoleChange) -> None:
        """The ClusterManager's subscriber: follow this node's role, the master and the
        replica assigned to this node."""
        topo = change.topology
        master_changed = topo.master != self.master
        self.master = topo.master
        new = change.new
        # A replica keeps a copy of the table; so does the standby (the next worker to become
        # a replica), which then needs no snapshot (``Topology.standby``).
        copying = new == "replica" or (new == "worker" and topo.standby == self.name)
        if not copying and self.replicator is not None:
            await self.replicator.stop()
            self.replicator = None
            if new != "master":
                self.backend.copy.clear()
        if new == "master" and not self.backend.is_master():
            hub = self.backend.promote()
            self._drop_dead_runs(hub)
            self._hub_task = self.supervisor.spawn("table-hub", hub.run)
            log.info("this node now owns the routing table (version %d)", hub.table.version)
            if self.wanted and self._placer is None:
                self._placer = self.supervisor.spawn("placement", self._place_loop)
        elif new != "master" and self.backend.is_master():
            self._stop_placing()
            if self._hub_task is not None:
                self._hub_task.cancel()
                self._hub_task = None
            self.backend.demote(self._master_rpc())
        else:
            self.backend.master_rpc = self._master_rpc()
        if copying:
            await self._follow_table(new, master_changed)
        replica = topo.replica_of.get(self.name)
        if replica != self.my_replica or master_changed:
            self.my_replica = replica
            for client in self.lane_clients.values():
                await client.close()
            self.lane_clients.clear()
        self.role = new
        if master_changed and self.master is not None:
            # Anti-entropy: the new master learns this node's whole warm set.
            self.writes.announce(frozenset(self.warm))

    async def _follow_table(self, role: Role | None, master_changed: bool) -> None:
        """Keeps this replica's (or the standby's) copy fed. A standby with no copy needs a
        snapshot, which nobody waits for: it subscribes ``STANDBY_SNAPSHOT_DELAY_S`` later,
        not while a new master's loop takes every node's re-announce; once it becomes a
        replica, at once. After a failover the stream to the old master is dead and its
        retries back off (up to ``REPLICATE_MAX_BACKOFF_S``): it subscribes to the new
        master at once, from the copy's position (resuming across the new master's fork)."""
        delay = (
            STANDBY_SNAPSHOT_DELAY_S if role == "worker" and not self.backend.copy.loaded else 0.0
        )
        if self.replicator is not None:
            if not master_changed and not (self._delayed and delay == 0.0):
                return
            await self.replicator.stop()
        else:
            self.replicator = Replicator(
                self.backend.copy,
                master=self._master_rpc,
                channels=self.channels,
                replica=self.name,
                supervisor=self.supervisor,
            )
        self.replicator.start(delay)
        self._delayed = delay > 0

    # -- min_instances: the master places, every node keeps its pins (issue 19.5) ------------

    def take_pins(
        self, master: str, pins: dict[str, int], lease_s: float
    ) -> tuple[dict[str, int], str]:
        """The ``Prewarm`` handler: the master's placement for this node (replaces its pins
        for ``lease_s``). Raises ``NotMasterError`` when ``master`` is not the master this
        node knows (a master that stepped down, or this node has not heard of the new one
        yet: the master's next round comes within a second)."""
        if master != self.master:
            raise NotMasterError(self._master_rpc())
        if self.pin is None:
            return {}, f"{self.name} keeps no instances"
        try:
            return self.pin(pins, lease_s), ""
        except Exception as exc:  # a function this node's release lacks (a rollout)
            return {}, str(exc)

    async def _place_loop(self) -> None:
        while True:
            await asyncio.sleep(PLACEMENT_PERIOD_S)
            await self.place_once()

    def _stop_placing(self) -> None:
        if self._placer is not None:
            self._placer.cancel()
            self._placer = None
        self.placement = {}

    async def place_once(self) -> Plan:
        """One placement round (master only): plans the pins over the table and the live,
        unsuspected members of this release, and sends each node its share; a node whose
        pins the plan dropped is sent an empty share (it unpins at once)."""
        hub = self.backend.hub
        if hub is None or not self.wanted:
            return {}
        nodes = [
            m.name
            for m in self.cluster.view.runs.values()
            if m.rpc is not None
            and self._routable(NodeEndpoint(m.name, m.epoch, m.http, m.rpc))
            and (self.release_version is None or m.version == self.release_version)
        ]
        warm = {
            function: [r.name for r in entries if self._routable(r)]
            for function, entries in hub.table.as_dict().items()
        }
        plan = place(self.wanted, nodes, warm, self.placement)
        shares = by_node(plan)
        for node in by_node(self.placement):
            if node in nodes:
                shares.setdefault(node, {})
        self.placement = plan
        await asyncio.gather(*(self._send_pins(node, pins) for node, pins in shares.items()))
        return plan

    async def _send_pins(self, node: str, pins: dict[str, int]) -> None:
        rpc = self._rpc_of(node)
        if rpc is None:
            return
        try:
            reply = await self.channels.get(rpc).prewarm(pins, PIN_LEASE_S, self.name)
        except (aio.AioRpcError, ConnectionError, NotMaster) as exc:
            log.debug("placing %s on %s failed: %s", sorted(pins), node, exc)
            return
        if reply.error:
            log.warning("%s did not take its min_instances pins: %s", node, reply.error)

    # -- rollouts: handing the table over (SPEC 6.2) ----------------------------------------

    async def take_handover(self, handed: Received) -> int:
        """The target's side: hold the handed table as this node's copy, then publish its
        generation, which makes this node the master everywhere; it then promotes the copy
        (``on_role_change``) and every node re-announces its warm set to it.

        Fenced (issue 17.3): refused with ``HandoverError`` when the sender's term is older
        than the newest this node has seen (``self.terms``, the registry's), or when this
        node or a live member already holds its generation: the sender's term is over (a
        newer master exists, or the table went to another node). A registry that does not
        answer refuses it too (the sender tries again): fail closed."""
        assert self.on_generation is not None
        snapshot, generation, sender = handed.snapshot, handed.generation, handed.sender
        seen = [self.terms.newest]
        self.terms.see(handed.term)  # a term the registry handed out, whatever comes next
        if self.registry_term is not None and handed.term is not None:
            try:
                seen.append(await self.registry_term())
            except Exception as exc:  # a stalled or damaged registry: no term to compare
                raise HandoverError(f"cannot read the registry's newest term: {exc}") from None
            self.terms.see(seen[-1])
        refusal = term_refusal(handed.term, seen) or handover_refusal(
            generation, self.cluster.view.runs.values()
        )
        if refusal is not None:
            raise HandoverError(refusal)
        if self.replicator is not None:
            # The old master's stream must not replace the table just handed over.
            await self.replicator.stop()
            self.replicator = None
        if not self.backend.is_master():
            copy = ReplicaCopy()
            # A fresh copy nobody reads yet: loading a large table does not hold the loop.
            await asyncio.to_thread(copy.apply, snapshot)
            self.backend.copy = copy
        routes = sum(len(r) for r in snapshot.routes.values())
        await self.on_generation(generation)
        log.info(
            "took the routing table (%d routes) from %s; now generation %d",
            routes,
            sender or "?",
            generation,
        )
        return routes

    async def hand_over(
        self, target: str, generation: int, term: Term | None = None
    ) -> pb.HandoverReply:
        """The master's side: send the whole table to ``target`` (a live member), which
        takes over as master of ``generation`` unless it has seen a term newer than ``term``.
        Raises ``LookupError`` for an unknown target or when this node is not master,
        ``grpc.aio.AioRpcError`` when it is unreachable."""
        hub = self.backend.hub
        rpc = self._rpc_of(target)
        if hub is None or rpc is None:
            raise LookupError(f"cannot hand over to {target}: not master, or no address")
        client = self.channels.get(rpc)
        snapshot = await snapshot_off_loop(hub.table)  # a large table: not on the loop
        return await client.handover(snapshot, generation, self.name, term=term)

    def table_size(self) -> int | None:
        """Routes in this node's table (master) or copy (replica); None otherwise."""
        if self.backend.hub is not None:
            return len(self.backend.hub.table)
        return len(self.backend.copy.table) if self.backend.copy.loaded else None

    def _drop_dead_runs(self, hub: TableHub) -> None:
        """A promoted replica's copy still names the runs that died while it was a replica
        (the old master above all: its MemberDown reached this node before it owned the
        table, and nobody else streams the drop). Drops every run this node's membership
        does not hold alive, in the first batch of the new lineage."""
        stale: dict[str, int] = {}
        for entries in hub.table.as_dict().values():
            for route in entries:
                if not self._alive(route):
                    stale[route.name] = max(stale.get(route.name, 0), route.epoch)
        for name, epoch in stale.items():
            hub.batcher.drop_node(name, epoch)
        if stale:
            log.info("dropping the routes of %d runs that are no longer alive", len(stale))
            hub.wrote()

    # -- reads -------------------------------------------------------------------------------

    def home(self, function: str) -> NodeEndpoint | None:
        """Where ``function`` is started when it is warm nowhere: rendezvous hashing over the
        live, joined nodes, the same pick on every node with the same view."""
        nodes = [m for m in self.cluster.view.runs.values() if m.http is not None]
        if self.role is None or not nodes:
            return None
        best = max(nodes, key=lambda m: (hrw_weight(function, m.name), m.name))
        return NodeEndpoint(best.name, best.epoch, best.http, best.rpc)

    def local_routes(self, function: str) -> list[NodeEndpoint]:
        """This node's own table (master or replica), live runs only."""
        routes = self.backend.query(function).routes
        return [r for r in routes if self._alive(r)]

    def warm_elsewhere(self, function: str) -> bool:
        """Whether this node's own table (master or replica; a worker has none) names a live
        run of another node for ``function``: no network, for the eviction order."""
        if self.role not in ("master", "replica"):
            return False
        return any(r.name != self.name for r in self.local_routes(function))

    def _alive(self, route: NodeEndpoint) -> bool:
        return self.cluster.view.holds(route)

    def _routable(self, route: NodeEndpoint) -> bool:
        """Alive in this node's view and not suspect: a call may be forwarded to it."""
        return self.cluster.view.routable(route)

    async def lookup(self, function: str) -> Sequence[NodeEndpoint]:
        """Where ``function`` is warm: the router's candidates (may include this node), never
        a run this node's gossip suspects. A worker asks its replica, or the next live one
        while its own is suspect (``targets.lookup_targets``), then the master; a node that
        does not answer within ``LOOKUP_TIMEOUT_S`` is passed over, so a lookup takes at most
        two of those, and none while the suspect is merely skipped."""
        if self.role in ("master", "replica"):
            routes = [r for r in self.local_routes(function) if self._routable(r)]
            if routes or self.role == "master":
                return routes
        topology = self.cluster.current_topology
        for target in lookup_targets(self.name, self.role, topology, self.cluster.view):
            answer = await self._query(target, function)
            if answer or (answer is not None and target == topology.master):
                return answer
            # Nowhere, says a replica's copy: the master may know better (see the module
            # docstring). No answer at all: the next target is asked instead.
        return []

    async def _query(self, node: str, function: str) -> list[NodeEndpoint] | None:
        """``node``'s answer, live and unsuspected runs only; None when it gave none within
        ``LOOKUP_TIMEOUT_S`` (frozen, cut off, unreachable)."""
        rpc = self._rpc_of(node)
        if rpc is None:
            return None
        try:
            client = await self._lane(rpc)
        except aio.AioRpcError as exc:  # Info got no answer: a Query would get none either
            log.debug("Info from %s failed: %s", node, exc.code())
            return None
        except ChannelClosed:  # the node left the view meanwhile
            return None
        if client is not None:
            try:
                result = await client.query(function)
                return [r for r in result.routes if self._routable(r)]
            except TimeoutError as exc:
                # Slow or frozen, not lane-less: gRPC to the same node would wait as long.
                log.debug("query lane to %s timed out (%s)", node, exc)
                return None
            except (ConnectionError, OSError) as exc:
                log.debug("query lane to %s failed (%s); using gRPC", node, exc)
                await client.close()
                self.lane_clients.pop(rpc, None)
        try:
            answer = await self.channels.get(rpc).query(function, timeout_s=LOOKUP_TIMEOUT_S)
        except (aio.AioRpcError, ChannelClosed, wire.BadMessage) as exc:
            log.debug("Query to %s failed: %s", node, exc)
            return None
        return [r for r in answer.routes if self._routable(r)]

    def _live_rpcs(self) -> set[str]:
        return {str(m.rpc) for m in self.cluster.view.runs.values() if m.rpc is not None}

    async def _lane(self, rpc: str) -> QueryLaneClient | None:
        client = self.lane_clients.get(rpc)
        if client is not None:
            return client
        live = self._live_rpcs()
        for gone in [a for a in self.lane_clients if a not in live]:  # bounded: live peers only
            self.channels.close_later(self.lane_clients.pop(gone).close())
        try:
            info = await self.channels.get(rpc).info(timeout_s=LOOKUP_TIMEOUT_S)
        except aio.AioRpcError as exc:
            if exc.code() in _SILENT:
                raise  # the node gives no answer at all: not worth a Query
            log.debug("Info from %s failed: %s", rpc, exc)  # no lane: gRPC Query still works
            return None
        if not info.query_lane:
            return None
        client = self.lane_clients[rpc] = QueryLaneClient(
            Address.parse(info.query_lane, "query_lane"), key=self.key, timeout_s=LOOKUP_TIMEOUT_S
        )
        return client

    # -- views -------------------------------------------------------------------------------

    def routes_view(self) -> dict[str, Any]:
        """``GET /v1/routes``: the table this node holds (master or replica)."""
        position = self.backend.position()
        table = self.backend.hub.table if self.backend.hub is not None else self.backend.copy.table
        routes = {
            function: sorted(r.name for r in entries if self._alive(r))
            for function, entries in table.as_dict().items()
        }
        return {
            "node": self.name,
            "role": self.role,
            "version": position.version,
            "lineage": position.lineage,
            "loaded": position.loaded,
            "routes": {f: names for f, names in sorted(routes.items()) if names},
            # The master's last min_instances plan (function -> node -> instances pinned).
            "placement": {
                f: dict(sorted(pins.items())) for f, pins in sorted(self.placement.items())
            },
        }
