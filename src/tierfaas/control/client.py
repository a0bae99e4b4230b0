"""The caller's side: ``ControlClient`` (one channel per peer), ``WriteQueue`` (the runtime's
warm/cold events -> batched Register/Unregister to the master) and ``Replicator`` (a
replica's Subscribe loop).

``WriteQueue`` guarantees that reporting an event never blocks or fails the request that
caused it: ``warm()``/``cold()`` only record the function's latest state. One background task
sends what is pending as one Register and one Unregister call; while a call is in flight (a
slow master) new events coalesce into the next call, and a function that went warm then cold
meanwhile is sent once, as its final state. A failed call is retried with exponential
backoff; a ``FAILED_PRECONDITION`` with ``x-tierfaas-master`` redirects to the named master at
once. The table is soft state: if the node's process dies with writes pending, the master
drops its routes when gossip declares it dead, and ``announce()`` after a master change
resends the whole warm set.

``Replicator`` keeps a ``ReplicaCopy`` fed: it subscribes from the copy's resume point,
applies each update, and on a gap, a stream drop or an error re-subscribes (after a backoff
if the master was unreachable), so a dropped stream resumes without losing a delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc import aio

from tierfaas.control import handover, wire
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import QueryResult, Write
from tierfaas.control.auth import call_metadata
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.server import MASTER_HEADER, SERVICE, MiB
from tierfaas.control.table import Op, Snapshot, Update
from tierfaas.runtime.events import FunctionCold, FunctionWarm, RuntimeEvent

log = logging.getLogger("tierfaas.control.client")
Sleep = Callable[[float], Coroutine[Any, Any, None]]


class NotMaster(Exception):
    """The peer is not the master; ``master`` is its hint (None if it knows none)."""

    def __init__(self, master: str | None) -> None:
        super().__init__(f"not the master; try {master or 'later'}")
        self.master = master


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


# HTTP/2 pings between nodes (see ControlClient). The timeout rides out a few lost packets
# (30 % loss still answers a ping within it almost always), so only a cut closes a connection.
KEEPALIVE_TIME_MS = 2000
KEEPALIVE_TIMEOUT_MS = 5000


class ControlClient:
    """A channel to one peer's control API, with the cluster credential on every call."""

    def __init__(
        self, address: str, *, key: bytes | None, max_message_bytes: int = 8 * MiB
    ) -> None:
        self.address = address
        self._metadata = call_metadata(key)
        self.channel = aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # Peers restart in about a second; gRPC's default first retry after 1 s (and
                # up to 120 s later) would leave a replica stale long after its master is back.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
                # A peer cut off by a partition sends no RST: without pings the connection
                # looks open for as long as the cut lasts, and after the heal its calls wait
                # for TCP's retransmission backoff (seconds after a 20 s cut) before the new
                # master hears a single Announce. A ping unanswered for KEEPALIVE_TIMEOUT_MS
                # closes it; the channel then reconnects within the backoff above.
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                # grpcio 1.85 times the ping out with this one (keepalive_timeout_ms alone
                # left a ping unanswered for as long as the cut lasted).
                ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ],
        )
        ch = self.channel
        self._register = ch.unary_unary(
            _method("Register"), pb.RegisterRequest.SerializeToString, pb.WriteReply.FromString
        )
        self._unregister = ch.unary_unary(
            _method("Unregister"), pb.UnregisterRequest.SerializeToString, pb.WriteReply.FromString
        )
        self._announce = ch.unary_unary(
            _method("Announce"), pb.AnnounceRequest.SerializeToString, pb.WriteReply.FromString
        )
        self._query = ch.unary_unary(
            _method("Query"), pb.QueryRequest.SerializeToString, pb.QueryReply.FromString
        )
        self._info = ch.unary_unary(
            _method("Info"), pb.InfoRequest.SerializeToString, pb.InfoReply.FromString
        )
        self._subscribe = ch.unary_stream(
            _method("Subscribe"), pb.SubscribeRequest.SerializeToString, pb.TableUpdate.FromString
        )
        self._query_stream = ch.stream_stream(
            _method("QueryStream"), pb.QueryRequest.SerializeToString, pb.QueryReply.FromString
        )
        self._handover = ch.stream_unary(
            _method("Handover"), pb.HandoverChunk.SerializeToString, pb.HandoverReply.FromString
        )

    async def close(self) -> None:
        await self.channel.close()

    async def _write(self, call: Any, request: Any, timeout_s: float) -> pb.WriteReply:
        try:
            reply: pb.WriteReply = await call(request, metadata=self._metadata, timeout=timeout_s)
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        return reply

    async def register(self, writes: Sequence[Write], timeout_s: float = 2.0) -> pb.WriteReply:
        """Sends ADD pairs (``op`` is ignored); raises ``NotMaster`` or ``aio.AioRpcError``."""
        request = pb.RegisterRequest(routes=wire.writes_to_pb(writes))
        return await self._write(self._register, request, timeout_s)

    async def unregister(self, writes: Sequence[Write], timeout_s: float = 2.0) -> pb.WriteReply:
        request = pb.UnregisterRequest(routes=wire.writes_to_pb(writes))
        return await self._write(self._unregister, request, timeout_s)

    async def announce(
        self, node: str, epoch: int, functions: Sequence[str], timeout_s: float = 5.0
    ) -> pb.WriteReply:
        request = pb.AnnounceRequest(node=node, epoch=epoch, functions=list(functions))
        return await self._write(self._announce, request, timeout_s)

    async def query(self, function: str, timeout_s: float = 1.0) -> QueryResult:
        reply: pb.QueryReply = await self._query(
            pb.QueryRequest(function=function), metadata=self._metadata, timeout=timeout_s
        )
        return wire.query_result(reply)

    async def info(self, timeout_s: float = 1.0) -> pb.InfoReply:
        reply: pb.InfoReply = await self._info(
            pb.InfoRequest(), metadata=self._metadata, timeout=timeout_s
        )
        return reply

    async def subscribe(
        self, from_version: int, lineage: str, replica: str = ""
    ) -> AsyncIterator[Update]:
        """The master's stream of updates; raises ``NotMaster`` or ``aio.AioRpcError`` when it
        fails, ``wire.BadMessage`` on an invalid update."""
        request = pb.SubscribeRequest(from_version=from_version, lineage=lineage, replica=replica)
        call = self._subscribe(request, metadata=self._metadata)
        parts = wire.SnapshotAssembler()
        try:
            async for message in call:
                update = parts.add(message)
                if update is not None:
                    yield update
        except aio.AioRpcError as exc:
            raise _redirect(exc) or exc from None
        finally:
            call.cancel()

    async def handover(
        self, snapshot: Snapshot, generation: int, from_node: str, timeout_s: float = 30.0
    ) -> pb.HandoverReply:
        """Sends the whole table to this peer, which takes over as master of ``generation``
        once it has loaded it (``reply.ready``); raises ``aio.AioRpcError`` if unreachable."""
        messages = handover.chunks(snapshot, generation, from_node)
        reply: pb.HandoverReply = await self._handover(
            iter(messages), metadata=self._metadata, timeout=timeout_s
        )
        return reply

    def query_stream(self) -> QueryStream:
        """A long-lived bidirectional stream of pipelined queries (see ``QueryStream``)."""
        return QueryStream(self._query_stream(metadata=self._metadata))


