"""A handover's checksum is computed off the event loop (issue 17.5): a table of a million
routes takes about a second to hash, which the loop answering requests and gossip must not
wait through."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Mapping

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import handover
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.table import Change, Op, RoutingTable, Snapshot


async def test_the_receiver_hashes_the_table_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    table = Snapshot("l", 1, {"f": (NodeEndpoint("n1", 1, None, None),)})
    messages = handover.chunks(table, 2, "old")
    threads: list[int] = []
    checksum = handover.table_checksum

    def recording(routes: Mapping[str, Iterable[NodeEndpoint]]) -> str:
        threads.append(threading.get_ident())
        return checksum(routes)

    monkeypatch.setattr(handover, "table_checksum", recording)

    async def stream() -> AsyncIterator[pb.HandoverChunk]:
        for message in messages:
            yield message

    got, generation, _, _ = await handover.receive(stream())
    assert generation == 2 and set(got.routes) == {"f"}
    assert threads and threading.get_ident() not in threads


def endpoint(name: str, epoch: int = 1) -> NodeEndpoint:
    return NodeEndpoint(name, epoch, None, None)


async def test_the_sender_s_copy_is_patched_with_the_writes_made_during_it() -> None:
    table = RoutingTable("l", 0)
    table.apply([Change(Op.ADD, "a", endpoint("n1")), Change(Op.ADD, "b", endpoint("n1"))])
    table.apply([Change(Op.ADD, "c", endpoint("n2"))])

    def copy_while_writing() -> Snapshot:
        before = table.snapshot()  # the copy sees the table before these writes
        table.apply([Change(Op.REMOVE, "a", endpoint("n1")), Change(Op.ADD, "b", endpoint("n3"))])
        table.apply([Change(Op.ADD, "d", endpoint("n2"))])
        return before

    got = await handover.snapshot_off_loop(table, copy=copy_while_writing)
    want = table.snapshot()
    assert (got.lineage, got.version) == (want.lineage, want.version)
    assert {f: set(r) for f, r in got.routes.items()} == {f: set(r) for f, r in want.routes.items()}
    assert "a" not in got.routes and "d" in got.routes


async def test_a_copy_that_keeps_failing_is_made_on_the_loop() -> None:
    table = RoutingTable("l", 0)
    table.apply([Change(Op.ADD, "a", endpoint("n1"))])

    def resized() -> Snapshot:
        raise RuntimeError("dictionary changed size during iteration")

    got = await handover.snapshot_off_loop(table, copy=resized)
    assert got.version == table.version and set(got.routes) == {"a"}
