"""The control plane: the warm routing table over gRPC (``tierfaas.v1.Control``).

Pure cores (no I/O, clock injected): ``RoutingTable`` (versions, delta log, lineages),
``Batcher`` (the master's batch window), ``ReplicaCopy`` (a replica's copy, gap detection).
Shells: ``TableHub`` (the master's table, window timer and Subscribe streams),
``ControlServer`` (grpc.aio + the raw TCP query lane) over a ``ControlBackend``,
``ControlClient`` / ``Channels`` (the transport), ``WriteQueue`` (runtime events -> batched
writes), ``Replicator`` (a replica's Subscribe loop), ``QueryLaneClient`` (the fast Query path).
``TableBackend`` is the backend every node serves: its table as master or replica.
``rpc`` holds the generated stub and servicer wiring, ``constants`` every number and metadata
key of the control plane.
"""

from tierfaas.control.api import ControlBackend, QueryResult, TablePosition, Write, WriteResult
from tierfaas.control.backend import TableBackend
from tierfaas.control.batcher import Batcher
from tierfaas.control.hub import TableHub
from tierfaas.control.lane import LaneError, QueryLaneClient, QueryLaneServer
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.server import ControlServer, Limits
from tierfaas.control.table import Change, Delta, Op, RoutingTable, Snapshot
from tierfaas.control.transport import Channels, ControlClient, NotMaster
from tierfaas.control.write_queue import WriteQueue

__all__ = [
    "Batcher",
    "Change",
    "Channels",
    "ControlBackend",
    "ControlClient",
    "ControlServer",
    "Delta",
    "LaneError",
    "Limits",
    "NotMaster",
    "Op",
    "Outcome",
    "QueryLaneClient",
    "QueryLaneServer",
    "QueryResult",
    "ReplicaCopy",
    "Replicator",
    "RoutingTable",
    "Snapshot",
    "TableBackend",
    "TableHub",
    "TablePosition",
    "Write",
    "WriteQueue",
    "WriteResult",
]
