"""Handover (SPEC 6.2) over real gRPC on loopback: the target's sink gets the whole table,
and the sender's term with it; a target that has seen a newer term refuses it (issue 17.3)."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_control_plane_suspect import Cluster, cluster  # noqa: F401
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import SNAPSHOT_PART_CHANGES
from tierfaas.control.handover import Received
from tierfaas.control.server import ControlServer
from tierfaas.control.table import Snapshot
from tierfaas.control.transport import ControlClient
from tierfaas.deploy.term import Term

KEY = bytes(range(32))


def table_of(functions: int) -> Snapshot:
    route = NodeEndpoint("n1", 101, None, None)
    return Snapshot("lineage", 7, {f"f{i:06d}": (route,) for i in range(functions)})


async def test_handover_over_grpc_reaches_the_target_sink() -> None:
    received: list[tuple[int, int, str, Term | None]] = []

    async def sink(handed: Received) -> int:
        routes = sum(len(r) for r in handed.snapshot.routes.values())
        received.append((routes, handed.generation, handed.sender, handed.term))
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
        assert received == [(total, 2, "old", None)]  # no term: a sender of an older release
        wrong = ControlClient(str(server.address), key=bytes(32))
        # One message: with two, the server's abort can overtake the client's second write,
        # which grpc then reports as INTERNAL instead of the server's status.
        with pytest.raises(Exception, match="UNAUTHENTICATED"):
            await wrong.handover(table_of(100), 2, "intruder")
        await wrong.close()
        assert len(received) == 1  # the intruder's table never reached the sink
        term = Term(1, 7, "old", "lineage-of-old")
        reply = await client.handover(table, 2, "old", term=term)
        assert reply.ready and received[-1] == (total, 2, "old", term)
    finally:
        await client.close()
        await server.stop()


async def test_a_target_that_has_seen_a_newer_term_refuses_the_handover(
    cluster: Cluster,  # noqa: F811
) -> None:
    await cluster.add("ab")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert a.plane.role == "master"
    taken: list[int] = []

    async def take_generation(generation: int) -> None:
        taken.append(generation)

    b.plane.on_generation = take_generation
    b.plane.server.on_handover = b.plane.take_handover
    registry_terms: list[Term | None] = [None]

    async def registry_term() -> Term | None:
        return registry_terms[-1]

    b.plane.registry_term = registry_term
    # b took a handover (or claimed, or read) term 0.5 earlier: the majority's master.
    b.plane.terms.see(Term(0, 5, "majority", "lineage-m"))
    reply = await a.plane.hand_over("b", 1, Term(0, 3, "a", "lineage-a"))
    assert not reply.ready and "older than term 0.5 (majority)" in reply.error
    # The registry holds a newer one still, which b has not seen otherwise.
    registry_terms.append(Term(0, 8, "n9", "lineage-9"))
    reply = await a.plane.hand_over("b", 1, Term(0, 6, "a", "lineage-a"))
    assert not reply.ready and "older than term 0.8 (n9)" in reply.error
    assert taken == []

    async def stalled() -> Term | None:
        raise TimeoutError("registry: no answer within 2 s")

    b.plane.registry_term = stalled  # fails closed: the sender tries again later
    reply = await a.plane.hand_over("b", 1, Term(0, 9, "a", "lineage-a"))
    assert not reply.ready and "cannot read the registry" in reply.error
    b.plane.registry_term = registry_term
    # An older release sends no term: the generation check only, as before terms travelled.
    reply = await a.plane.hand_over("b", 1)
    assert reply.ready and taken == [1]
    # The newest term b saw is the newest a handover or the registry showed it.
    assert b.plane.terms.newest == Term(0, 9, "a", "lineage-a")


async def test_a_sender_with_the_newest_term_hands_over(cluster: Cluster) -> None:  # noqa: F811
    await cluster.add("ab")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    taken: list[int] = []

    async def take_generation(generation: int) -> None:
        taken.append(generation)

    b.plane.on_generation = take_generation
    b.plane.server.on_handover = b.plane.take_handover
    b.plane.terms.see(Term(0, 5, "before", "lineage-x"))
    term = Term(1, 6, "a", a.plane.backend.position().lineage)
    reply = await a.plane.hand_over("b", 2, term)
    assert reply.ready and taken == [2]
    assert b.plane.terms.newest == term
