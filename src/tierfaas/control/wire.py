"""Conversions between the control plane's Python types and ``tierfaas.v1`` messages.

Decoding never trusts the peer: names must be valid node/function names and addresses valid
``host:port`` pairs, or ``BadMessage`` is raised (the server answers ``INVALID_ARGUMENT``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import QueryResult, Write, WriteResult
from tierfaas.control.constants import MAX_SNAPSHOT_ROUTES, SNAPSHOT_PART_CHANGES
from tierfaas.control.digest import Digest, RunView
from tierfaas.control.lineage import Fork
from tierfaas.control.table import Change, Delta, Op, Snapshot, Update
from tierfaas.errors import ConfigError
from tierfaas.names import is_valid_name

M = TypeVar("M", bound=Message)
MAX_EPOCH = 2**63 - 1


class BadMessage(ValueError):
    """A peer sent bytes that are not a valid message of the expected type."""


def decode(message_type: type[M], data: bytes) -> M:
    """Parses ``data``; raises ``BadMessage`` on bytes that are not a ``message_type``."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise BadMessage(f"not a {message_type.__name__}: {exc}") from None
    return message


def check_name(value: str, what: str) -> str:
    if not is_valid_name(value):
        raise BadMessage(f"{what} {value[:80]!r} is not a valid name")
    return value


def check_epoch(value: int) -> int:
    if value > MAX_EPOCH:
        raise BadMessage(f"epoch {value} is out of range")
    return value


def _address(text: str, what: str) -> Address | None:
    if not text:
        return None
    try:
        return Address.parse(text, what)
    except ConfigError as exc:
        raise BadMessage(str(exc)) from None


# -- routes ------------------------------------------------------------------------------------


def route_to_pb(route: NodeEndpoint) -> pb.NodeRoute:
    return pb.NodeRoute(
        node=route.name,
        epoch=route.epoch,
        http=str(route.http) if route.http else "",
        rpc=str(route.rpc) if route.rpc else "",
    )


def route_from_pb(message: pb.NodeRoute) -> NodeEndpoint:
    return NodeEndpoint(
        check_name(message.node, "node"),
        check_epoch(message.epoch),
        _address(message.http, "http"),
        _address(message.rpc, "rpc"),
    )


def writes_to_pb(writes: Sequence[Write]) -> list[pb.Route]:
    return [
        pb.Route(function=w.function, node=w.node, epoch=w.epoch, history=w.history) for w in writes
    ]


def writes_from_pb(op: Op, routes: Sequence[pb.Route]) -> list[Write]:
    """The writes ``routes`` name; a history rides only on a REMOVE (the master checks it
    when it stores it: ``histories.py``)."""
    return [
        Write(
            op,
            check_name(r.function, "function"),
            check_name(r.node, "node"),
            r.epoch,
            r.history if op is Op.REMOVE else b"",
        )
        for r in routes
        if check_epoch(r.epoch) >= 0
    ]


def write_reply(result: WriteResult) -> pb.WriteReply:
    """The answer to a Register/Unregister/Announce: the pairs accepted and rejected, the
    idle histories handed to the registering node, and that this master keeps them."""
    return pb.WriteReply(
        accepted=result.accepted,
        rejected=writes_to_pb(list(result.rejected)),
        histories=[pb.Route(function=f, history=data) for f, data in result.histories],
        keeps_histories=True,
    )


# -- queries -----------------------------------------------------------------------------------


def query_reply(result: QueryResult, request_id: int = 0) -> pb.QueryReply:
    return pb.QueryReply(
        nodes=[route_to_pb(r) for r in result.routes],
        version=result.version,
        request_id=request_id,
    )


def query_result(reply: pb.QueryReply) -> QueryResult:
    return QueryResult([route_from_pb(n) for n in reply.nodes], reply.version)


# -- anti-entropy digests ----------------------------------------------------------------------


def digest_reply(view: RunView) -> pb.DigestReply:
    return pb.DigestReply(
        alive=view.alive,
        count=view.digest.count,
        hash=view.digest.hash,
        version=view.version,
        lineage=view.lineage,
        copy=view.copy,
    )


def run_view(reply: pb.DigestReply) -> RunView:
    return RunView(
        reply.alive, Digest(reply.count, reply.hash), reply.version, reply.lineage, reply.copy
    )


# -- table updates -----------------------------------------------------------------------------


def update_to_pb(update: Update) -> list[pb.TableUpdate]:
    """The messages that carry ``update``: one for a delta or a fork, one or more for a
    snapshot."""
    if isinstance(update, Fork):
        return [
            pb.TableUpdate(
                prev_version=update.version,
                version=update.version,
                lineage=update.lineage,
                fork_of=update.parent,
            )
        ]
    if isinstance(update, Snapshot):
        changes = [_change_to_pb(c) for c in update.changes()]
        parts = [
            changes[i : i + SNAPSHOT_PART_CHANGES]
            for i in range(0, len(changes), SNAPSHOT_PART_CHANGES)
        ] or [[]]
        return [
            pb.TableUpdate(
                snapshot=True,
                version=update.version,
                lineage=update.lineage,
                changes=part,
                more=i < len(parts) - 1,
            )
            for i, part in enumerate(parts)
        ]
    return [_delta_to_pb(update)]


