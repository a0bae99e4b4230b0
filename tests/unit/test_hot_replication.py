"""A hot function becomes warm on more nodes: a node that keeps forwarding a function often,
or to busy targets, starts an instance of its own (``HotTracker``, on a fake clock)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tierfaas.routing.cache import RouteCache
from tierfaas.routing.hot import HotTracker
from tierfaas.routing.router import Router, RoutingMetrics
from tierfaas.runtime.events import FunctionWarm, InstanceStarted
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release


def forward_for_one_second(clock: FakeClock, hot: HotTracker, calls: int, load: float = 0.1) -> int:
    """``calls`` forwards spread over one second; how many said to start an instance."""
    starts = 0
    for _ in range(calls):
        starts += hot.forwarded("f", load)
        clock.advance(1.0 / calls)
    return starts


def test_starts_here_after_three_seconds_of_frequent_forwards_then_once_per_cooldown() -> None:
    clock = FakeClock()
    hot = HotTracker(clock, forwards_per_s=50.0)
    starts = forward_for_one_second(clock, hot, 100)
    starts += forward_for_one_second(clock, hot, 30)  # below 50/s: the count starts again
    for _ in range(3):
        starts += forward_for_one_second(clock, hot, 100)
    assert starts == 0  # two hot seconds closed so far
    assert forward_for_one_second(clock, hot, 100) == 1  # the third one closes
    starts = sum(forward_for_one_second(clock, hot, 100) for _ in range(10))
    assert starts == 0  # within the 30 s cooldown
    starts = sum(forward_for_one_second(clock, hot, 100) for _ in range(25))
    assert starts == 1  # the cooldown ended


def test_a_second_with_no_forward_ends_the_run_of_hot_seconds() -> None:
    clock = FakeClock()
    hot = HotTracker(clock, forwards_per_s=50.0)
    for _ in range(3):
        assert forward_for_one_second(clock, hot, 100) == 0
    clock.advance(1.5)  # nothing forwarded: the window that closes next is not hot
    assert sum(forward_for_one_second(clock, hot, 100) for _ in range(3)) == 0
    assert forward_for_one_second(clock, hot, 100) == 1


@pytest.mark.parametrize(("load", "starts"), [(0.9, 1), (0.75, 1), (0.5, 0)])
def test_rare_forwards_to_a_target_with_no_slot_to_spare_start_one_here(
    load: float, starts: int
) -> None:
    # 10 forwards a second, far below 50/s: only the target's busy share makes it hot.
    clock = FakeClock()
    hot = HotTracker(clock, forwards_per_s=50.0)
    assert sum(forward_for_one_second(clock, hot, 10, load) for _ in range(5)) == starts


FUNCTIONS = fake_release(
    {
        "f": {"memory_mb": 64},
        "g": {"memory_mb": 64},
        "pair": {"concurrency": 1, "max_instances": 2, "memory_mb": 64},
    }
)


async def test_the_router_starts_an_instance_of_a_hot_function_through_the_runtime() -> None:
    async with RuntimeHarness(FUNCTIONS) as rt:
        router = Router(
            rt.runtime,
            self_name="a",
            key=b"k" * 32,
            cache=RouteCache(rt.clock),
            metrics=RoutingMetrics(CollectorRegistry()),
            hot_forwards_per_s=50.0,
            clock=rt.clock,
        )
        for _ in range(4 * 100):
            router._count_forward("f", 0.1)
            rt.clock.advance(0.01)
        await rt.run_for(0.3)
        assert [type(e) for e in rt.events] == [FunctionWarm, InstanceStarted]
        assert router.metrics.hot_starts._value.get() == 1
        assert not (await rt.call("f", b"")).cold


async def test_prewarm_starts_one_instance_that_registers_and_serves() -> None:
    async with RuntimeHarness(FUNCTIONS) as rt:
        assert rt.runtime.prewarm("f")
        assert not rt.runtime.prewarm("f")  # one is starting already
        assert FunctionWarm("f") in rt.events  # registered as it starts
        await rt.run_for(0.3)
        assert len([e for e in rt.events if isinstance(e, InstanceStarted)]) == 1
        assert not (await rt.call("f", b"x")).cold
        assert not rt.runtime.prewarm("f")  # warm here already
        assert rt.spawner.attempts == 1


async def test_a_call_that_arrives_while_a_prewarm_starts_is_cold() -> None:
    async with RuntimeHarness(FUNCTIONS) as rt:
        assert rt.runtime.prewarm("pair")
        call = rt.call("pair", b"0")
        await rt.run_for(0.3)
        assert call.result().cold  # it waited for the start
        assert not (await rt.call("pair", b"0")).cold
        assert rt.spawner.attempts == 1


async def test_prewarm_never_evicts_another_function() -> None:
    async with RuntimeHarness(FUNCTIONS, memory_budget_mb=64) as rt:  # room for one
        call = rt.call("g", b"")
        await rt.run_for(0.3)
        assert call.done()  # g takes the whole budget, idle afterwards
        assert not rt.runtime.prewarm("f")
        assert rt.runtime.pools["g"].instances  # still warm
