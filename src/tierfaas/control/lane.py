"""The query lane: ``Query`` over a raw asyncio TCP connection, for the worker -> replica hop.

Why: a grpc.aio unary call costs ~650 µs on loopback and a message on an open grpc.aio
stream ~350 µs, several times a Redis GET through redis-py (~135 µs); the same protobuf
messages over an ``asyncio.Protocol`` cost ~50-70 µs (shared/reference/loopback-limits.md
and benchmarks/control_plane.py). The lane carries exactly the ``tierfaas.v1`` messages
(``QueryRequest`` / ``QueryReply``), so it stays behind the same .proto interface; its
address is published by the ``Info`` RPC, and gRPC ``Query`` remains the fallback.

Framing: every frame is a 4-byte big-endian length, then one kind byte, then the payload.
The first frame from the client must be ``AUTH`` carrying the cluster credential
(``auth.py``); then ``QUERY`` frames (a ``QueryRequest`` with a ``request_id``) get ``REPLY``
frames (a ``QueryReply`` with the same id). Other kinds are served by the handlers the server
is given (``frames``): the asynchronous calls' copies and outcomes (``calls/lane.py``) use
the same port and the same AUTH. Queries are pipelined: many may be in flight on
one connection, and replies may come back in any order. A frame that is too long, empty, of
an unknown kind, not a valid message, or sent before a valid AUTH closes the connection (the
peer is broken or hostile; nothing it sent is answered). An invalid function name is
answered with ``error`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from google.protobuf.message import DecodeError

from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import QueryResult
from tierfaas.control.auth import credential, verify
from tierfaas.control.constants import (
    LANE_AUTH_TIMEOUT_S,
    LANE_CLIENT_MAX_FRAME,
    LANE_CONNECT_TIMEOUT_S,
    LANE_MAX_FRAME,
    LANE_PRE_AUTH_MAX_FRAME,
    QUERY_TIMEOUT_S,
)
from tierfaas.names import is_valid_name

log = logging.getLogger("tierfaas.control.lane")

# The frame kinds. ONLY APPEND: the numbers are part of the protocol.
AUTH, QUERY, REPLY = 1, 2, 3
CALL_COPIES, CALL_OUTCOMES, CALLS_ACK = 4, 5, 6  # calls/lane.py
_FRAME_HEADER = struct.Struct(">IB")  # length (of kind + payload), kind
QueryFn = Callable[[str], QueryResult | Awaitable[QueryResult]]
Reply = Callable[[int, bytes], None]
"""Sends one frame (kind, payload) back on the connection (dropped if it closed)."""
FrameHandler = Callable[[bytes, Reply], None]
"""Serves one frame of its kind; raises ``ValueError`` for a malformed one (the connection is
then closed, like for any broken frame)."""


def frame(kind: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(len(payload) + 1, kind) + payload


class Frames:
    """Splits a byte stream into (kind, payload) frames; raises ValueError on a bad frame."""

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes, limit: int | None = None) -> list[tuple[int, bytes]]:
        """The complete frames buffered so far (at most ``limit``: the rest stays buffered,
        checked later against the limit then in force)."""
        self._buf += data
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        while len(buf) >= 5 and (limit is None or len(out) < limit):
            length, kind = _FRAME_HEADER.unpack_from(buf)
            if length == 0 or length > self._max + 1:
                raise ValueError(f"frame of {length} bytes")
            if len(buf) < 4 + length:
                break
            out.append((kind, bytes(buf[5 : 4 + length])))
            del buf[: 4 + length]
        return out


# -- server ------------------------------------------------------------------------------------


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, lane: QueryLaneServer) -> None:
        self._lane = lane
        self._frames = Frames(LANE_PRE_AUTH_MAX_FRAME)
        self._authed = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._lane.connections.add(self._transport)
        self._timer = asyncio.get_running_loop().call_later(LANE_AUTH_TIMEOUT_S, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._lane.connections.discard(self._transport)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _expire(self) -> None:
        if not self._authed:
            self._refuse("no AUTH frame in time")

    def _refuse(self, reason: str) -> None:
        self._lane.refused += 1
        log.debug("query lane: closing a connection: %s", reason)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            # Before AUTH, one frame only: what follows it in the same read is measured
            # against the authenticated limit once AUTH is verified.
            frames = self._frames.feed(data, None if self._authed else 1)
        except ValueError as exc:
            self._refuse(str(exc))
            return
        for kind, payload in frames:
            if self._transport is None:
                return
            if not self._authed:
                if kind == AUTH and verify(payload, self._lane.expected):
                    self._authed = True
                    self._frames._max = self._lane.max_frame
                    self.data_received(b"")  # the frames that came with it
                    return
                self._refuse("missing or wrong credential")
                return
            if kind != QUERY:
                handler = self._lane.frames.get(kind)
                if handler is None:
                    self._refuse(f"unexpected frame kind {kind}")
                    return
                try:
                    handler(payload, self._reply)
                except ValueError as exc:
                    self._refuse(f"bad frame of kind {kind}: {exc}")
                    return
                continue
            try:
                request = pb.QueryRequest.FromString(payload)
            except DecodeError:
                self._refuse("not a QueryRequest")
                return
            self._answer(request)

    def _answer(self, request: pb.QueryRequest) -> None:
        if not is_valid_name(request.function):
            reply = pb.QueryReply(request_id=request.request_id, error="invalid function name")
            self._send(reply)
            return
        result = self._lane.query(request.function)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            rid = request.request_id
            task.add_done_callback(lambda t: self._send_result(t, rid))
        else:
            self._send(wire.query_reply(result, request.request_id))

    def _send_result(self, task: asyncio.Future[QueryResult], request_id: int) -> None:
        if task.cancelled() or task.exception() is not None:
            self._send(pb.QueryReply(request_id=request_id, error="query failed"))
        else:
            self._send(wire.query_reply(task.result(), request_id))

    def _send(self, reply: pb.QueryReply) -> None:
        self._reply(REPLY, reply.SerializeToString())

    def _reply(self, kind: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(kind, payload))


class QueryLaneServer:
    """Serves ``query`` on a TCP port to clients holding the cluster credential."""

    def __init__(
        self,
        query: QueryFn,
        *,
        key: bytes | None,
        max_frame: int = LANE_MAX_FRAME,
        frames: Mapping[int, FrameHandler] | None = None,
    ) -> None:
        self.query = query
        self.frames: Mapping[int, FrameHandler] = frames or {}
        self.expected = credential(key)
        self.max_frame = max_frame
        self.refused = 0
        self.connections: set[asyncio.Transport] = set()
        self.address: Address | None = None
        self._server: asyncio.Server | None = None

    async def start(self, bind: Address) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerProtocol(self), bind.host, bind.port, reuse_address=True
        )
        port = self._server.sockets[0].getsockname()[1]
        self.address = Address(bind.host, int(port))

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self.connections):
            transport.abort()
        await self._server.wait_closed()
        self._server = None


# -- client ------------------------------------------------------------------------------------


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: QueryLaneClient, max_frame: int) -> None:
        self._client = client
        self._frames = Frames(max_frame)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        self._client._lost(self, exc)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
            for kind, payload in frames:
                if kind != REPLY:
                    raise ValueError(f"unexpected frame kind {kind}")
                self._client._reply(pb.QueryReply.FromString(payload))
        except (ValueError, DecodeError) as exc:
            log.warning("query lane: bad frame from the server: %s", exc)
            if self.transport is not None:
                self.transport.abort()


class LaneError(ConnectionError):
    """The query lane failed (connection lost, refused or answered with an error)."""


class QueryLaneClient:
    """One pipelined connection to a node's query lane; connects on first use and again after
    a loss. ``query()`` raises ``LaneError`` on failure (callers fall back to gRPC Query or
    another node) and ``TimeoutError`` when the peer does not answer within ``timeout_s``,
    the connect included (a connect alone gives up after ``connect_timeout_s``)."""

    def __init__(
        self,
        address: Address,
        *,
        key: bytes | None,
        timeout_s: float = QUERY_TIMEOUT_S,
        connect_timeout_s: float = LANE_CONNECT_TIMEOUT_S,
        max_frame: int = LANE_CLIENT_MAX_FRAME,
    ) -> None:
        self.address = address
        self._auth = frame(AUTH, credential(key).encode())
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_frame = max_frame
        self._protocol: _ClientProtocol | None = None
        self._connecting: asyncio.Future[_ClientProtocol] | None = None
        self._pending: dict[int, asyncio.Future[pb.QueryReply]] = {}
        self._next_id = 0

    async def _connected(self) -> _ClientProtocol:
        if self._protocol is not None and self._protocol.transport is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _ClientProtocol:
        loop = asyncio.get_running_loop()
        try:
            # Bounded: a peer cut off never answers the SYN, and every query waits on this.
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _ClientProtocol(self, self._max_frame),
                    self.address.host,
                    self.address.port,
                )
        except TimeoutError:  # an OSError too, but a different verdict: cut off, not refused
            raise TimeoutError(
                f"no answer from the query lane at {self.address} within "
                f"{self._connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise LaneError(f"cannot reach the query lane at {self.address}: {exc}") from exc
        assert protocol.transport is not None
        protocol.transport.write(self._auth)
        self._protocol = protocol
        return protocol

    async def query(self, function: str) -> QueryResult:
        async with asyncio.timeout(self._timeout_s):  # one bound: the connect and the reply
            protocol = await self._connected()
            self._next_id += 1
            rid = self._next_id
            future: asyncio.Future[pb.QueryReply] = asyncio.get_running_loop().create_future()
            self._pending[rid] = future
            request = pb.QueryRequest(function=function, request_id=rid)
            assert protocol.transport is not None
            protocol.transport.write(frame(QUERY, request.SerializeToString()))
            try:
                reply = await future
            finally:
                self._pending.pop(rid, None)
        if reply.error:
            raise LaneError(f"query lane: {reply.error}")
        try:
            return wire.query_result(reply)
        except wire.BadMessage as exc:
            raise LaneError(f"query lane: bad reply: {exc}") from None

    def _reply(self, reply: pb.QueryReply) -> None:
        future = self._pending.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    def _lost(self, protocol: _ClientProtocol, exc: Exception | None) -> None:
        if self._protocol is protocol:
            self._protocol = None
        error = LaneError(f"query lane connection to {self.address} lost: {exc or 'closed'}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.lost), 1.0)
