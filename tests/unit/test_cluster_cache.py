"""The cluster as one cache (issue 19.4) in the router: a node whose start would evict asks
the table again rather than trust a cached "warm nowhere", and forwards to the node where the
function is warm. Two routers on one fake clock, wired by an in-memory peer pool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from tests.unit.test_router_hops import MemoryPeers, raw
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import Write
from tierfaas.control.backend import TableBackend
from tierfaas.control.write_queue import WriteQueue
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.router import Reply, Router, RoutingMetrics
from tierfaas.runtime.events import FunctionCold
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release

KEY = b"k" * 32
RELEASE = fake_release({"f": {"memory_mb": 64}, "g": {"memory_mb": 64}})
B_ADDRESS = Address("10.0.0.2", 8080)


def router(rt: RuntimeHarness, name: str, cluster_cache: bool) -> Router:
    async def lookup(function: str) -> list[NodeEndpoint]:
        return [NodeEndpoint("b", 1, B_ADDRESS, None)] if function == "f" else []

    return Router(
        rt.runtime, self_name=name, key=KEY, cache=RouteCache(rt.clock),
        metrics=RoutingMetrics(CollectorRegistry()), lookup=lookup, clock=rt.clock,
        cluster_cache=cluster_cache,
    )  # fmt: skip


async def call_f(a: Router, rt: RuntimeHarness, clock: FakeClock) -> Reply:
    task = asyncio.ensure_future(
        a.handle("f", b"", request_id="r1", method="POST", query="", headers=raw({}),
                 started=clock())
    )  # fmt: skip
    await rt.run_for(1.0)
    return task.result()


async def scenario(cluster_cache: bool) -> tuple[Reply, dict[str, int], float]:
    """f called on a, whose budget g fills, while f is warm on b: the reply, a's instances
    per function after it, and a's count of refreshed lookups."""
    clock = FakeClock()
    async with (
        RuntimeHarness(RELEASE, clock=clock, memory_budget_mb=64) as rt_a,
        RuntimeHarness(RELEASE, clock=clock) as rt_b,
    ):
        a, b = router(rt_a, "a", cluster_cache), router(rt_b, "b", cluster_cache)
        a.peers = MemoryPeers({str(B_ADDRESS): b}, clock)  # type: ignore[assignment]
        for rt, name in ((rt_a, "g"), (rt_b, "f")):  # g fills a's budget; f is warm on b
            warmed = rt.call(name)
            await rt.run_for(1.0)
            assert warmed.result().cold
        # a heard "f is warm nowhere" a moment ago (a stale answer it still trusts).
        a.cache.put("f", (), ttl_s=5.0)
        reply = await call_f(a, rt_a, clock)
        here = {name: len(pool.instances) for name, pool in rt_a.runtime.pools.items()}
        return reply, here, a.metrics.cache_refreshes._value.get()


async def test_a_start_that_would_evict_forwards_to_the_warm_node_instead() -> None:
    reply, here, refreshes = await scenario(cluster_cache=True)
    assert reply.status == 200
    assert dict(reply.headers)[b"x-tierfaas-served-by"] == b"b"
    assert here == {"f": 0, "g": 1}  # nothing evicted here
    assert refreshes == 1


async def test_without_the_cluster_cache_the_node_evicts_and_starts_here() -> None:
    reply, here, refreshes = await scenario(cluster_cache=False)
    assert reply.status == 200 and reply.cold
    assert dict(reply.headers)[b"x-tierfaas-served-by"] == b"a"
    assert here == {"f": 1, "g": 0}  # g evicted for f
    assert refreshes == 0


async def test_warm_elsewhere_reads_the_route_cache_without_a_lookup() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        a = router(rt, "a", cluster_cache=True)
        assert not a.warm_elsewhere("f")  # nothing cached: unknown counts as no
        a.cache.put("f", ())
        assert not a.warm_elsewhere("f")
        await a._candidates("f", refresh=True)
        assert a.warm_elsewhere("f") and not a.warm_elsewhere("g")
        assert a.cache.hits == 0  # peeks are not counted as the router's reads


class MasterClient:
    """A ``ControlClient`` that writes straight into a master's ``TableBackend``."""

    def __init__(self, backend: TableBackend) -> None:
        self.backend = backend

    async def register(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        return pb.WriteReply(accepted=(await self.backend.apply_writes(writes)).accepted)

    unregister = register

    def get(self, address: str) -> MasterClient:
        return self


async def settle() -> None:
    """Lets every ready task run until it waits again (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def never(_: float) -> None:
    await asyncio.Event().wait()


async def test_a_function_evicted_from_its_last_node_leaves_the_masters_table_at_once() -> None:
    """Issue 19.4: the eviction's FunctionCold becomes an Unregister at once, and the master
    flushes the last node's removal without waiting out its batch window."""
    node = NodeEndpoint("n", 1, Address("127.0.0.1", 9000), None)
    clock = FakeClock()
    master = TableBackend({"n": node}.get, clock, master=True, window_s=30.0)
    hub = master.hub
    assert hub is not None
    queue = WriteQueue(
        "n", 1, master=lambda: "m:1", channels=MasterClient(master),  # type: ignore[arg-type]
        clock=clock, sleep=never,
    )  # fmt: skip
    async with RuntimeHarness(RELEASE, clock=clock, memory_budget_mb=64) as rt:
        rt.runtime.listeners.append(queue.on_event)
        queue.start()
        try:
            warmed = rt.call("g")
            await rt.run_for(1.0)
            assert warmed.result().cold
            await settle()
            hub.flush()
            assert [r.name for r in hub.table.query("g")] == ["n"]
            task = rt.call("f")  # evicts g, this node's (and the cluster's) only one
            await rt.run_for(1.0)
            assert task.result().cold and FunctionCold("g") in rt.events
            await settle()
            assert hub.batcher.due()  # due now, 30 s window or not
            hub.flush()
            assert hub.table.query("g") == []
        finally:
            await queue.stop()
