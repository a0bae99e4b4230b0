"""What the control plane's gRPC shell needs from the node: the ``ControlBackend`` Protocol.

``tierfaas.control.backend.TableBackend`` implements it over the node's table (a ``TableHub``
on the master, a ``ReplicaCopy`` elsewhere) and a member resolver. The server only moves
bytes: it validates and decodes each request, asks the backend, encodes the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.digest import RunView
from tierfaas.control.table import Op, Update


@dataclass(frozen=True, slots=True)
class Write:
    """One Register (ADD) or Unregister (REMOVE) pair; ``epoch`` 0 names the node's current
    run (the backend resolves it from membership)."""

    op: Op
    function: str
    node: str
    epoch: int = 0
    history: bytes = b""
    """REMOVE only: the function's idle history on the node (``histories.py``)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    accepted: int
    rejected: Sequence[Write] = ()
    """Writes naming no run the master holds alive (a dead node, or one the master's gossip
    has not seen back yet): the writer re-checks soon with a digest and re-announces once the
    master holds it alive (``digest.py``)."""
    histories: Sequence[tuple[str, bytes]] = ()
    """(function, idle history) of the registered functions whose history the master held
    (``histories.py``): the registering node adopts them."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    routes: Sequence[NodeEndpoint]
    version: int


@dataclass(frozen=True, slots=True)
class TablePosition:
    version: int
    lineage: str
    loaded: bool = True


@dataclass(frozen=True, slots=True)
class NotMasterError(Exception):
    """Raised by a backend that lost the master role between ``is_master()`` and the write."""

    master_rpc: str | None = field(default=None)


class ControlBackend(Protocol):
    def is_master(self) -> bool:
        """True if this node is the master now (takes writes, serves Subscribe)."""

    def master_rpc_address(self) -> str | None:
        """``host:port`` of the current master's control API, None if unknown."""

    async def apply_writes(self, writes: Sequence[Write]) -> WriteResult:
        """Queues writes for the next batch (master only; raise NotMasterError otherwise)."""

    async def announce(self, node: str, epoch: int, functions: Sequence[str]) -> WriteResult:
        """Replaces ``node``'s warm set (master only; raise NotMasterError otherwise)."""

    def digest(self, node: str, epoch: int) -> RunView:
        """The digest of what this node's table (a master's, pending writes included, or a
        replica's copy) holds for the run (``node``, ``epoch``), and whether the run is alive
        in its view; raise NotMasterError when it holds no table."""

    def query(self, function: str) -> QueryResult | Awaitable[QueryResult]:
        """Where ``function`` is warm, from this node's memory (master or replica). May answer
        at once (cheapest: the query lane then needs no task per request) or with an
        awaitable (e.g. a message to the actor). Must not return nodes its membership view
        says are dead."""

    def subscribe(
        self, from_version: int, lineage: str, *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        """Master only: a snapshot (unless ``from_version``/``lineage`` can be served from the
        delta log, across a fork too when the caller ``follows_forks``), then every later
        delta in order; ends if this node stops being master."""

    def position(self) -> TablePosition:
        """The table version and lineage this node holds (for Info, status and lag)."""
