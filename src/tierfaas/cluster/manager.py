"""The ClusterManager actor: one asyncio task alone owns ``ClusterState``.

Everything else talks to it through messages on one queue (see ``messages``); queries carry
a future for the answer. Nothing else touches the state, so there are no locks and no
half-applied changes: each message is handled to the end before the next one starts, and
the handler never awaits anything slow (role subscribers are called from their own tasks).
Membership events reach it the same way: a forwarder task copies the ``Membership`` event
iterator into the queue, so a membership change and a query are ordered like any two
messages. On every membership change it recomputes the topology, and when this node's role
changes it logs the change with its reason and publishes it to the role subscribers.

It is this node's only view of the members. Each membership change publishes a new
``MemberView`` (``view``: read with no message, so the router's lookups and the control
plane's answers use it on the hot path) and, for a run that turns suspect, dies or leaves, a
``RunGone`` to the run watchers, called in the same step: by the time the next message is
handled, nothing that watches still forwards to that run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tierfaas.clock import Clock, monotonic
from tierfaas.cluster.messages import (
    GetSnapshot,
    GetTopology,
    MembershipChanged,
    Message,
    RoleSubscriber,
    RunWatcher,
    Stop,
    SubscribeRoles,
    WatchRuns,
)
from tierfaas.cluster.state import ClusterState, MemberView, RoleChange, RunGone
from tierfaas.errors import ClusterError
from tierfaas.membership.base import (
    JoinStatus,
    MemberInfo,
    Membership,
    MembershipEvent,
    NameConflictSelf,
    Resync,
)
from tierfaas.supervision import Supervisor
from tierfaas.topology import ReplicaPolicy, Role, Topology

log = logging.getLogger("tierfaas.cluster")

ROLES: tuple[Role, ...] = ("master", "replica", "worker")
T = TypeVar("T")


class ClusterManager:
    """Owns this node's view of the cluster. ``await start()``, then use the helpers below
    (each is one message on the queue), and ``await stop()`` at shutdown."""

    def __init__(
        self,
        membership: Membership,
        *,
        registry: CollectorRegistry,
        clock: Clock = monotonic,
        replicas: ReplicaPolicy = "sqrt",
        queue_max: int = 10_000,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._membership = membership
        self._supervisor = supervisor or Supervisor()
        self._clock = clock
        self._queue: asyncio.Queue[Message] = asyncio.Queue(queue_max)
        self._state = ClusterState(membership.local.name, replicas)
        self._subscribers: list[asyncio.Queue[RoleChange]] = []
        self._watchers: list[RunWatcher] = []
        self._view = MemberView()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: list[asyncio.Task[None]] = []
        self._role: Role | None = None
        # (master, this node's replica): a change of either is published even when this
        # node's own role stays, since the control plane must follow it.
        # What a subscriber follows besides the role: the master, this node's replica, and
        # whether this node is the standby (it then keeps a copy of the table).
        self._watched: tuple[str | None, str | None, bool] = (None, None, False)
        self.name_conflict = asyncio.Event()
        """Set when another node holds this node's name: the node should exit non-zero."""
        self._queue_depth = Gauge(
            "tierfaas_cluster_queue_depth",
            "Messages waiting for the cluster manager",
            registry=registry,
        )
        self._queue_depth.set_function(self._queue.qsize)
        self._handling = Histogram(
            "tierfaas_cluster_message_seconds",
            "Time the cluster manager spent on one message",
            ["message"],
            registry=registry,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
        )
        self._role_gauge = Gauge(
            "tierfaas_cluster_role",
            "1 for this node's current role, 0 for the others",
            ["role"],
            registry=registry,
        )
        self._members_gauge = Gauge(
            "tierfaas_cluster_members", "Live members in this node's view", registry=registry
        )
        self._membership_events = Counter(
            "tierfaas_membership_events",
            "Membership events seen by this node, by kind (MemberSuspect, MemberDown, ...)",
            ["event"],
            registry=registry,
        )
        for role in ROLES:
            self._role_gauge.labels(role).set(0)

    @property
    def role(self) -> Role | None:
        """The role last published by the actor (a copy: reading it takes no message)."""
        return self._role

    @property
    def view(self) -> MemberView:
        """The live runs as the actor last published them (reading it takes no message)."""
        return self._view

    @property
    def current_topology(self) -> Topology:
        """The roles the actor last computed (reading it takes no message; never modified)."""
        return self._state.topology

    @property
    def local(self) -> MemberInfo:
        """This node's own run, as its membership reports it (the epoch is set once started)."""
        return self._membership.local

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribes to membership events, takes the current members, starts the actor."""
        events = self._membership.events()  # before members(): no change can fall between
        self._state.joined = self._membership.joined
        self._state.join_reason = self._membership.join_reason
        self._state.resync(self._membership.members())
        self._view = self._state.view()
        self._apply_roles("start")
        self._tasks.append(self._supervisor.spawn("cluster-manager", self._run))
        first = [events]

        async def forward() -> None:
            # Restarted after a crash: a new subscription, and the whole member list at once
            # (events may have been lost in between).
            stream = first.pop() if first else self._resubscribe()
            async for event in stream:
                await self._queue.put(MembershipChanged(event))

        self._tasks.append(self._supervisor.spawn("cluster-membership-events", forward))

    def _resubscribe(self) -> AsyncIterator[MembershipEvent]:
        events = self._membership.events()
        self.send(MembershipChanged(Resync(tuple(self._membership.members()))))
        return events

    async def stop(self) -> None:
        """Stops the actor after the messages already queued; idempotent."""
        if not self._tasks:
            return
        actor, forwarder = self._tasks
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarder
        if not actor.done():
            await self._queue.put(Stop())
            await actor
        self._tasks.clear()
        # Callbacks get the final "stopped" change; one that hangs is not waited for.
        _, hung = (
            await asyncio.wait(self._deliveries, timeout=1.0) if self._deliveries else ((), ())
        )
        for task in hung:
            task.cancel()

    # -- helpers for callers (each one is a message) -----------------------------------------

    def send(self, message: Message) -> None:
        """Queues a message; raises ``ClusterError`` (503) if the manager is overloaded."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            raise ClusterError("the cluster manager is overloaded") from None

    async def _ask(self, make: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(make(future))
        return await future

    async def topology(self) -> Topology:
        result: Topology = await self._ask(GetTopology)
        return result

    async def snapshot(self) -> dict[str, Any]:
        """The JSON-able view for ``GET /v1/cluster``."""
        result: dict[str, Any] = await self._ask(GetSnapshot)
        return result

    def subscribe_roles(self, subscriber: RoleSubscriber) -> None:
        """Delivers this node's current role, then every change, to ``subscriber``."""
        self.send(SubscribeRoles(subscriber))

    def watch_runs(self, watcher: RunWatcher) -> None:
        """Calls ``watcher`` for every run that turns suspect, dies or leaves from now on (a
        message: may be sent before ``start``)."""
        self.send(WatchRuns(watcher))

    # -- the actor ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            if isinstance(message, Stop):
                break
            started = self._clock()
            try:
                self._handle(message)
            except Exception:
                log.exception("cluster manager failed on %s", type(message).__name__)
            self._handling.labels(type(message).__name__).observe(self._clock() - started)
        for sub in self._subscribers:
            sub.put_nowait(RoleChange(self._state.role, None, "stopped", self._state.topology))

    def _handle(self, message: Message) -> None:
        state = self._state
        match message:
            case MembershipChanged(event=event):
                self._membership_events.labels(type(event).__name__).inc()
                if isinstance(event, NameConflictSelf):
                    log.error(
                        "another node (%s) holds the name %r", event.other_addr, state.self_name
                    )
                    self.name_conflict.set()
                if isinstance(event, JoinStatus) and event.joined:
                    # The join's push-pull filled the member list before the events that
                    # describe it reach us: take the list now, or a joining node would
                    # briefly see itself alone and act as master.
                    state.resync(self._membership.members())
                # Membership never reports this node to itself; keep its own record current.
                state.resync_local(self._membership.local)
                reason = state.apply(event)
                self._view = state.view()
                gone = RunGone.of(event)
                if gone is not None:
                    self._tell_watchers(gone)
                if reason is not None:
                    self._apply_roles(reason)
            case GetTopology(future=f):
                _answer(f, state.topology)
            case GetSnapshot(future=f):
                _answer(f, state.snapshot())
            case SubscribeRoles(subscriber=subscriber):
                queue = self._add_subscriber(subscriber)
                queue.put_nowait(RoleChange(None, state.role, "current role", state.topology))
            case WatchRuns(watcher=watcher):
                self._watchers.append(watcher)

    def _tell_watchers(self, gone: RunGone) -> None:
        for watcher in self._watchers:
            try:
                watcher(gone)
            except Exception:  # one failing watcher must not keep the others uninformed
                log.exception("run watcher failed on %s", gone)

    def _apply_roles(self, reason: str) -> None:
        old, new = self._state.recompute()
        self._members_gauge.set(len(self._state.topology.members))
        self._role = new
        for role in ROLES:
            self._role_gauge.labels(role).set(1 if role == new else 0)
        topo = self._state.topology
        me = self._state.self_name
        watched = (topo.master, topo.replica_of.get(me), topo.standby == me)
        if old == new and watched == self._watched:
            return
        self._watched = watched
        if old != new:
            log.info("role %s -> %s: %s", old or "none", new or "none", reason)
        change = RoleChange(old, new, reason, self._state.topology)
        for sub in self._subscribers:
            sub.put_nowait(change)

    def _add_subscriber(self, subscriber: RoleSubscriber) -> asyncio.Queue[RoleChange]:
        if isinstance(subscriber, asyncio.Queue):
            self._subscribers.append(subscriber)
            return subscriber
        # A callback runs in its own task, in order, so a slow one never blocks the actor.
        queue: asyncio.Queue[RoleChange] = asyncio.Queue()
        self._subscribers.append(queue)
        callback = subscriber

        async def deliver() -> None:
            while True:
                change = await queue.get()
                try:
                    await callback(change)
                except Exception:
                    log.exception("role subscriber failed")
                if change.reason == "stopped":
                    return

        self._deliveries.append(self._supervisor.spawn("role-subscriber", deliver))
        return queue


def _answer(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # the asker may have given up (cancelled)
        future.set_result(value)
