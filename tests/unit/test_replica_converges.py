"""A replica that misses part of the master's stream converges, with no anti-entropy of its own.

A Subscribe stream is ordered and reliable (HTTP/2 over TCP), so a replica can only miss a
delta when the stream breaks, or, in principle, through a bug that skips one: either way the
copy's version says so. A delta that does not fit on the copy is a gap (``ReplicaCopy``), and
a stream that ends is resubscribed; both resume from the copy's (version, lineage), which the
master answers with the missed deltas from its log (or a snapshot). These tests drop one delta
of a real ``TableHub`` stream and check the copy ends equal to the master's table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.backend import TableBackend
from tierfaas.control.replica_copy import ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.table import Delta, Update
from tierfaas.testing import FakeClock


class LossyStreams:
    """``Channels`` to an in-memory master whose first stream loses its ``lose``-th delta
    (and, with ``end``, ends right there, as a broken stream does)."""

    def __init__(self, backend: TableBackend, lose: int, *, end: bool) -> None:
        self.backend, self.lose, self.end = backend, lose, end
        self.subscriptions: list[tuple[int, str]] = []

    def get(self, address: str) -> LossyStreams:
        return self

    async def subscribe(
        self, version: int, lineage: str, replica: str = "", *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        self.subscriptions.append((version, lineage))
        first = len(self.subscriptions) == 1
        deltas = 0
        async for update in self.backend.subscribe(version, lineage, follows_forks=follows_forks):
            if first and isinstance(update, Delta):
                deltas += 1
                if deltas == self.lose:
                    if self.end:
                        return
                    continue
            yield update


def w(name: str) -> NodeEndpoint:
    return NodeEndpoint(name, 1, None, None)


async def scenario(end: bool) -> tuple[Any, Any, list[tuple[int, str]]]:
    clock = FakeClock()
    master = TableBackend({"a": w("a"), "b": w("b")}.get, clock, master=True)
    hub = master.hub
    assert hub is not None
    streams = LossyStreams(master, lose=2, end=end)
    copy = ReplicaCopy()
    replicator = Replicator(
        copy,
        master=lambda: "m:1",
        channels=streams,  # type: ignore[arg-type]
        sleep=clock.sleep,
    )
    replicator.start()
    await clock.run_for(0.01)
    for i, name in enumerate(["a", "b", "a"]):
        hub.batcher.register(f"f{i}", w(name))
        hub.flush()
        await clock.run_for(0.01)
    await clock.run_for(2.0)  # past any resubscription backoff
    await replicator.stop()
    return copy.table.as_dict(), hub.table.as_dict(), streams.subscriptions


def test_a_missed_delta_is_a_gap_at_the_next_one_and_the_replica_resumes_from_its_version() -> None:
    held, truth, subscriptions = asyncio.run(scenario(end=False))
    assert held == truth and len(truth) == 3
    assert len(subscriptions) == 2 and subscriptions[1][0] == 1  # resumed from version 1


def test_a_stream_that_breaks_after_a_lost_delta_is_resumed_with_it() -> None:
    held, truth, subscriptions = asyncio.run(scenario(end=True))
    assert held == truth and len(truth) == 3
    assert len(subscriptions) == 2 and subscriptions[1][0] == 1
