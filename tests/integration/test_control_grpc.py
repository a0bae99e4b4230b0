"""The control plane's gRPC shell in one process: a master and a replica server on 127.0.0.x,
real sockets, fake members (TableBackend).

All tests share one event loop: grpc.aio binds its poller to the first loop it meets, and a
channel or server collected after its loop closed hangs or warns at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # type: ignore[import-untyped]

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import Write
from tierfaas.control.auth import call_metadata, credential
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import AUTH_HEADER, MASTER_HEADER, SNAPSHOT_PART_CHANGES
from tierfaas.control.lane import LaneError, QueryLaneClient
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.rpc import SERVICE, method_path
from tierfaas.control.server import ControlServer, Limits
from tierfaas.control.table import Change, Delta, Op, Snapshot, Update
from tierfaas.control.transport import Channels, ControlClient, NotMaster
from tierfaas.control.write_queue import WriteQueue
from tierfaas.runtime import idle_summary, keepalive
from tierfaas.runtime.events import FunctionCold, FunctionWarm
from tierfaas.testing.wait import eventually_async

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = bytes(range(32))
wire_parts = SNAPSHOT_PART_CHANGES
MEMBERS = {
    n: NodeEndpoint(n, 7, Address("127.0.0.1", 9000 + i), None)
    for i, n in enumerate(["w1", "w2", "w3"])
}


async def eventually(check: Callable[[], bool]) -> None:
    await eventually_async(check, 3.0, interval=0.005)


@dataclass
class Cluster:
    master: TableBackend
    master_server: ControlServer
    replica: TableBackend
    replica_server: ControlServer
    channels: Channels

    @property
    def master_rpc(self) -> str:
        assert self.master_server.address is not None
        return str(self.master_server.address)

    @property
    def replica_rpc(self) -> str:
        assert self.replica_server.address is not None
        return str(self.replica_server.address)


@pytest_asyncio.fixture(loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    master = TableBackend(MEMBERS.get, time.monotonic, master=True, window_s=0.02)
    assert master.hub is not None
    flusher = asyncio.get_running_loop().create_task(master.hub.run())
    master_server = ControlServer(master, bind=Address("127.0.0.2", 0), key=KEY, node="m")
    await master_server.start()
    replica = TableBackend(
        MEMBERS.get, time.monotonic, master=False, master_rpc=str(master_server.address)
    )
    replica_server = ControlServer(
        replica,
        bind=Address("127.0.0.3", 0),
        key=KEY,
        node="r",
        lane=Address("127.0.0.3", 0),
        limits=Limits(max_message_bytes=64 * 1024, max_routes=100),
    )
    await replica_server.start()
    channels = Channels(KEY)
    cluster = Cluster(master, master_server, replica, replica_server, channels)
    try:
        yield cluster
    finally:
        flusher.cancel()
        await channels.close()
        await cluster.replica_server.stop(0)
        await cluster.master_server.stop(0)


def writes(op: Op, node: str, *functions: str) -> list[Write]:
    return [Write(op, f, node) for f in functions]


async def test_replica_streams_snapshot_then_deltas_and_resumes_after_a_drop(
    cluster: Cluster,
) -> None:
    client = cluster.channels.get(cluster.master_rpc)
    await client.register(writes(Op.ADD, "w1", "f", "g"))
    await eventually(lambda: cluster.master.position().version == 1)
    seen: list[Update] = []
    replicator = Replicator(
        cluster.replica.copy,
        master=lambda: cluster.master_rpc,
        channels=cluster.channels,
        replica="r",
        initial_backoff_s=0.01,
        on_update=lambda u, o: seen.append(u),
    )
    replicator.start()
    try:
        await eventually(lambda: cluster.replica.copy.version == 1)
        await client.register(writes(Op.ADD, "w2", "f"))
        await client.unregister(writes(Op.REMOVE, "w1", "g"))
        await eventually(lambda: cluster.replica.copy.version == cluster.master.position().version)
        assert isinstance(seen[0], Snapshot) and all(isinstance(u, Delta) for u in seen[1:])
        # Drop the stream: the master's gRPC server goes away (the table stays) and comes back.
        address = cluster.master_server.address
        assert address is not None
        await cluster.master_server.stop(0)
        before, version = len(seen), cluster.master.position().version
        await cluster.master.apply_writes(writes(Op.ADD, "w3", "h"))  # written while down
        await eventually(lambda: cluster.master.position().version == version + 1)
        cluster.master_server = ControlServer(cluster.master, bind=address, key=KEY)
        await cluster.master_server.start()
        await cluster.master.apply_writes(writes(Op.ADD, "w3", "k"))
        await eventually(lambda: cluster.replica.copy.version == cluster.master.position().version)
        resumed = seen[before:]
        assert resumed and all(isinstance(u, Delta) for u in resumed)  # no snapshot needed
        assert replicator.subscriptions >= 2
        assert cluster.replica.copy.table.as_dict() == cluster.master.hub.table.as_dict()  # type: ignore[union-attr]
        assert [r.name for r in cluster.replica.query("f").routes] == ["w1", "w2"]
    finally:
        await replicator.stop()


async def test_a_replica_too_far_behind_gets_a_snapshot() -> None:
    master = TableBackend(MEMBERS.get, time.monotonic, master=True, window_s=0)
    assert master.hub is not None
    updates = master.subscribe(0, "")
    first = await anext(updates)
    assert isinstance(first, Snapshot)
    for i in range(300):  # over the subscriber's queue bound of 256 deltas
        await master.apply_writes(writes(Op.ADD, "w1", f"f{i}"))
        master.hub.flush()
    again = await anext(updates)
    assert isinstance(again, Snapshot) and again.version == 300
    copy = ReplicaCopy()
    assert copy.apply(first) is Outcome.APPLIED and copy.apply(again) is Outcome.APPLIED
    assert len(copy.table) == 300
    await updates.aclose()  # type: ignore[attr-defined]
    assert master.hub.subscribers == 0


async def test_non_master_redirects_writes_and_the_write_queue_follows(cluster: Cluster) -> None:
    replica_client = cluster.channels.get(cluster.replica_rpc)
    with pytest.raises(NotMaster) as info:
        await replica_client.register(writes(Op.ADD, "w1", "f"))
    assert info.value.master == cluster.master_rpc
    # Raw status and trailer, as any gRPC client sees them.
    call = replica_client.channel.unary_unary(method_path("Announce"))
    with pytest.raises(aio.AioRpcError) as raw:
        await call(pb.AnnounceRequest(node="w1").SerializeToString(), metadata=call_metadata(KEY))
    assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (MASTER_HEADER, cluster.master_rpc) in tuple(raw.value.trailing_metadata() or ())

    queue = WriteQueue(
        "w2", 0, master=lambda: cluster.replica_rpc, channels=cluster.channels
    )  # a stale view of the topology: it names the replica
    queue.start()
    try:
        queue.on_event(FunctionWarm("f"))
        queue.on_event(FunctionWarm("g"))
        queue.on_event(FunctionCold("g"))  # warm then cold before sending: sent once, as cold
        await queue.flushed()
        await eventually(lambda: cluster.master.position().version >= 1)
        assert [r.name for r in cluster.master.query("f").routes] == ["w2"]
        assert cluster.master.query("g").routes == []
        queue.announce(["h"])
        await queue.flushed()
        await eventually(lambda: [r.name for r in cluster.master.query("h").routes] == ["w2"])
        assert cluster.master.query("f").routes == []
    finally:
        await queue.stop()


async def test_an_idle_history_goes_with_the_unregister_and_comes_back_to_the_next_register(
    cluster: Cluster,
) -> None:
    tracker = keepalive.IdleTracker()
    for i in range(12):
        tracker.arrived(i * 60.0)
        tracker.ended(i * 60.0 + 1.0)
    history = idle_summary.encode(tracker.summary(now=11 * 60.0 + 1.0))
    w1 = WriteQueue("w1", 0, master=lambda: cluster.master_rpc, channels=cluster.channels)
    w2 = WriteQueue("w2", 0, master=lambda: cluster.master_rpc, channels=cluster.channels)
    adopted: list[tuple[str, bytes]] = []
    w2.on_history = lambda function, data: adopted.append((function, data))
    w1.start()
    w2.start()
    try:
        w1.on_event(FunctionWarm("timer"))
        await w1.flushed()
        assert w1.master_keeps_histories  # the node may hand its history off
        w1.on_event(FunctionCold("timer", history))
        await w1.flushed()
        assert cluster.master.histories is not None and "timer" in cluster.master.histories
        w2.on_event(FunctionWarm("timer"))
        await w2.flushed()
        ((function, data),) = adopted
        summary = keepalive.decode_summary(data)
        assert function == "timer" and summary.histogram == tracker.summary(0.0).histogram
        assert summary.ended_ago_s is not None and 0.0 < summary.ended_ago_s < 3.0  # aged
        assert "timer" not in cluster.master.histories
        # Garbage in an Unregister: the pair is applied, the history refused, the server serves.
        refused = cluster.master.histories.refused
        client = cluster.channels.get(cluster.master_rpc)
        reply = await client.unregister([Write(Op.REMOVE, "timer", "w2", history=b"\x93junk")])
        assert reply.accepted == 1 and cluster.master.histories.refused == refused + 1
        await eventually(lambda: cluster.master.query("timer").routes == [])
    finally:
        await w1.stop()
        await w2.stop()


async def test_a_run_the_master_dropped_is_announced_again_over_grpc(cluster: Cluster) -> None:
    replica_client = cluster.channels.get(cluster.replica_rpc)
    with pytest.raises(NotMaster) as info:
        await replica_client.digest("w3", 7)  # no copy yet: ask the master
    assert info.value.master == cluster.master_rpc
    replicator = Replicator(
        cluster.replica.copy, master=lambda: cluster.master_rpc, channels=cluster.channels
    )
    replicator.start()
    queue = WriteQueue(
        "w3", 7, master=lambda: cluster.master_rpc, channels=cluster.channels,
        replica=lambda: cluster.replica_rpc, digest_period_s=0.1, digest_retry_s=0.05,
    )  # fmt: skip
    queue.start()
    try:
        queue.warm("entropy")
        await queue.flushed()
        await eventually(lambda: [r.name for r in cluster.master.query("entropy").routes] == ["w3"])
        await eventually(lambda: cluster.replica.copy.version == cluster.master.position().version)
        view = await replica_client.digest("w3", 7)
        assert view.copy and view.alive and view.digest.count == 1
        hub = cluster.master.hub
        assert hub is not None
        hub.batcher.drop_node("w3", 7)  # declared dead, and back with the same run
        hub.flush()
        assert cluster.master.query("entropy").routes == []
        await eventually(lambda: [r.name for r in cluster.master.query("entropy").routes] == ["w3"])
        await eventually(
            lambda: [r.name for r in cluster.replica.query("entropy").routes] == ["w3"]
        )
        assert queue.repairs >= 1
    finally:
        await queue.stop()
        await replicator.stop()


async def test_write_queue_retries_with_backoff_while_the_master_is_unreachable() -> None:
    delays: list[float] = []
    channels = Channels(KEY)

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    queue = WriteQueue(
        "w1",
        0,
        master=lambda: "127.0.0.4:1",  # nothing listens there
        channels=channels,
        initial_backoff_s=0.01,
        max_backoff_s=0.04,
        sleep=sleep,
    )
    queue.start()
    try:
        queue.warm("f")
        await eventually(lambda: len(delays) >= 4)
        assert delays[:4] == [0.01, 0.02, 0.04, 0.04]
        assert queue.failures >= 4
    finally:
        await queue.stop()
        await channels.close()
    assert queue.pending == 1  # kept for the next attempt


async def test_missing_or_wrong_credential_is_refused(cluster: Cluster) -> None:
    for key in (None, b"x" * 32):
        client = ControlClient(cluster.master_rpc, key=key)
        try:
            for attempt in (
                client.register(writes(Op.ADD, "w1", "f")),
                client.query("f"),
                client.info(),
            ):
                with pytest.raises(aio.AioRpcError) as info:
                    await attempt
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as info:
                await anext(client.subscribe(0, ""))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await client.close()
    assert cluster.master_server.auth.refused == 8
    assert cluster.master.position().version == 0  # nothing was written
    lane = cluster.replica_server.lane
    assert lane is not None and lane.address is not None
    stranger = QueryLaneClient(lane.address, key=b"y" * 32)
    with pytest.raises(LaneError):
        await stranger.query("f")
    await stranger.close()
    assert lane.refused == 1


async def test_garbage_and_oversized_requests_are_invalid_and_the_server_keeps_serving(
    cluster: Cluster,
) -> None:
    client = cluster.channels.get(cluster.replica_rpc)
    md = call_metadata(KEY)
    raw = client.channel.unary_unary(method_path("Register"))
    query = client.channel.unary_unary(method_path("Query"))
    bad_name = pb.QueryRequest(function="../etc/passwd").SerializeToString()
    too_many = pb.RegisterRequest(routes=[pb.Route(function="f", node="w1")] * 101)
    oversized = pb.RegisterRequest(routes=[pb.Route(function="f" * 60, node="w" * 60)] * 600)
    for call, body in (
        (raw, b"\xff\xff\xff\xff garbage"),
        (query, b"\x0a\x05\xff\xfe\xfd\xfc\xfb"),  # field 1 with invalid UTF-8
        (query, bad_name),
        (raw, too_many.SerializeToString()),
        (raw, oversized.SerializeToString()),  # over 64 KiB
    ):
        with pytest.raises(aio.AioRpcError) as info:
            await call(body, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert (await client.info()).node == "r"
    # A subscriber's name ends up in the master's log: a forged one must not write lines.
    master = cluster.channels.get(str(cluster.master_server.address))
    subscribe = master.channel.unary_stream(method_path("Subscribe"))
    forged = pb.SubscribeRequest(replica="r\nCRITICAL fake log line").SerializeToString()
    with pytest.raises(aio.AioRpcError) as info:
        async for _ in subscribe(forged, metadata=md):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream = client.query_stream()
    try:
        assert (await stream.query("f")).routes == []
        with pytest.raises(ValueError):
            await stream.query("bad name")
    finally:
        await stream.close()


async def test_query_over_grpc_the_stream_and_the_lane_agree(cluster: Cluster) -> None:
    replicator = Replicator(
        cluster.replica.copy, master=lambda: cluster.master_rpc, channels=cluster.channels
    )
    replicator.start()
    try:
        await cluster.channels.get(cluster.master_rpc).register(writes(Op.ADD, "w1", "f"))
        await eventually(lambda: cluster.replica.copy.version == 1)
        client = cluster.channels.get(cluster.replica_rpc)
        info = await client.info()
        assert not info.master and info.master_rpc == cluster.master_rpc and info.version == 1
        lane = QueryLaneClient(Address.parse(info.query_lane), key=KEY)
        stream = client.query_stream()
        try:
            unary = await client.query("f")
            streamed = await stream.query("f")
            pipelined = await asyncio.gather(*(lane.query("f") for _ in range(50)))
            assert unary == streamed == pipelined[0] == pipelined[-1]
            assert unary.version == 1 and unary.routes == [MEMBERS["w1"]]
            with pytest.raises(LaneError):
                await lane.query("not/valid")
            assert (await lane.query("f")).routes == [MEMBERS["w1"]]  # the lane still serves
        finally:
            await stream.close()
            await lane.close()
    finally:
        await replicator.stop()


async def test_reflection_lists_the_service(cluster: Cluster) -> None:
    channel = cluster.channels.get(cluster.replica_rpc).channel
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]), metadata=((AUTH_HEADER, credential(KEY)),))
    services = []
    async for reply in call:
        services = [s.name for s in reply.list_services_response.service]
        break
    call.cancel()
    assert SERVICE == "tierfaas.v1.Control" and SERVICE in services


async def test_a_snapshot_over_one_message_is_sent_in_parts(cluster: Cluster) -> None:
    hub = cluster.master.hub
    assert hub is not None
    hub.table.apply(
        Change(Op.ADD, f"fn-{i}", MEMBERS[f"w{1 + i % 3}"]) for i in range(wire_parts * 2 + 5)
    )
    stream = cluster.channels.get(cluster.master_rpc).subscribe(0, "")
    snapshot = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert isinstance(snapshot, Snapshot) and snapshot.version == hub.table.version
    assert sum(len(r) for r in snapshot.routes.values()) == len(hub.table)
    assert len(wire.update_to_pb(snapshot)) == 3


class FreezingProxy:
    """A TCP proxy that goes silent as a partition does: while frozen, bytes in either
    direction are held and the connections stay open. A connection that held bytes through
    the cut stays stalled ``lag_s`` after the heal, as TCP's retransmission backoff keeps it
    after a real one (seconds, after a cut of 20 s); a new connection flows at once."""

    def __init__(self, target: Address, lag_s: float) -> None:
        self.target = target
        self.lag_s = lag_s
        self.frozen = False
        self.healed_at = 0.0
        self.server: asyncio.Server | None = None
        self.accepted = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def heal(self) -> None:
        self.frozen = False
        self.healed_at = time.monotonic()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        cut = [False]  # this connection had bytes in flight during the cut

        def blocked() -> bool:
            return self.frozen or (cut[0] and time.monotonic() < self.healed_at + self.lag_s)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def deliver() -> None:
                while (data := await queue.get()) is not None:
                    while blocked():
                        cut[0] = True
                        await asyncio.sleep(0.02)
                    dst.write(data)
                dst.close()

            delivery = asyncio.create_task(deliver())
            while data := await src.read(65536):
                queue.put_nowait(data)
            queue.put_nowait(None)
            await delivery

        with contextlib.suppress(OSError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_connection_silenced_by_a_partition_is_replaced_once_it_heals(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without keep-alive pings the channel keeps the silenced connection, and every call made
    # after the heal waits behind it until TCP retransmits (here: lag_s).
    from tierfaas.control import transport

    monkeypatch.setattr(transport, "KEEPALIVE_TIME_MS", 200)
    monkeypatch.setattr(transport, "KEEPALIVE_TIMEOUT_MS", 300)
    assert cluster.master_server.address is not None
    proxy = FreezingProxy(cluster.master_server.address, lag_s=3.0)
    client = ControlClient(await proxy.start(), key=KEY)
    try:
        await client.info(timeout_s=2.0)
        proxy.frozen = True
        with pytest.raises(aio.AioRpcError):
            await client.info(timeout_s=0.5)
        await asyncio.sleep(1.0)  # the pings go unanswered: the connection is dropped
        proxy.heal()
        while True:
            try:
                await client.info(timeout_s=0.3)
                break
            except aio.AioRpcError:
                assert time.monotonic() - proxy.healed_at < 2.0, "still on the cut connection"
        assert proxy.accepted >= 2  # a new connection, not the silenced one
    finally:
        await client.close()
        await proxy.close()