class QueryStream:
    """Queries over one open QueryStream call, matched to replies by request id."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._pending: dict[int, asyncio.Future[pb.QueryReply]] = {}
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        error: BaseException = ConnectionError("the query stream ended")
        try:
            while True:
                reply = await self._call.read()
                if reply is aio.EOF:
                    break
                future = self._pending.pop(reply.request_id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except aio.AioRpcError as exc:
            error = exc
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def query(self, function: str) -> QueryResult:
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[pb.QueryReply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        await self._call.write(pb.QueryRequest(function=function, request_id=rid))
        reply = await future
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
    """One ``ControlClient`` per peer address, created on first use."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._clients: dict[str, ControlClient] = {}

    def get(self, address: str) -> ControlClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = ControlClient(address, key=self._key)
        return client

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


def backoff_delays(initial_s: float, max_s: float) -> Callable[[int], float]:
    """Attempt n (1-based) waits ``initial_s * 2**(n-1)``, capped at ``max_s``."""
    return lambda attempt: min(max_s, initial_s * 2 ** min(max(0, attempt - 1), 32))


class WriteQueue:
    """This node's Register/Unregister stream to the master (see the module docstring).

    ``master`` returns the master's control address as the node's topology sees it (None if
    unknown). ``max_batch`` bounds the pairs per call; ``initial_backoff_s``/``max_backoff_s``
    bound retries; ``sleep`` is injectable for tests."""

    def __init__(
        self,
        node: str,
        epoch: int,
        *,
        master: Callable[[], str | None],
        channels: Channels,
        max_batch: int = 4096,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.node, self.epoch = node, epoch
        self._master = master
        self._channels = channels
        self._max_batch = max_batch
        self._delay = backoff_delays(initial_backoff_s, max_backoff_s)
        self._sleep = sleep
        self._pending: dict[str, Op] = {}
        self._announce: frozenset[str] | None = None
        self._redirect: tuple[str | None, str] | None = None  # (for master, go to)
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()  # an announce not yet taken: cuts a backoff short
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failures = 0

    # -- the caller's side: never blocks -----------------------------------------------------

    def on_event(self, event: RuntimeEvent) -> None:
        """An ``EventListener`` for the runtime."""
        if isinstance(event, FunctionWarm):
            self.warm(event.function)
        elif isinstance(event, FunctionCold):
            self.cold(event.function)

    def warm(self, function: str) -> None:
        self._pending[function] = Op.ADD
        self._wake.set()

    def cold(self, function: str) -> None:
        self._pending[function] = Op.REMOVE
        self._wake.set()

    def announce(self, functions: Sequence[str] | frozenset[str]) -> None:
        """Sends the whole warm set (after a master change); replaces pending writes."""
        self._announce = frozenset(functions)
        self._pending.clear()
        self._wake.set()
        self._kick.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + (self._announce is not None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="write-queue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flushed(self, timeout_s: float = 5.0) -> None:
        """Waits until nothing is pending or in flight (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self.pending or self._wake.is_set() or self._in_flight:
                await asyncio.sleep(0.005)

    _in_flight = False

    def _target(self) -> str | None:
        master = self._master()
        if self._redirect is not None:
            if self._redirect[0] == master:
                return self._redirect[1]
            self._redirect = None  # the topology moved on: trust it again
        return master

    async def _run(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending or self._announce is not None:
                target = self._target()
                if self._kick.is_set():
                    attempt = 0  # a new master: the backoff earned against the old one ends
                taken = self._take()
                self._in_flight = True
                try:
                    if target is None:
                        raise ConnectionError("no master known")
                    await self._send(self._channels.get(target), *taken)
                    attempt = 0
                except NotMaster as exc:
                    self._restore(*taken)
                    followed = self._redirect is not None
                    if exc.master and exc.master != target:
                        self._redirect = (self._master(), exc.master)
                        if not followed:
                            continue  # redirected: retry there at once (once, no ping-pong)
                    attempt += 1
                    await self._backoff(attempt)
                except asyncio.CancelledError:
                    self._restore(*taken)  # kept for a later start()
                    raise
                except (aio.AioRpcError, ConnectionError) as exc:
                    self._restore(*taken)
                    self.failures += 1
                    attempt += 1
                    log.debug("writes to %s failed (%s); attempt %d", target, exc, attempt)
                    # A hint may name a master that is dead: a node not yet promoted still
                    # points at its predecessor. After a failure, trust the topology again.
                    self._redirect = None
                    await self._backoff(attempt)
                finally:
                    self._in_flight = False

    async def _backoff(self, attempt: int) -> None:
        """Waits before a retry. An announce (the master changed) cuts the wait short: the
        new master should learn this node's warm set now, not after a backoff of up to
        ``max_backoff_s`` earned against the dead one."""
        if self._kick.is_set():
            return
        sleep = asyncio.ensure_future(self._sleep(self._delay(attempt)))
        kick = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait((sleep, kick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            kick.cancel()

    def _take(self) -> tuple[frozenset[str] | None, dict[str, Op]]:
        announce, self._announce = self._announce, None
        if announce is not None:
            self._kick.clear()
        taken: dict[str, Op] = {}
        for function in list(self._pending)[: self._max_batch]:
            taken[function] = self._pending.pop(function)
        return announce, taken

    def _restore(self, announce: frozenset[str] | None, taken: dict[str, Op]) -> None:
        """Puts failed writes back, unless a newer write or announce replaced them."""
        if announce is not None and self._announce is None:
            # The pairs sent with the announce, then the writes made since, are newer than
            # the announced set: fold them in, in that order (dropping ``taken`` here lost
            # a warm function whenever an announce and a write failed together).
            warm = set(announce)
            for function, op in [*taken.items(), *self._pending.items()]:
                (warm.add if op is Op.ADD else warm.discard)(function)
            self._announce = frozenset(warm)
            self._pending.clear()
            return
        if self._announce is not None:
            return
        for function, op in taken.items():
            self._pending.setdefault(function, op)

    async def _send(
        self, client: ControlClient, announce: frozenset[str] | None, taken: dict[str, Op]
    ) -> None:
        if announce is not None:
            await client.announce(self.node, self.epoch, sorted(announce))
            self.sent += len(announce)
        adds = [Write(Op.ADD, f, self.node, self.epoch) for f, op in taken.items() if op is Op.ADD]
        removes = [Write(Op.REMOVE, f, self.node, self.epoch) for f, op in taken.items()]
        removes = [w for w in removes if taken[w.function] is Op.REMOVE]
        if adds:
            await client.register(adds)
        if removes:
            await client.unregister(removes)
        self.sent += len(adds) + len(removes)


class Replicator:
    """Feeds ``copy`` from the master's Subscribe stream until stopped."""

    def __init__(
        self,
        copy: ReplicaCopy,
        *,
        master: Callable[[], str | None],
        channels: Channels,
        replica: str = "",
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        on_update: Callable[[Update, Outcome], None] | None = None,
    ) -> None:
        self.copy = copy
        self._master = master
        self._channels = channels
        self._replica = replica
        self._delay = backoff_delays(initial_backoff_s, max_backoff_s)
        self._sleep = sleep
        self._on_update = on_update
        self._task: asyncio.Task[None] | None = None
        self.subscriptions = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="replicator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        attempt = 0
        while True:
            target = self._master()
            if target is None:
                attempt += 1
                await self._sleep(self._delay(attempt))
                continue
            version, lineage = self.copy.resume_point()
            self.subscriptions += 1
            try:
                stream = self._channels.get(target).subscribe(version, lineage, self._replica)
                async for update in stream:
                    attempt = 0
                    outcome = self.copy.apply(update)
                    if self._on_update is not None:
                        self._on_update(update, outcome)
                    if outcome is Outcome.GAP:
                        log.info("gap at version %d: re-subscribing", self.copy.version)
                        break
                else:
                    attempt += 1  # the stream ended (the master stepped down?)
                    await self._sleep(self._delay(attempt))
            except (NotMaster, aio.AioRpcError, wire.BadMessage) as exc:
                attempt += 1
                log.debug("subscription to %s failed: %s", target, exc)
                await self._sleep(self._delay(attempt))
