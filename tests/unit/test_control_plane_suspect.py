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
