"""Handover (SPEC 6.2) over real gRPC on loopback: the target's sink gets the whole table."""

from __future__ import annotations

import time

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.server import ControlServer
from tierfaas.control.table import Snapshot
from tierfaas.control.transport import ControlClient

KEY = bytes(range(32))


def table_of(functions: int) -> Snapshot:
    route = NodeEndpoint("n1", 101, None, None)
    return Snapshot("lineage", 7, {f"f{i:06d}": (route,) for i in range(functions)})


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
        reply = await client.handover(table_of(100), 2, "old")
        assert not reply.ready and "takes no handover" in reply.error  # no sink yet
        server.on_handover = sink
        table = table_of(SNAPSHOT_PART_CHANGES + 10)  # two messages
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
