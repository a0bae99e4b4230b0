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
from tierfaas.control.table import Snapshot


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

    got, generation, _ = await handover.receive(stream())
    assert generation == 2 and set(got.routes) == {"f"}
    assert threads and threading.get_ident() not in threads
