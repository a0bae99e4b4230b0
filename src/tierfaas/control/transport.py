"""The caller's side of ``tierfaas.v1.Control``: ``ControlClient`` (one channel to one peer),
``Channels`` (one client per peer address) and the retry schedule its users share.

Every call carries the cluster credential (``auth.py``). A peer that is not the master
answers writes and Subscribe with ``FAILED_PRECONDITION`` and names the master in trailing
metadata; the client raises that as ``NotMaster`` with the hint, so its caller can retry
there. The channel options make a restarted or partitioned peer reachable again within
about a second (see ``ControlClient``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from grpc import aio

from tierfaas.control import handover, rpc, wire
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import QueryResult, Write
from tierfaas.control.auth import call_metadata
from tierfaas.control.constants import (
    ANNOUNCE_TIMEOUT_S,
    CLIENT_MAX_MESSAGE_BYTES,
    DIGEST_TIMEOUT_S,
    HANDOVER_TIMEOUT_S,
    INFO_TIMEOUT_S,
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MASTER_HEADER,
    MAX_CHANNELS,
    MAX_RECONNECT_BACKOFF_MS,
    QUERY_TIMEOUT_S,
    RECONNECT_BACKOFF_MS,
    WRITE_TIMEOUT_S,
)
from tierfaas.control.digest import RunView
from tierfaas.control.table import Snapshot, Update
from tierfaas.deploy.term import Term

Sleep = Callable[[float], Coroutine[Any, Any, None]]
R = TypeVar("R")  # the request message of a write call


class ChannelClosed(ConnectionError):
    """The call's channel was closed under it (``Channels`` evicts the channels of peers that
    left the member view, in-flight calls included). grpc.aio cancels such a call, which
    surfaces as ``asyncio.CancelledError`` in the caller's task; that would end a long-lived
    task as if it had been stopped, so it is raised as this error instead."""


@contextlib.contextmanager
def _closing_is_an_error(client: ControlClient) -> Iterator[None]:
    """Turns the cancellation of a call by its channel's close into ``ChannelClosed``; a
    cancellation of the calling task itself goes through."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if client.closed and (task is None or not task.cancelling()):
            raise ChannelClosed(f"the channel to {client.address} was closed") from None
        raise


class NotMaster(Exception):
    """The peer is not the master; ``master`` is its hint (None if it knows none)."""

    def __init__(self, master: str | None) -> None:
        super().__init__(f"not the master; try {master or 'later'}")
        self.master = master


