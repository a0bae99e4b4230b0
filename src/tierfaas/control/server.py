"""``ControlServer``: the ``tierfaas.v1.Control`` service on ``grpc.aio``, over a
``ControlBackend``, plus the optional raw TCP query lane (``lane.py``). It is the generated
``ControlServicer``, registered by ``rpc.add_servicer``.

The shell only moves bytes. Requests arrive undecoded (``rpc.add_servicer``), so a
body that is not a valid message, names an invalid function or node, or exceeds the size
limits is answered ``INVALID_ARGUMENT`` by our code instead of an opaque transport error,
and the server keeps serving. gRPC itself refuses a message above twice the limit with
``RESOURCE_EXHAUSTED`` before reading it, which bounds memory. Every call must carry the
cluster credential (``auth.py``). A non-master refuses Register/Unregister/Announce/Subscribe
(and Digest, unless it holds a replica's copy) with ``FAILED_PRECONDITION`` and the master's
address in trailing metadata ``x-tierfaas-master``, so the caller retries there. Server
reflection is on (grpcurl with ``-H x-tierfaas-auth:<credential>`` can list and call the
service).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc
from grpc import aio
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from tierfaas.calls.grpc_service import CallsServicer
from tierfaas.config import Address
from tierfaas.control import rpc, wire
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import ControlBackend, NotMasterError, QueryResult, WriteResult
from tierfaas.control.auth import AuthInterceptor
from tierfaas.control.constants import (
    ERROR_DETAIL_CHARS,
    MASTER_HEADER,
    MAX_MESSAGE_BYTES,
    MAX_ROUTES_PER_CALL,
    MIN_PING_INTERVAL_MS,
    SERVER_STOP_GRACE_S,
)
from tierfaas.control.handover import HandoverError, HandoverSink, receive
from tierfaas.control.lane import QueryLaneServer
from tierfaas.control.lineage import Fork
from tierfaas.control.table import Op, Snapshot
from tierfaas.errors import ConfigError
from tierfaas.names import is_valid_name

log = logging.getLogger("tierfaas.control")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may send. ``max_message_bytes``: a larger request gets
    INVALID_ARGUMENT (and above twice that, gRPC's RESOURCE_EXHAUSTED); raising it lets a
    bigger announce or snapshot through at the cost of memory per call. ``max_routes``: pairs
    per Register/Unregister/Announce call."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_routes: int = MAX_ROUTES_PER_CALL


Context = aio.ServicerContext[bytes, bytes]
PrewarmSink = Callable[[str, dict[str, int], float], tuple[dict[str, int], str]]
"""(master, function -> instances, lease_s) -> (instances here per pinned function, error);
raises ``NotMasterError`` when the sender is not the master this node knows."""
MAX_LEASE_S = 3600.0
MAX_PINNED = 1024  # a function's max_instances at most (manifest)


async def _invalid(context: Context, reason: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason[:ERROR_DETAIL_CHARS])


class ControlServer(CallsServicer, rpc.ControlServicer):
    """``await start()`` binds ``bind`` (port 0: any free port, see ``address``) and, when
    ``lane`` is given, the query lane; ``await stop()`` ends both. The RPC methods (Register
    ... Handover) are the servicer's: each gets the request's bytes and the call's context;
    the asynchronous calls' RPCs are ``CallsServicer``'s (``calls`` is set by the node)."""

    def __init__(
        self,
        backend: ControlBackend,
        *,
        bind: Address,
        key: bytes | None,
        node: str = "",
        lane: Address | None = None,
        limits: Limits = Limits(),
    ) -> None:
        if key is None and not bind.is_loopback:
            raise ConfigError("rpc", f"{bind} is not loopback and no cluster key is set")
        self._backend = backend
        self._encoder = wire.UpdateEncoder()  # one encoding per update for all streams
        self._bind = bind
        self._key = key
        self._node = node
        self._limits = limits
        self._lane_bind = lane
        self.lane: QueryLaneServer | None = None
        self.auth = AuthInterceptor(key)
        self._server: aio.Server | None = None
        self.address: Address | None = None
        # Set by the node that may become master in a rollout (ControlPlane.take_handover).
        self.on_handover: HandoverSink | None = None
        # Takes the master's placement for this node (min_instances; ControlPlane.take_pins).
        self.on_prewarm: PrewarmSink | None = None

    async def start(self) -> None:
        cap = 2 * self._limits.max_message_bytes
        server = aio.server(
            interceptors=[self.auth],
            options=[
                ("grpc.max_receive_message_length", cap),
                ("grpc.max_send_message_length", cap),
                ("grpc.so_reuseport", 0),
                # The peers' keep-alive pings (KEEPALIVE_TIME_MS), also on idle connections.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        rpc.add_servicer(self, server)
        reflection.enable_server_reflection((rpc.SERVICE, reflection.SERVICE_NAME), server)
        port = server.add_insecure_port(str(self._bind))
        if port == 0:
            raise OSError(f"cannot bind the control API to {self._bind}")
        await server.start()
        self._server = server
        self.address = Address(self._bind.host, port)
        if self._lane_bind is not None:
            # The lane also carries the calls' copies (a call's body may take most of the
            # gRPC cap): the same frame limit as gRPC's.
            self.lane = QueryLaneServer(
                self._backend.query, key=self._key, max_frame=cap, frames=self.lane_frames()
            )
            await self.lane.start(self._lane_bind)

    async def stop(self, grace_s: float = SERVER_STOP_GRACE_S) -> None:
        if self.lane is not None:
            await self.lane.stop()
            self.lane = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    # -- the servicer: each method gets the request's bytes (rpc.add_servicer) --------------

    async def _decode(self, context: Context, kind: type[wire.M], data: bytes) -> wire.M:
        if len(data) > self._limits.max_message_bytes:
            await _invalid(context, f"request of {len(data)} bytes is over the limit")
        try:
            return wire.decode(kind, data)
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))

    async def _not_master(self, context: Context) -> NoReturn:
        master = self._backend.master_rpc_address()
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"not the master; the master is {master or 'unknown'}",
            trailing_metadata=((MASTER_HEADER, master or ""),),
        )

    async def _write(
        self, context: Context, run: Callable[[], Awaitable[WriteResult]]
    ) -> pb.WriteReply:
        if not self._backend.is_master():
            await self._not_master(context)
        try:
            result = await run()
        except NotMasterError:
            await self._not_master(context)
        return wire.write_reply(result)

    async def _pairs(self, op: Op, data: bytes, context: Context) -> pb.WriteReply:
        request: pb.RegisterRequest | pb.UnregisterRequest
        if op is Op.ADD:
            request = await self._decode(context, pb.RegisterRequest, data)
        else:
            request = await self._decode(context, pb.UnregisterRequest, data)
        if len(request.routes) > self._limits.max_routes:
            await _invalid(context, f"more than {self._limits.max_routes} routes in one call")
        try:
            writes = wire.writes_from_pb(op, request.routes)
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))
        return await self._write(context, lambda: self._backend.apply_writes(writes))

    async def Register(self, data: bytes, context: Context) -> pb.WriteReply:
        return await self._pairs(Op.ADD, data, context)

    async def Unregister(self, data: bytes, context: Context) -> pb.WriteReply:
        return await self._pairs(Op.REMOVE, data, context)

    async def Announce(self, data: bytes, context: Context) -> pb.WriteReply:
        request = await self._decode(context, pb.AnnounceRequest, data)
        if len(request.functions) > self._limits.max_routes:
            await _invalid(context, f"more than {self._limits.max_routes} functions")
        try:
            node = wire.check_name(request.node, "node")
            epoch = wire.check_epoch(request.epoch)
            functions = [wire.check_name(f, "function") for f in request.functions]
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))
        return await self._write(context, lambda: self._backend.announce(node, epoch, functions))

    async def Digest(self, data: bytes, context: Context) -> pb.DigestReply:
        request = await self._decode(context, pb.DigestRequest, data)
        try:
            node = wire.check_name(request.node, "node")
            epoch = wire.check_epoch(request.epoch)
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))
        try:
            view = self._backend.digest(node, epoch)
        except NotMasterError:
            await self._not_master(context)
        return wire.digest_reply(view)

    async def _lookup(self, function: str) -> QueryResult:
        result = self._backend.query(function)
        return await result if inspect.isawaitable(result) else result

    async def Query(self, data: bytes, context: Context) -> pb.QueryReply:
        request = await self._decode(context, pb.QueryRequest, data)
        try:
            function = wire.check_name(request.function, "function")
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))
        return wire.query_reply(await self._lookup(function), request.request_id)

    async def QueryStream(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.QueryReply]:
        async for data in requests:
            request = await self._decode(context, pb.QueryRequest, data)
            if not is_valid_name(request.function):
                yield pb.QueryReply(request_id=request.request_id, error="invalid function name")
                continue
            yield wire.query_reply(await self._lookup(request.function), request.request_id)

    async def Subscribe(self, data: bytes, context: Context) -> AsyncIterator[pb.TableUpdate]:
        request = await self._decode(context, pb.SubscribeRequest, data)
        if request.replica and not is_valid_name(request.replica):
            await _invalid(context, "replica: not a node name (1-64 of [A-Za-z0-9._-])")
        if not self._backend.is_master():
            await self._not_master(context)
        log.info("replica %s subscribed from version %d", request.replica, request.from_version)
        updates = self._backend.subscribe(
            request.from_version, request.lineage, follows_forks=request.follows_forks
        )
        first = True
        async for update in updates:
            if first and isinstance(update, Fork):
                log.info("replica %s resumes across a fork from %s", request.replica, update)
            elif first and isinstance(update, Snapshot):
                log.info(
                    "replica %s gets a snapshot of version %d", request.replica, update.version
                )
            first = False
            for message in self._encoder.messages(update):
                yield message

    async def Info(self, data: bytes, context: Context) -> pb.InfoReply:
        await self._decode(context, pb.InfoRequest, data)
        position = self._backend.position()
        lane = self.lane.address if self.lane is not None else None
        return pb.InfoReply(
            node=self._node,
            master=self._backend.is_master(),
            master_rpc=self._backend.master_rpc_address() or "",
            version=position.version,
            lineage=position.lineage,
            query_lane=str(lane) if lane else "",
        )

    async def Handover(self, requests: AsyncIterator[bytes], context: Context) -> pb.HandoverReply:
        sink = self.on_handover
        if sink is None:
            return pb.HandoverReply(ready=False, error=f"{self._node} takes no handover")

        async def decoded() -> AsyncIterator[pb.HandoverChunk]:
            async for data in requests:
                yield await self._decode(context, pb.HandoverChunk, data)

        try:
            routes = await sink(await receive(decoded()))
        except HandoverError as exc:
            log.warning("handover refused: %s", exc)
            return pb.HandoverReply(ready=False, error=str(exc))
        return pb.HandoverReply(ready=True, routes=routes)

    async def Prewarm(self, data: bytes, context: Context) -> pb.PrewarmReply:
        request = await self._decode(context, pb.PrewarmRequest, data)
        if len(request.pins) > self._limits.max_routes:
            await _invalid(context, f"more than {self._limits.max_routes} pins in one call")
        if not 0 < request.lease_s <= MAX_LEASE_S:  # also NaN
            await _invalid(context, f"lease_s must be in (0, {MAX_LEASE_S:g}]")
        try:
            master = wire.check_name(request.master, "master")
            pins = {wire.check_name(p.function, "function"): p.count for p in request.pins}
        except wire.BadMessage as exc:
            await _invalid(context, str(exc))
        if any(count > MAX_PINNED for count in pins.values()):
            await _invalid(context, f"more than {MAX_PINNED} instances pinned for a function")
        sink = self.on_prewarm
        if sink is None:
            return pb.PrewarmReply(error=f"{self._node} takes no placement")
        try:
            instances, error = sink(master, pins, request.lease_s)
        except NotMasterError:
            await self._not_master(context)
        return pb.PrewarmReply(
            instances=[pb.Pin(function=f, count=c) for f, c in sorted(instances.items())],
            error=error[:ERROR_DETAIL_CHARS],
        )
