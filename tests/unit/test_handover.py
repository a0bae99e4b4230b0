"""Handover (SPEC 6.2): the whole table in checked parts (the gRPC call is tested in
tests/integration/test_handover_grpc.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import handover
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.table import Snapshot


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