class ControlClient:
    """A channel to one peer's control API, called through the generated stub (``rpc.stub``)
    with the cluster credential on every call."""

    def __init__(
        self, address: str, *, key: bytes | None, max_message_bytes: int = CLIENT_MAX_MESSAGE_BYTES
    ) -> None:
        self.address = address
        self._metadata = call_metadata(key)
        self.channel = aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
                # Pings on every connection, idle or not (see KEEPALIVE_TIME_MS): a ping
                # unanswered for KEEPALIVE_TIMEOUT_MS closes a connection a partition silenced.
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                # grpcio times a ping out with this option; keepalive_timeout_ms alone leaves
                # a ping unanswered for as long as the cut lasts.
                ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ],
        )
        self._stub = rpc.stub(self.channel)
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        await self.channel.close()

    async def _write(
        self, call: aio.UnaryUnaryMultiCallable[R, pb.WriteReply], request: R, timeout_s: float
    ) -> pb.WriteReply:
        try:
            with _closing_is_an_error(self):
                reply: pb.WriteReply = await call(
                    request, metadata=self._metadata, timeout=timeout_s
                )
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        return reply

    async def register(
        self, writes: Sequence[Write], timeout_s: float = WRITE_TIMEOUT_S
    ) -> pb.WriteReply:
        """Sends ADD pairs (``op`` is ignored); raises ``NotMaster`` or ``aio.AioRpcError``."""
        request = pb.RegisterRequest(routes=wire.writes_to_pb(writes))
        return await self._write(self._stub.Register, request, timeout_s)

    async def unregister(
        self, writes: Sequence[Write], timeout_s: float = WRITE_TIMEOUT_S
    ) -> pb.WriteReply:
        request = pb.UnregisterRequest(routes=wire.writes_to_pb(writes))
        return await self._write(self._stub.Unregister, request, timeout_s)

    async def announce(
        self, node: str, epoch: int, functions: Sequence[str], timeout_s: float = ANNOUNCE_TIMEOUT_S
    ) -> pb.WriteReply:
        request = pb.AnnounceRequest(node=node, epoch=epoch, functions=list(functions))
        return await self._write(self._stub.Announce, request, timeout_s)

    async def digest(self, node: str, epoch: int, timeout_s: float = DIGEST_TIMEOUT_S) -> RunView:
        """What this peer's table holds for the run (``node``, ``epoch``) (``digest.py``); raises
        ``NotMaster`` or ``aio.AioRpcError``."""
        request = pb.DigestRequest(node=node, epoch=epoch)
        try:
            with _closing_is_an_error(self):
                reply: pb.DigestReply = await self._stub.Digest(
                    request, metadata=self._metadata, timeout=timeout_s
                )
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        return wire.run_view(reply)

    async def prewarm(
        self, pins: dict[str, int], lease_s: float, master: str, timeout_s: float = INFO_TIMEOUT_S
    ) -> pb.PrewarmReply:
        """Sends the master's placement for this peer (min_instances: function -> instances
        to keep warm there for ``lease_s``); raises ``NotMaster`` (the peer knows another
        master) or ``aio.AioRpcError``."""
        request = pb.PrewarmRequest(
            pins=[pb.Pin(function=f, count=c) for f, c in sorted(pins.items())],
            lease_s=lease_s,
            master=master,
        )
        try:
            with _closing_is_an_error(self):
                reply: pb.PrewarmReply = await self._stub.Prewarm(
                    request, metadata=self._metadata, timeout=timeout_s
                )
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        return reply

    async def query(self, function: str, timeout_s: float = QUERY_TIMEOUT_S) -> QueryResult:
        with _closing_is_an_error(self):
            reply: pb.QueryReply = await self._stub.Query(
                pb.QueryRequest(function=function), metadata=self._metadata, timeout=timeout_s
            )
        return wire.query_result(reply)

    async def info(self, timeout_s: float = INFO_TIMEOUT_S) -> pb.InfoReply:
        with _closing_is_an_error(self):
            reply: pb.InfoReply = await self._stub.Info(
                pb.InfoRequest(), metadata=self._metadata, timeout=timeout_s
            )
        return reply

    async def subscribe(
        self, from_version: int, lineage: str, replica: str = "", *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        """The master's stream of updates; raises ``NotMaster`` or ``aio.AioRpcError`` when it
        fails, ``wire.BadMessage`` on an invalid update. No deadline (it lasts as long as the
        master's role): the channel's keepalive ends it within ``STREAM_SILENCE_BOUND_S`` of
        the master going silent (frozen, cut off). ``follows_forks``: the caller applies
        ``Fork`` updates (``ReplicaCopy`` does), so a new master may resume it across one."""
        request = pb.SubscribeRequest(
            from_version=from_version,
            lineage=lineage,
            replica=replica,
            follows_forks=follows_forks,
        )
        call = self._stub.Subscribe(request, metadata=self._metadata)
        parts = wire.SnapshotAssembler()
        try:
            with _closing_is_an_error(self):
                async for message in call:
                    update = parts.add(message)
                    if update is not None:
                        yield update
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        finally:
            call.cancel()

    async def handover(
        self,
        snapshot: Snapshot,
        generation: int,
        from_node: str,
        timeout_s: float = HANDOVER_TIMEOUT_S,
        term: Term | None = None,
    ) -> pb.HandoverReply:
        """Sends the whole table to this peer, which takes over as master of ``generation``
        once it has loaded it (``reply.ready``); raises ``aio.AioRpcError`` if unreachable.
        ``term`` is the sender's, which the target refuses if it has seen a newer one."""
        # Encoding and the checksum of a large table run in a thread, off the event loop.
        messages = await asyncio.to_thread(handover.chunks, snapshot, generation, from_node, term)
        with _closing_is_an_error(self):
            reply: pb.HandoverReply = await self._stub.Handover(
                iter(messages), metadata=self._metadata, timeout=timeout_s
            )
        return reply

    def query_stream(self) -> QueryStream:
        """A long-lived bidirectional stream of pipelined queries (see ``QueryStream``)."""
        return QueryStream(self._stub.QueryStream(metadata=self._metadata))


class QueryStream:
    """Queries over one open QueryStream call, matched to replies by request id."""

    def __init__(self, call: aio.StreamStreamCall[pb.QueryRequest, pb.QueryReply]) -> None:
        self._call = call
        self._pending: dict[int, asyncio.Future[pb.QueryReply]] = {}
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        error: BaseException = ConnectionError("the query stream ended")
        try:
            while True:
                reply = await self._call.read()
                if not isinstance(reply, pb.QueryReply):  # aio.EOF: the server ended it
                    break
                future = self._pending.pop(reply.request_id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except aio.AioRpcError as exc:
            error = exc
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def query(self, function: str, timeout_s: float = QUERY_TIMEOUT_S) -> QueryResult:
        """The answer; raises ``TimeoutError`` past ``timeout_s`` (the stream itself has no
        deadline: keepalive ends it, see ``STREAM_SILENCE_BOUND_S``)."""
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[pb.QueryReply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            async with asyncio.timeout(timeout_s):
                await self._call.write(pb.QueryRequest(function=function, request_id=rid))
                reply = await future
        finally:
            self._pending.pop(rid, None)
        if reply.error:
            raise ValueError(reply.error)
        return wire.query_result(reply)

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _redirect(exc: aio.AioRpcError) -> NotMaster | None:
    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    master = None
    for key, value in exc.trailing_metadata() or ():
        if key == MASTER_HEADER:
            master = value if isinstance(value, str) else value.decode()
    return NotMaster(master or None)


class Channels:
    """One ``ControlClient`` per peer address, created on first use; bounded. Creating one
    closes those of addresses ``live()`` no longer names (a peer that left, or restarted on
    another port), and past ``max_channels`` the least recently used: a channel holds a socket
    and a reconnect timer, and peers come and go for as long as the node runs."""

    def __init__(
        self,
        key: bytes | None,
        *,
        live: Callable[[], Collection[str]] | None = None,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self._key = key
        self._live = live
        self._max = max_channels
        self._clients: OrderedDict[str, ControlClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, address: str) -> ControlClient:
        client = self._clients.get(address)
        if client is not None:
            self._clients.move_to_end(address)
            return client
        if self._live is not None:
            self.retain(self._live())
        client = self._clients[address] = ControlClient(address, key=self._key)
        while len(self._clients) > self._max:
            self._evict(next(iter(self._clients)))
        return client

    def retain(self, addresses: Collection[str]) -> None:
        """Closes the channels to every address not in ``addresses``."""
        for address in [a for a in self._clients if a not in addresses]:
            self._evict(address)

    def __len__(self) -> int:
        return len(self._clients)

    def _evict(self, address: str) -> None:
        self.close_later(self._clients.pop(address).close())

    def close_later(self, closing: Coroutine[Any, Any, None]) -> None:
        """Runs ``closing`` (a connection's close) in the background; ``close()`` waits for
        it. For callers on the request path, which must not wait for a peer's goodbye."""
        task = asyncio.get_running_loop().create_task(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients, self._clients = self._clients, OrderedDict()
        for client in clients.values():
            await client.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def backoff_delays(initial_s: float, max_s: float) -> Callable[[int], float]:
    """Attempt n (1-based) waits ``initial_s * 2**(n-1)``, capped at ``max_s``."""
    return lambda attempt: min(max_s, initial_s * 2 ** min(max(0, attempt - 1), 32))
