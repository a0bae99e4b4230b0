"""The router's candidates never name a run that this node's gossip suspects.

A node cut off by a partition is suspect for seconds before it is declared dead (in a
minority, with no one to confirm, for up to the whole suspicion timeout); a call forwarded
to it meanwhile hangs. It keeps its rank, but gets no forwards until it is alive again.
"""

from __future__ import annotations

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.plane import ControlPlane
from tierfaas.testing.membership import FakeNetwork
from tierfaas.testing.nodes import free_port


async def test_lookup_skips_a_suspect_run_until_it_is_alive_again() -> None:
    net = FakeNetwork()
    a = net.add("a", http=Address("127.0.0.1", 8001), rpc=Address("127.0.0.1", 9001))
    b = net.add("b", http=Address("127.0.0.1", 8002), rpc=Address("127.0.0.1", 9002))
    await a.start()
    await b.start()
    gone: list[str] = []
    plane = ControlPlane(
        a,
        name="a",
        rpc=Address("127.0.0.1", free_port()),
        lane=None,
        key=None,
        warm_functions=lambda: [],
        on_node_gone=gone.append,
    )
    await plane.start()
    try:
        plane.role = "master"
        hub = plane.backend.promote()
        hub.batcher.register("f", NodeEndpoint("b", b.epoch, b.local.http, b.local.rpc))
        hub.flush()
        assert [r.name for r in await plane.lookup("f")] == ["b"]

        net.suspect("b")
        await net.settle()
        assert await plane.lookup("f") == []
        assert gone == ["b"]  # the router drops its cached routes to b at once
        assert plane.routes_view()["routes"] == {"f": ["b"]}  # still in the table: only slow?

        net.recover("b")
        await net.settle()
        assert [r.name for r in await plane.lookup("f")] == ["b"]
    finally:
        await plane.stop()


async def test_an_empty_answer_from_the_replica_is_checked_with_the_master() -> None:
    # In a burst of first calls, the master has heard a registration (even one still in its
    # batch) before any replica: a worker about to start the function cold asks it too.
    net = FakeNetwork()
    ports = {n: free_port() for n in "mrw"}
    nodes = {
        n: net.add(n, http=Address("127.0.0.1", 8100 + i), rpc=Address("127.0.0.1", ports[n]))
        for i, n in enumerate("mrw")
    }
    for node in nodes.values():
        await node.start()
    planes = {
        n: ControlPlane(
            nodes[n],
            name=n,
            rpc=Address("127.0.0.1", ports[n]),
            lane=None,
            key=None,
            warm_functions=lambda: [],
            on_node_gone=lambda _: None,
        )
        for n in "mrw"
    }
    for plane in planes.values():
        await plane.start()
    try:
        master, replica, worker = planes["m"], planes["r"], planes["w"]
        master.role, replica.role, worker.role = "master", "replica", "worker"
        hub = master.backend.promote()
        for plane in planes.values():
            plane.master = "m"
        worker.my_replica = "r"
        m = nodes["m"]
        hub.batcher.register("f", NodeEndpoint("m", m.epoch, m.local.http, m.local.rpc))
        assert replica.local_routes("f") == []  # the replica has not heard of it
        assert [r.name for r in await worker.lookup("f")] == ["m"]  # pending at the master
        assert [r.name for r in await replica.lookup("f")] == ["m"]
        assert await worker.lookup("g") == []  # nowhere is still nowhere
    finally:
        for plane in planes.values():
            await plane.stop()
