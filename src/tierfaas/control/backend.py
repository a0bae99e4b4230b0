"""``TableBackend``: the ``ControlBackend`` every node serves, over its share of the routing
table: a ``TableHub`` while it is master, a ``ReplicaCopy`` otherwise.

``ControlPlane`` holds one per node and switches it with ``promote()`` / ``demote()`` as the
node's role changes; tests and the benchmark serve it directly. Members are resolved by a
callable (name -> the live run's ``NodeEndpoint``, None if not a live member), so a write
naming a dead run is rejected and never reaches the table. The master also keeps the
functions' idle histories the Unregisters carry, and hands each to the next Register of its
function (``histories.py``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence

from tierfaas.clock import Clock
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.api import NotMasterError, QueryResult, TablePosition, Write, WriteResult
from tierfaas.control.constants import BATCH_WINDOW_S, HISTORY_BYTES_PER_CALL
from tierfaas.control.digest import RunView, digest
from tierfaas.control.histories import HistoryStore
from tierfaas.control.hub import TableHub
from tierfaas.control.replica_copy import ReplicaCopy
from tierfaas.control.table import Op, RoutingTable, Update

Resolver = Callable[[str], NodeEndpoint | None]
log = logging.getLogger("tierfaas.control")


class TableBackend:
    """This node's table as a ``ControlBackend``: writes and Subscribe go to the hub (master
    only, else ``NotMasterError``), queries to the hub or the replica's copy."""

    def __init__(
        self,
        resolve: Resolver,
        clock: Clock,
        *,
        master: bool,
        master_rpc: str | None = None,
        window_s: float = BATCH_WINDOW_S,
        lineage: str | None = None,
    ) -> None:
        self._resolve = resolve
        self._clock = clock
        self._window_s = window_s
        self.master_rpc = master_rpc
        self.copy = ReplicaCopy()
        self.hub: TableHub | None = None
        # The functions' idle histories (master only; soft state, lost with the role).
        self.histories: HistoryStore | None = None
        if master:
            self.promote(lineage)

    # -- roles -------------------------------------------------------------------------------

    def promote(self, lineage: str | None = None) -> TableHub:
        """Becomes master with the copy held so far, under a new lineage that records the
        fork from the copy's (``RoutingTable.restart_lineage``): replicas that hold a version
        of the old lineage up to the copy's resume from it with no snapshot."""
        table = self.copy.table if self.copy.loaded else RoutingTable()
        table.restart_lineage(lineage or secrets.token_hex(8))
        self.hub = TableHub(table, self._clock, window_s=self._window_s)
        self.histories = HistoryStore(self._clock)
        self.copy = ReplicaCopy()
        return self.hub

    def demote(self, master_rpc: str | None) -> None:
        """Stops being master: ends the streams and drops the table (replicas resubscribe)."""
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        self.histories = None
        self.master_rpc = master_rpc

    # -- ControlBackend ----------------------------------------------------------------------

    def is_master(self) -> bool:
        return self.hub is not None

    def master_rpc_address(self) -> str | None:
        return self.master_rpc

    def _master_hub(self) -> TableHub:
        if self.hub is None:
            raise NotMasterError(self.master_rpc)
        return self.hub

    async def apply_writes(self, writes: Sequence[Write]) -> WriteResult:
        hub = self._master_hub()
        histories = self.histories
        rejected = []
        handed: list[tuple[str, bytes]] = []
        budget = HISTORY_BYTES_PER_CALL
        for w in writes:
            route = self._resolve(w.node)
            if route is None or (w.epoch and w.epoch != route.epoch):
                rejected.append(w)
            elif w.op is Op.ADD:
                # The first node of a function goes out at once (see Batcher): until the
                # replicas know it, other nodes start instances of their own.
                hub.batcher.register(w.function, route, urgent=not hub.table.query(w.function))
                # The node that registers a function takes the history its last node left.
                if histories is not None and budget > 0 and w.function in histories:
                    data = histories.take(w.function)
                    if data is not None:
                        handed.append((w.function, data))
                        budget -= len(data)
            else:
                # The last node of a function goes out at once too: a function evicted
                # everywhere leaves every copy now, not a window later (issue 19.4).
                hub.batcher.unregister(w.function, route, urgent=_last(hub, w.function, w.node))
                if w.history and histories is not None and not histories.put(w.function, w.history):
                    log.debug("ignoring an invalid idle history of %s from %s", w.function, w.node)
        hub.wrote()
        return WriteResult(len(writes) - len(rejected), rejected, handed)

    async def announce(self, node: str, epoch: int, functions: Sequence[str]) -> WriteResult:
        hub = self._master_hub()
        route = self._resolve(node)
        if route is None or (epoch and epoch != route.epoch):
            return WriteResult(0, [Write(Op.ADD, f, node, epoch) for f in functions])
        hub.batcher.announce(route, frozenset(functions))
        hub.wrote()
        return WriteResult(len(functions))

    def digest(self, node: str, epoch: int) -> RunView:
        """What this node's table holds for the run (``node``, ``epoch``; 0: its current
        run), as a digest, and whether the run is alive in this node's view (anti-entropy,
        ``digest.py``). A master counts its pending batch; a replica answers from its copy
        (``copy``); a node with no table raises ``NotMasterError``."""
        route = self._resolve(node)
        if route is not None and not epoch:
            epoch = route.epoch  # 0 names the node's current run, as in writes
        alive = route is not None and route.epoch == epoch
        if self.hub is not None:
            table = self.hub.table
            held = self.hub.batcher.overlay(node, table.runs_of(node))
        elif self.copy.loaded:
            table = self.copy.table
            held = table.runs_of(node)
        else:
            raise NotMasterError(self.master_rpc)
        mine = digest(f for f, e in held.items() if e == epoch)
        return RunView(alive, mine, table.version, table.lineage, copy=self.hub is None)

    def query(self, function: str) -> QueryResult:
        if self.hub is None:
            return QueryResult(self.copy.table.query(function), self.copy.table.version)
        table = self.hub.table
        routes = table.query(function)
        pending = self.hub.batcher.pending_adds(function)
        if pending:  # registered but not flushed yet: name them now (they are hints anyway)
            known = {r.name for r in routes}
            routes = [*routes, *(r for r in pending if r.name not in known)]
        return QueryResult(routes, table.version)

    def subscribe(
        self, from_version: int, lineage: str, *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        return self._master_hub().subscribe(from_version, lineage, follows_forks=follows_forks)

    def position(self) -> TablePosition:
        if self.hub is not None:
            return TablePosition(self.hub.table.version, self.hub.table.lineage)
        return TablePosition(self.copy.version, self.copy.lineage, self.copy.loaded)


def _last(hub: TableHub, function: str, node: str) -> bool:
    """Whether ``node`` is the only node the table (and the pending batch) holds for
    ``function``: its unregistration leaves the function warm nowhere."""
    held = {r.name for r in hub.table.query(function)}
    held.update(r.name for r in hub.batcher.pending_adds(function))
    return held <= {node}
