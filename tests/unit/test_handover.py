"""Handover (SPEC 6.2): the whole table in checked parts, over real gRPC on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import handover
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.server import ControlServer
from tierfaas.control.table import Snapshot
from tierfaas.control.transport import ControlClient

KEY = bytes(range(32))


def big_table(functions: int) -> Snapshot:
    nodes = [NodeEndpoint(f"n{i}", 100 + i, None, None) for i in range(3)]
    routes = {f"f{i:06d}": tuple(nodes[: 1 + i % 3]) for i in range(functions)}
    return Snapshot("lineage", 7, routes)


async def _stream(messages: list[pb.HandoverChunk]) -> AsyncIterator[pb.HandoverChunk]:
    for message in messages:
        yield message


async def test_a_table_larger_than_one_message_arrives_whole() -> None:
    table = big_table(SNAPSHOT_PART_CHANGES)  # about 2 parts of routes
    messages = handover.chunks(table, 3, "old")
    assert len(messages) > 1 and all(not m.checksum for m in messages[:-1])
    got, generation, sender = await handover.receive(_stream(messages))
    assert (generation, sender) == (3, "old")
    assert {f: set(r) for f, r in got.routes.items()} == {
        f: set(r) for f, r in table.routes.items()
    }


async def test_a_changed_or_missing_part_is_refused() -> None:
    messages = handover.chunks(big_table(SNAPSHOT_PART_CHANGES), 1, "old")
    altered = [pb.HandoverChunk.FromString(m.SerializeToString()) for m in messages]
    altered[0].part.changes[0].route.epoch += 1
    with pytest.raises(handover.HandoverError, match="checksum"):
        await handover.receive(_stream(altered))
    with pytest.raises(handover.HandoverError, match="ended before"):
        await handover.receive(_stream(messages[:-1]))


async def test_the_checksum_ignores_order() -> None:
    a = NodeEndpoint("a", 1, None, None)
    b = NodeEndpoint("b", 2, None, None)
    assert handover.table_checksum({"f": (a, b), "g": (a,)}) == handover.table_checksum(
        {"g": (a,), "f": (b, a)}
    )


async def test_handover_over_grpc_reaches_the_target_sink() -> None:
    received: list[tuple[int, int, str]] = []

    async def sink(snapshot: Snapshot, generation: int, sender: str) -> int:
        routes = sum(len(r) for r in snapshot.routes.values())
        received.append((routes, generation, sender))
        return routes

    backend = TableBackend(lambda _: None, time.monotonic, master=False)
    server = ControlServer(backend, bind=Address("127.0.0.2", 0), key=KEY, node="target")
    await server.start()
    client = ControlClient(str(server.address), key=KEY)
    try:
        reply = await client.handover(big_table(100), 2, "old")
        assert not reply.ready and "takes no handover" in reply.error  # no sink yet
        server.on_handover = sink
        table = big_table(SNAPSHOT_PART_CHANGES + 10)
        total = sum(len(r) for r in table.routes.values())
        reply = await client.handover(table, 2, "old")
        assert reply.ready and reply.routes == total
        assert received == [(total, 2, "old")]
        wrong = ControlClient(str(server.address), key=bytes(32))
        with pytest.raises(Exception, match="UNAUTHENTICATED"):
            await wrong.handover(table, 2, "intruder")
        await wrong.close()
    finally:
        await client.close()
        await server.stop()
