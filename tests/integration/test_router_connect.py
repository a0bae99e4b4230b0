"""A forward whose connection cannot be opened in time is "unreachable", never "may have run".

A node cut off by a partition does not refuse connections: its SYNs vanish. The sender must
give up on the connect quickly and try elsewhere (nothing was sent), not wait out the whole
function timeout and answer 502 ``forward_failed``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tierfaas.config import Address, NodeConfig
from tierfaas.routing import router as router_module
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.decision import Candidate
from tierfaas.routing.forwarding import Hop
from tierfaas.routing.router import Router, RoutingMetrics
from tierfaas.runtime import Runtime
from tierfaas.testing import fake_release
from tierfaas.testing.sockets import blackhole


def unused_runtime(root: Path) -> Runtime:
    """The runtime a router is built with, which these tests never run a call on."""
    return Runtime(fake_release({"f": {}}, root=root), NodeConfig(release_dir=root))


async def test_a_connect_that_hangs_is_unreachable_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(router_module, "CONNECT_TIMEOUT_S", 0.3)
    cache = RouteCache(time.monotonic)
    metrics = RoutingMetrics(CollectorRegistry())
    router = Router(
        unused_runtime(tmp_path), self_name="a", key=b"k" * 32, cache=cache, metrics=metrics
    )
    await router.start()
    try:
        with blackhole() as (host, port):
            router.endpoints["b"] = Address(host, port)
            cache.put("f", (Candidate("b"),))
            began = time.monotonic()
            reply = await router._forward(
                "b", "f", b"x", "rid-1", "POST", "", {}, time.monotonic(), 10.0, Hop()
            )
            took = time.monotonic() - began
    finally:
        await router.close()
    assert reply is None  # not sent: the caller tries the next candidate or runs it here
    assert took < 2.0, took
    assert metrics.forwards.labels("unreachable")._value.get() == 1
    assert metrics.forwards.labels("failed")._value.get() == 0
    assert cache.get("f") in (None, ())  # the route to b is dropped


class ColdPool:
    """A function with no instance here (a ``PoolView``): the router looks for a warm node
    elsewhere."""

    timeout_s = 10.0

    def free_slots(self) -> tuple[int, int]:
        return 0, 0


async def test_a_node_whose_connect_timed_out_gets_no_forwards_for_a_while(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Its pooled connections, opened before it was cut off, would take a call and hang.
    monkeypatch.setattr(router_module, "CONNECT_TIMEOUT_S", 0.3)
    cache = RouteCache(time.monotonic)
    metrics = RoutingMetrics(CollectorRegistry())
    router = Router(
        unused_runtime(tmp_path), self_name="a", key=b"k" * 32, cache=cache, metrics=metrics
    )
    await router.start()
    pool: Any = ColdPool()

    async def route(function: str) -> Any:
        return await router._route(
            pool, function, b"x", "rid", "POST", "", {}, time.monotonic(), Hop()
        )

    try:
        with blackhole() as (host, port):
            router.endpoints["b"] = Address(host, port)
            cache.put("f", (Candidate("b"),))
            cache.put("g", (Candidate("b"),))
            assert await route("f") is None  # tried b, gave up on the connect: run here
            assert "b" in router.unreachable
            began = time.monotonic()
            assert await route("g") is None  # another function warm on b: not even tried
            assert time.monotonic() - began < 0.1
            assert metrics.forwards.labels("unreachable")._value.get() == 1
            router.unreachable["b"] = time.monotonic()  # the quarantine is over
            assert await route("g") is None
            assert metrics.forwards.labels("unreachable")._value.get() == 2
    finally:
        await router.close()
