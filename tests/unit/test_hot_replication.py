"""A hot function becomes warm on more nodes: a node that keeps forwarding a function often
starts an instance of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_runtime import make
from tierfaas.routing import router as router_module
from tierfaas.routing.cache import RouteCache
from tierfaas.routing.router import Router, RoutingMetrics
from tierfaas.runtime.events import FunctionWarm, InstanceStarted


class _Pool:
    def __init__(self) -> None:
        self.prewarms = 0

    def prewarm(self) -> bool:
        self.prewarms += 1
        return True


class _Runtime:
    def __init__(self) -> None:
        self.pools: dict[str, _Pool] = {"f": _Pool()}

    def pool(self, name: str) -> _Pool:
        return self.pools[name]


def make_router(runtime: Any) -> Router:
    import time

    return Router(
        runtime,
        self_name="a",
        key=b"k" * 32,
        cache=RouteCache(time.monotonic),
        metrics=RoutingMetrics(CollectorRegistry()),
        lookup=None,
        hot_forwards_per_s=50.0,
    )


def test_starts_here_after_three_seconds_of_frequent_forwards_then_once_per_cooldown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(router_module.time, "monotonic", lambda: now[0])
    runtime = _Runtime()
    router = make_router(runtime)

    def forward_for_one_second(calls: int) -> None:
        for _ in range(calls):
            router._count_forward("f", 0.1)  # the target has slots to spare
            now[0] += 1.0 / calls

    forward_for_one_second(100)
    forward_for_one_second(30)  # below 50/s: the count of hot seconds starts again
    for _ in range(3):
        forward_for_one_second(100)
    assert runtime.pools["f"].prewarms == 0  # two hot seconds closed so far
    forward_for_one_second(100)  # the third one closes
    assert runtime.pools["f"].prewarms == 1
    for _ in range(10):
        forward_for_one_second(100)
    assert runtime.pools["f"].prewarms == 1  # within the 30 s cooldown
    assert router.metrics.hot_starts._value.get() == 1


@pytest.mark.parametrize(("load", "prewarms"), [(0.9, 1), (0.5, 0)])
def test_rare_forwards_to_a_target_with_no_slot_to_spare_start_one_here(
    monkeypatch: pytest.MonkeyPatch, load: float, prewarms: int
) -> None:
    # 10 forwards a second, far below 50/s: only the target's busy share makes it hot.
    now = [1000.0]
    monkeypatch.setattr(router_module.time, "monotonic", lambda: now[0])
    runtime = _Runtime()
    router = make_router(runtime)
    for _ in range(5 * 10):
        router._count_forward("f", load)
        now[0] += 0.1
    assert runtime.pools["f"].prewarms == prewarms


async def test_prewarm_starts_one_instance_that_registers_and_serves() -> None:
    rt = await make()
    try:
        pool = rt.runtime.pool("echo")
        assert pool.prewarm()
        assert not pool.prewarm()  # one is starting already
        assert FunctionWarm("echo") in rt.events  # registered as it starts
        for _ in range(100):
            if pool.instances:
                break
            await asyncio.sleep(0.02)
        assert len([e for e in rt.events if isinstance(e, InstanceStarted)]) == 1
        assert not (await rt.call("echo", b"x")).cold
        assert not pool.prewarm()  # warm here already
    finally:
        await rt.runtime.close()


async def test_a_call_that_arrives_while_a_prewarm_starts_is_cold() -> None:
    rt = await make()
    try:
        assert rt.runtime.pool("pair").prewarm()
        assert (await rt.call("pair", b"0")).cold  # it waited for the start (~0.3 s)
        assert not (await rt.call("pair", b"0")).cold
    finally:
        await rt.runtime.close()


async def test_prewarm_never_evicts_another_function() -> None:
    rt = await make(memory_budget_mb=64)  # room for one 64 MiB instance
    try:
        await rt.call("ctx", b"")  # takes the whole budget, idle afterwards
        assert not rt.runtime.pool("echo").prewarm()
        assert rt.runtime.pool("ctx").instances  # still warm
    finally:
        await rt.runtime.close()