class UpdateEncoder:
    """``update_to_pb`` once per update, shared by every Subscribe stream that sends it.

    The master sends each delta to every replica (about sqrt(N) streams), and a snapshot to
    each replica that subscribes after a failover: turning each route into a message is the
    Python part of that cost, so it is done once per (kind, lineage, version), which names one
    content of the master's table (a lineage's version grows with every change, and every
    promotion draws a new random lineage), and the messages are shared (they are only read).
    At 10,000 nodes encoding each delta per stream took ~0.4 of the master's core at 1,000
    registrations/s (benchmarks/scale.py). Keeps the last ``deltas`` deltas, and the last
    snapshot until the table moves on (the next delta): the messages of 300,000 routes take
    ~70 MB, and a later subscriber gets a snapshot of a later version anyway."""

    def __init__(self, deltas: int = 32) -> None:
        self._deltas: OrderedDict[tuple[str, int], list[pb.TableUpdate]] = OrderedDict()
        self._limit = deltas
        self._snapshot: tuple[tuple[str, int], list[pb.TableUpdate]] | None = None

    def messages(self, update: Update) -> list[pb.TableUpdate]:
        """The messages that carry ``update`` (``update_to_pb``); do not modify them."""
        if isinstance(update, Fork):
            return update_to_pb(update)  # one small message, at most once per subscriber
        key = (update.lineage, update.version)
        if isinstance(update, Snapshot):
            if self._snapshot is None or self._snapshot[0] != key:
                self._snapshot = (key, update_to_pb(update))
            return self._snapshot[1]
        messages = self._deltas.get(key)
        if messages is None:
            self._snapshot = None  # a new delta: the table has moved on from that snapshot
            messages = self._deltas[key] = update_to_pb(update)
            if len(self._deltas) > self._limit:
                self._deltas.popitem(last=False)
        return messages


class SnapshotAssembler:
    """Joins the parts of a snapshot; ``add`` returns the update once it is complete."""

    def __init__(self, max_changes: int = MAX_SNAPSHOT_ROUTES) -> None:
        self._parts: list[pb.TableUpdate] = []
        self._count = 0
        self._max = max_changes

    def add(self, message: pb.TableUpdate) -> Update | None:
        if not message.snapshot:
            if self._parts:
                raise BadMessage("a delta in the middle of a snapshot")
            return update_from_pb(message)
        if self._parts and (
            message.version != self._parts[0].version or message.lineage != self._parts[0].lineage
        ):
            raise BadMessage("snapshot parts of different versions")
        self._count += len(message.changes)
        if self._count > self._max:
            raise BadMessage(f"a snapshot of more than {self._max} routes")
        self._parts.append(message)
        if message.more:
            return None
        whole = pb.TableUpdate(snapshot=True, version=message.version, lineage=message.lineage)
        for part in self._parts:
            whole.changes.extend(part.changes)
        self._parts, self._count = [], 0
        return update_from_pb(whole)


def _delta_to_pb(update: Delta) -> pb.TableUpdate:
    return pb.TableUpdate(
        snapshot=False,
        prev_version=update.prev_version,
        version=update.version,
        lineage=update.lineage,
        changes=[_change_to_pb(c) for c in update.changes],
    )


def update_from_pb(message: pb.TableUpdate) -> Update:
    changes = [_change_from_pb(c) for c in message.changes]
    if message.snapshot:
        routes: dict[str, list[NodeEndpoint]] = {}
        for change in changes:
            if change.op is not Op.ADD:
                raise BadMessage("a snapshot holds ADD changes only")
            routes.setdefault(change.function, []).append(change.route)
        return Snapshot(message.lineage, message.version, {f: tuple(r) for f, r in routes.items()})
    if message.fork_of:
        if changes or message.version != message.prev_version:
            raise BadMessage("a fork changes nothing: no changes, version = prev_version")
        if not message.lineage or message.fork_of == message.lineage:
            raise BadMessage("a fork names two different lineages")
        return Fork(message.fork_of, message.lineage, message.version)
    if message.version <= message.prev_version:
        raise BadMessage("a delta's version must be above its prev_version")
    return Delta(message.lineage, message.prev_version, message.version, tuple(changes))


def _change_to_pb(change: Change) -> pb.Change:
    return pb.Change(
        op=int(change.op),  # type: ignore[arg-type]
        function=change.function,
        route=route_to_pb(change.route),
    )


def _change_from_pb(message: pb.Change) -> Change:
    try:
        op = Op(message.op)
    except ValueError:
        raise BadMessage(f"unknown change op {message.op}") from None
    return Change(op, check_name(message.function, "function"), route_from_pb(message.route))
