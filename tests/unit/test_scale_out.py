"""Scale-out, on a fake clock with fake instances: a warm function whose instances are busy
waits a moment for a slot before a new instance starts (``scale_out_wait_s``), calls queue
behind a start, a function kept saturated gets one more instance, and forwarded calls wait
briefly or are refused unrun. A start takes 0.3 s of the fake clock; a call takes the seconds
its body says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tierfaas import errors
from tierfaas.runtime.events import FunctionWarm, InstanceStarted, InstanceStopped
from tierfaas.runtime.zygote_client import ZygoteError
from tierfaas.testing import FakeClock, FakeSpawner, RuntimeHarness, fake_release

# Two instances at most, one call each.
PAIR = fake_release({"pair": {"concurrency": 1, "max_instances": 2, "memory_mb": 64}})


async def warm(rt: RuntimeHarness) -> None:
    """``pair`` warm on one instance, idle."""
    first = rt.call("pair", b"0")
    await rt.run_for(0.3)
    assert first.done() and first.result().cold


def failure(task: asyncio.Task[object]) -> BaseException | None:
    assert task.done(), "the call has not ended"
    return task.exception()


async def test_a_busy_warm_function_waits_briefly_for_a_slot_before_starting_another() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.25) as rt:
        await warm(rt)
        pool = rt.runtime.pools["pair"]
        short = [rt.call("pair", b"0.05") for _ in range(2)]
        await rt.run_for(0.11)
        # The second call took the first one's slot after 50 ms instead of a cold start.
        assert [t.result().body for t in short] == [b"0.05", b"0.05"]
        assert [t.result().cold for t in short] == [False, False]
        assert rt.spawner.attempts == 1
        long = [rt.call("pair", b"1.0") for _ in range(2)]
        await rt.run_for(0.24)
        assert pool.starting == 0  # still within the scale-out wait
        await rt.run_for(0.02)
        assert pool.starting == 1  # no slot freed in time: another instance starts
        await rt.run_for(0.3)
        assert pool.stats()["instances"] == 2
        await rt.run_for(1.0)
        assert [t.result().body for t in long] == [b"1.0", b"1.0"]
        assert [t.result().cold for t in long] == [False, True]


async def test_a_function_that_starts_fast_scales_out_without_waiting_longer() -> None:
    # A start of 10 ms, shorter than the 50 ms call: waiting up to scale_out_wait_s (0.5 s)
    # would cost more than starting, so the wait is the start's time.
    clock = FakeClock()
    spawner = FakeSpawner(clock, start_s=0.01)
    async with RuntimeHarness(PAIR, clock=clock, spawner=spawner, scale_out_wait_s=0.5) as rt:
        first = rt.call("pair", b"0")
        await rt.run_for(0.01)
        assert first.done()
        pool = rt.runtime.pools["pair"]
        assert pool.last_start_s == pytest.approx(0.01)
        calls = [rt.call("pair", b"0.05") for _ in range(2)]
        await rt.run_for(0.005)
        assert pool.starting == 0
        await rt.run_for(0.01)
        assert pool.starting == 1
        await rt.run_for(0.1)
        assert all(t.done() for t in calls) and pool.stats()["instances"] == 2


async def test_with_no_scale_out_wait_a_busy_function_starts_another_at_once() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0) as rt:
        await warm(rt)
        calls = [rt.call("pair", b"0.05") for _ in range(2)]
        await rt.run_for(0)
        stats = rt.runtime.pools["pair"].stats()
        assert (stats["instances"], stats["starting"]) == (1, 1)
        await rt.run_for(0.5)
        assert all(t.done() for t in calls)


async def test_the_node_registers_when_the_first_instance_starts_and_forwarded_calls_queue() -> (
    None
):
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.05) as rt:
        first = rt.call("pair", b"0.01")  # a cold start begins
        await rt.run_for(0)
        kinds = [type(e) for e in rt.events]
        assert FunctionWarm in kinds and InstanceStarted not in kinds  # registered at start
        # A forwarded call (warm_only) arriving now waits behind the starting instance, and
        # then briefly behind the first call, which the instance serves first...
        forwarded = rt.call("pair", b"0", warm_only=True)
        await rt.run_for(0.3)
        assert first.done() is False and forwarded.done() is False
        await rt.run_for(0.02)
        assert first.result().body == b"0.01" and forwarded.result().body == b"0"
        assert rt.spawner.attempts == 1  # ...and started nothing
        # Behind a busy instance it waits scale_out_wait_s at most, then says busy, unrun.
        busy = rt.call("pair", b"0.5")
        await rt.run_for(0)
        refused = rt.call("pair", b"0", warm_only=True)
        await rt.run_for(0.04)
        assert not refused.done()
        await rt.run_for(0.02)
        assert isinstance(failure(refused), errors.Busy)
        assert [body for body, _ in rt.spawner.spawned[0].received] == [b"0.01", b"0", b"0.5"]
        await rt.run_for(0.5)
        assert busy.result().body == b"0.5"


async def test_a_forwarded_call_to_a_node_with_nothing_started_is_not_warm() -> None:
    async with RuntimeHarness(PAIR) as rt:
        with pytest.raises(errors.NotWarm):
            await rt.call("pair", b"0", warm_only=True)
        assert rt.runtime.pools["pair"].stats() == {
            "instances": 0, "busy": 0, "starting": 0, "queued": 0,
            "pinned": 0,
        }  # fmt: skip
        assert rt.spawner.attempts == 0


async def test_a_call_whose_deadline_passes_in_the_queue_does_not_run_nor_kill_the_instance() -> (
    None
):
    one = fake_release({"one": {"concurrency": 1, "max_instances": 1, "timeout_s": 5}})
    async with RuntimeHarness(one, queue_timeout_s=5) as rt:
        first = rt.call("one", b"0.5")
        await rt.run_for(0.4)  # the start (0.3 s), and 0.1 s into the call
        # 4.8 s of its 5 s timeout spent before it got here: 0.2 s left, the slot frees in 0.4.
        late = rt.call("one", b"0", started=rt.clock() - 4.8)
        await rt.run_for(0.5)
        error = failure(late)
        assert isinstance(error, errors.FunctionTimeout) and "did not run" in error.message
        assert first.result().body == b"0.5"
        (instance,) = rt.spawner.spawned
        assert [body for body, _ in instance.received] == [b"0.5"]
        assert not [e for e in rt.events if isinstance(e, InstanceStopped)]
        assert not (await rt.call("one", b"0")).cold  # the same instance, still warm


async def test_a_burst_on_a_cold_function_queues_behind_one_start() -> None:
    # Three short calls at once on a function warm nowhere: one instance starts (0.3 s) and
    # serves them in turn (0.12 s, within the scale-out wait after the start), sooner than
    # two more starts would.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.15) as rt:
        calls = [rt.call("pair", b"0.04") for _ in range(3)]
        await rt.run_for(0.5)
        assert all(t.result().body == b"0.04" for t in calls)
        assert rt.spawner.attempts == 1
        # All three waited for the start, not only the first one on the instance.
        assert [t.result().cold for t in calls] == [True] * 3
        assert not (await rt.call("pair", b"0")).cold


async def test_calls_queued_behind_a_start_scale_out_once_it_serves_if_they_still_wait() -> None:
    # Long calls: behind the start, the second call waits; once the instance is up and busy,
    # it waits the scale-out wait (0.1 s) and then gets an instance of its own.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1) as rt:
        pool = rt.runtime.pools["pair"]
        calls = [rt.call("pair", b"1.0") for _ in range(2)]
        await rt.run_for(0.35)
        assert (pool.stats()["instances"], pool.starting) == (1, 0)
        await rt.run_for(0.1)  # 0.4 s: the scale-out wait after the start ended
        assert pool.starting == 1
        await rt.run_for(1.3)  # its instance is ready at 0.7 s, the call ends at 1.7 s
        assert all(t.result().body == b"1.0" for t in calls)
        assert pool.stats()["instances"] == 2


async def test_with_no_scale_out_wait_a_burst_on_a_cold_function_starts_one_per_call() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0) as rt:
        calls = [rt.call("pair", b"0.05") for _ in range(2)]
        await rt.run_for(0)
        assert rt.runtime.pools["pair"].starting == 2
        await rt.run_for(0.4)
        assert all(t.done() for t in calls)
        assert rt.runtime.pools["pair"].stats()["instances"] == 2


async def test_behind_a_start_the_queue_timeout_counts_from_when_the_start_ends() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1, queue_timeout_s=0.2) as rt:
        pool = rt.runtime.pools["pair"]
        # The second call outlives its 0.2 s queue timeout while the instance starts (0.3 s),
        # and is then served as soon as the first call ends.
        first, second = rt.call("pair", b"0.05"), rt.call("pair", b"0.05")
        await rt.run_for(0.5)
        assert first.result().body == second.result().body == b"0.05"
        assert rt.spawner.attempts == 1
        # Three 1 s calls on that one instance: the second waits 0.1 s, then an instance
        # starts for it (0.3 s, longer than its 0.2 s queue timeout, which restarts when the
        # start ends); the third finds max_instances reached and no slot within 0.2 s of
        # that: 429, unrun.
        calls = [rt.call("pair", b"1.0") for _ in range(3)]
        await rt.run_for(0.11)
        assert pool.starting == 1
        await rt.run_for(0.48)  # 0.59 s: the start ended at 0.4 s
        assert not calls[2].done()
        await rt.run_for(0.02)  # 0.61 s
        error = failure(calls[2])
        assert isinstance(error, errors.Overloaded) and error.retry_after_s == 1
        await rt.run_for(1.0)
        assert [t.result().body for t in calls[:2]] == [b"1.0", b"1.0"]
        assert pool.stats()["instances"] == 2
        assert sum(len(i.received) for i in rt.spawner.spawned) == 4  # the third never ran


async def test_a_forwarded_call_behind_a_start_is_refused_busy_soon_after_the_start() -> None:
    # A forwarded call queued behind a start whose instance goes to another call: once the
    # start ends it waits as long as a start took (0.3 s), then Busy (unrun), so the sender
    # can run it elsewhere, instead of waiting out the 2 s call.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1) as rt:
        first = rt.call("pair", b"2.0")  # starts the instance (0.3 s)
        await rt.run_for(0)
        forwarded = rt.call("pair", b"0", warm_only=True)
        await rt.run_for(0.55)
        assert not forwarded.done()
        await rt.run_for(0.1)  # 0.65 s
        assert isinstance(failure(forwarded), errors.Busy)
        await rt.run_for(2.0)
        assert first.result().body == b"2.0"


async def test_a_forwarded_call_behind_a_start_keeps_waiting_while_the_queue_moves() -> None:
    # Behind the start with a burst: each call served restarts its wait, so it is served.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1) as rt:
        burst = [rt.call("pair", b"0.2") for _ in range(3)]
        await rt.run_for(0)
        forwarded = rt.call("pair", b"0", warm_only=True)
        await rt.run_for(0.3 + 3 * 0.2 + 0.01)
        # Served after the burst (0.9 s), though more than a start's time after the start.
        assert forwarded.result().body == b"0"
        assert all(t.done() for t in burst)


async def test_the_slot_due_time_follows_the_recent_call_time() -> None:
    async with RuntimeHarness(PAIR) as rt:
        pool = rt.runtime.pools["pair"]
        assert pool.slot_due_s() == float("inf")  # no call has finished here yet
        await warm(rt)  # a call of 0 s
        call = rt.call("pair", b"0.05")
        await rt.run_for(0.05)
        assert call.done()
        # The moving average of a 0 s and a 50 ms call (0.2 weight), for one call ahead.
        assert pool.slot_due_s() == pytest.approx(0.01)


async def keep_busy(
    rt: RuntimeHarness, callers: int, call_s: float, pause_s: float, for_s: float,
    until: Callable[[], bool] = lambda: False,
) -> None:  # fmt: skip
    """``callers`` loops calling ``pair`` for ``call_s`` each, ``pause_s`` apart, for
    ``for_s`` seconds of the fake clock or until ``until()``; every call must be answered."""
    end = rt.clock() + for_s

    async def caller() -> None:
        while rt.clock() < end and not until():
            answer = await rt.call("pair", str(call_s).encode())
            assert answer.body == str(call_s).encode()
            if pause_s:
                await rt.clock.sleep(pause_s)

    tasks = [asyncio.get_running_loop().create_task(caller()) for _ in range(callers)]
    await rt.run_for(for_s + 1.0)
    for task in tasks:
        assert task.done()
        task.result()


async def test_a_function_kept_busy_by_calls_shorter_than_a_start_gets_another_instance() -> None:
    # Three callers of 20 ms calls on one instance with one slot: each call waits ~40 ms for
    # the slot, less than the scale-out wait (250 ms), so no call starts an instance; but the
    # slot is busy all the time, and the pool adds one once a second of it shows that.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.25) as rt:
        await warm(rt)
        pool = rt.runtime.pools["pair"]
        await keep_busy(rt, 3, 0.02, 0.0, 3.0, until=lambda: len(pool.instances) == 2)
        assert len(pool.instances) == 2
        first, second = rt.spawner.spawned
        # Not before the first had been ready (and busy) for a whole window.
        assert second.ready_at - second.start_s - first.ready_at >= 1.0


async def test_a_function_busy_half_the_time_keeps_its_one_instance() -> None:
    # Two callers of 10 ms calls, each pausing 30 ms: the slot is busy about half the time,
    # and calls sometimes queue for it briefly; that is no reason for another instance.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.25) as rt:
        await warm(rt)
        pool = rt.runtime.pools["pair"]
        await keep_busy(rt, 2, 0.01, 0.03, 2.5)
        assert len(pool.instances) + pool.starting == 1
        assert rt.spawner.attempts == 1
        assert 0.3 < pool.recent_load() < 0.7


async def test_an_extra_instance_that_fails_to_start_fails_no_queued_call() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.25) as rt:
        await warm(rt)
        pool = rt.runtime.pools["pair"]
        rt.spawner.failures.append(ZygoteError("no more processes (test)"))
        # Every call must still be answered by the one instance (keep_busy asserts it).
        await keep_busy(rt, 3, 0.02, 0.0, 3.0, until=lambda: rt.spawner.attempts == 2)
        assert rt.spawner.attempts == 2  # the extra start was tried, and failed
        assert len(pool.instances) == 1 and not pool.starting


async def test_a_failed_start_answers_every_call_waiting_for_it() -> None:
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1) as rt:
        rt.spawner.failures.append(errors.StartFailed("init could not load its model"))
        calls = [rt.call("pair", b"0") for _ in range(3)]
        await rt.run_for(0)
        for call in calls:  # nothing else runs or starts: all of them fail, with its reason
            error = failure(call)
            assert isinstance(error, errors.StartFailed) and "its model" in error.message
        assert not rt.runtime.pools["pair"].registered


async def test_a_crashed_instance_is_replaced_for_the_calls_waiting() -> None:
    one = fake_release({"one": {"concurrency": 1, "max_instances": 1}})
    async with RuntimeHarness(one, queue_timeout_s=5) as rt:
        first, second = rt.call("one", b"1.0"), rt.call("one", b"0")
        await rt.run_for(0.5)
        rt.spawner.spawned[0].crash()
        await rt.run_for(0)
        assert isinstance(failure(first), errors.InstanceCrashed)
        assert InstanceStopped("one", 1, "crashed") in rt.events
        assert rt.runtime.pools["one"].starting == 1  # a new instance, for the second call
        await rt.run_for(0.3)
        assert second.result().cold


async def test_a_call_the_starts_under_way_will_reach_starts_no_instance_of_its_own() -> None:
    # Two slots per instance: both busy, two calls queued. After the scale-out wait the first
    # starts an instance; that instance's two slots cover the second, which starts none.
    duo = fake_release({"duo": {"concurrency": 2, "max_instances": 3}})
    async with RuntimeHarness(duo, scale_out_wait_s=0.1) as rt:
        warmup = [rt.call("duo", b"0") for _ in range(2)]
        await rt.run_for(0.3)
        assert all(t.done() for t in warmup) and rt.spawner.attempts == 1
        calls = [rt.call("duo", b"1.0") for _ in range(4)]
        await rt.run_for(0.11)
        pool = rt.runtime.pools["duo"]
        assert pool.starting == 1
        await rt.run_for(1.5)
        assert all(t.result().body == b"1.0" for t in calls)
        assert rt.spawner.attempts == 2


async def test_a_start_that_fails_unexpectedly_gives_its_slot_and_memory_back() -> None:
    # A bug below the pool (not a ZygoteError nor an HttpError) fails the start like any
    # other: the calls waiting for it are answered, and the next call starts again.
    async with RuntimeHarness(PAIR, scale_out_wait_s=0.1) as rt:
        pool = rt.runtime.pools["pair"]
        used_before = rt.runtime.budget.used_mb
        rt.spawner.failures.append(RuntimeError("a bug in the spawner (test)"))
        call = rt.call("pair", b"0")
        await rt.run_for(0)
        error = failure(call)
        assert isinstance(error, errors.StartFailed) and "a bug in the spawner" in error.message
        assert pool.starting == 0 and not pool.registered
        assert rt.runtime.budget.used_mb == used_before  # the start's reservation is back
        again = rt.call("pair", b"0")
        await rt.run_for(0.5)
        assert again.result().cold and rt.spawner.attempts == 2
