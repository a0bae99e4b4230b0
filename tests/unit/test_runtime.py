"""The runtime on fake instances and a fake clock: calls, events, the queue's limits (429),
the memory budget and keep-alive reaping. (Real processes: tests/integration.)"""

from __future__ import annotations

import pytest

from tierfaas import errors
from tierfaas.runtime.events import FunctionCold, FunctionWarm, InstanceStarted, InstanceStopped
from tierfaas.testing import FakeClock, FakeSpawner, RuntimeHarness, fake_release

RELEASE = fake_release(
    {
        "echo": {"concurrency": 4, "memory_mb": 64, "keep_alive_s": 60},
        "other": {"memory_mb": 64, "keep_alive_s": 60},
        "third": {"memory_mb": 64, "keep_alive_s": 60},
        "onebyone": {"concurrency": 1, "max_instances": 1, "memory_mb": 64},
        "quick_reap": {"memory_mb": 64, "keep_alive_s": 0.5},
    }
)


async def test_first_call_is_cold_then_warm_on_the_same_instance() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        first = rt.call("echo", b"one")
        await rt.run_for(0.3)
        second = await rt.call("echo", b"two")
        assert (first.result().body, first.result().cold) == (b"one", True)
        assert (second.body, second.cold) == (b"two", False)
        assert rt.events == [
            FunctionWarm("echo"),
            InstanceStarted("echo", 1, rt.spawner.spawned[0].pid, pytest.approx(0.3)),
        ]


async def test_a_handler_that_takes_no_context_is_sent_none() -> None:
    clock = FakeClock()
    spawner = FakeSpawner(clock, start_s=None)
    async with RuntimeHarness(RELEASE, clock=clock, spawner=spawner) as rt:
        first = rt.call("echo", b"", query="a=1", headers={"x-custom": "yes"})
        await rt.run_for(0.1)
        (start,) = spawner.starts
        start.ready(takes_context=False)
        await rt.run_for(0)
        await rt.call("echo", b"")
        (instance,) = spawner.spawned
        # Built for the first call (the handler's signature was not known yet), not after.
        context = instance.received[0][1]
        assert context is not None and context["query"] == "a=1"
        assert context["headers"] == {"x-custom": "yes"}
        assert instance.received[1] == (b"", None)
        assert first.result().cold


async def test_concurrency_limit_queues_then_429() -> None:
    async with RuntimeHarness(RELEASE, queue_max=2, queue_timeout_s=0.3) as rt:
        calls = [rt.call("onebyone", b"0.8") for _ in range(3)]
        await rt.run_for(0)
        full = calls[2].exception()  # the queue was full: at once
        assert isinstance(full, errors.Overloaded) and full.retry_after_s == 1
        await rt.run_for(0.59)  # the start ends at 0.3 s; the queue timeout counts from there
        assert not calls[1].done()
        await rt.run_for(0.02)
        waited = calls[1].exception()
        assert isinstance(waited, errors.Overloaded) and waited.status == 429
        assert "within 0.3 s" in waited.message
        await rt.run_for(1.0)
        assert calls[0].result().body == b"0.8"


async def test_idle_instances_are_reaped_after_keep_alive() -> None:
    async with RuntimeHarness(RELEASE, reap_interval_s=1.0) as rt:
        calls = [rt.call("quick_reap", b"x"), rt.call("echo", b"x")]
        await rt.run_for(0.3)
        assert all(c.done() for c in calls)
        await rt.run_for(0.69)  # the reaper's first round (1.0 s): idle 0.7 s, past 0.5 s
        assert not [e for e in rt.events if isinstance(e, InstanceStopped)]
        await rt.run_for(0.02)
        assert InstanceStopped("quick_reap", 1, "idle") in rt.events
        assert FunctionCold("quick_reap") in rt.events
        assert rt.runtime.pools["echo"].stats()["instances"] == 1  # 60 s keep-alive
        assert rt.runtime.memory_used_mb == 64
        await rt.run_for(60.0)  # the reaper keeps going
        assert InstanceStopped("echo", 2, "idle") in rt.events
        assert FunctionCold("echo") in rt.events


async def test_memory_budget_evicts_the_least_recently_used_idle_instance() -> None:
    async with RuntimeHarness(RELEASE, memory_budget_mb=128) as rt:  # two 64 MiB instances
        for name in ("echo", "other"):
            rt.call(name, b"")
            await rt.run_for(0.3)
        await rt.run_for(0.1)
        await rt.call("echo", b"")  # echo is now the most recently used
        third = rt.call("third", b"")
        await rt.run_for(0.3)
        assert third.result().cold
        stopped = [e for e in rt.events if isinstance(e, InstanceStopped)]
        assert [(e.function, e.reason) for e in stopped] == [("other", "evicted")]
        assert rt.runtime.memory_used_mb == 128


async def test_with_no_memory_and_nothing_idle_a_call_waits_then_gets_429() -> None:
    async with RuntimeHarness(RELEASE, memory_budget_mb=64, queue_timeout_s=0.5) as rt:
        busy = rt.call("echo", b"2.0")
        await rt.run_for(0.3)
        waiting = rt.call("other", b"")
        await rt.run_for(0.49)
        assert not waiting.done() and rt.spawner.attempts == 1  # no room: nothing started
        await rt.run_for(0.02)
        assert isinstance(waiting.exception(), errors.Overloaded)
        await rt.run_for(2.0)
        assert busy.result().body == b"2.0"


async def test_unknown_function_is_404() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        with pytest.raises(errors.UnknownFunction, match="/v1/functions"):
            await rt.call("nope")
        with pytest.raises(errors.UnknownFunction):
            rt.runtime.pool("nope")


async def test_a_call_arriving_past_its_deadline_does_not_run_nor_kill_the_instance() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        rt.call("echo", b"")
        await rt.run_for(0.3)
        with pytest.raises(errors.FunctionTimeout, match="past its deadline") as info:
            await rt.call("echo", b"late", deadline=rt.runtime.clock() - 1.0)
        assert info.value.status == 504
        assert [body for body, _ in rt.spawner.spawned[0].received] == [b""]
        assert not [e for e in rt.events if isinstance(e, InstanceStopped)]


async def test_a_call_past_its_timeout_kills_the_instance_and_the_next_call_is_cold() -> None:
    slow = fake_release({"slow": {"timeout_s": 0.5, "max_instances": 1}})
    async with RuntimeHarness(slow) as rt:
        call = rt.call("slow", b"3")
        await rt.run_for(0.3 + 0.5)
        assert isinstance(call.exception(), errors.FunctionTimeout)
        assert InstanceStopped("slow", 1, "timeout") in rt.events
        after = rt.call("slow", b"0")
        await rt.run_for(0.3)
        assert after.result().cold


async def test_close_stops_every_instance_and_start() -> None:
    rt = RuntimeHarness(RELEASE, reap_interval_s=1.0)
    async with rt:
        rt.call("echo", b"")
        await rt.run_for(0.3)
        queued = rt.call("other", b"")
        await rt.run_for(0.1)
        assert rt.spawner.attempts == 2
    assert InstanceStopped("echo", 1, "shutdown") in rt.events
    assert not rt.spawner.running
    await rt.run_for(1.0)  # past the start's end and the reaper's round: neither happens
    assert [e.function for e in rt.events if isinstance(e, InstanceStarted)] == ["echo"]
    assert rt.clock.pending() == 1  # only the queued call's timeout (close does not drain)
    queued.cancel()


def test_a_function_needing_more_than_the_memory_budget_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="memory_budget_mb"):
        RuntimeHarness(RELEASE, memory_budget_mb=32)
