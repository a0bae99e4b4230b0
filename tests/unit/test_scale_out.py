"""Scale-out: a warm function whose instances are busy waits a moment for a slot before a
new instance starts (``scale_out_wait_s``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.unit.test_runtime import Harness, make
from tierfaas.runtime.pool import FunctionPool


async def test_a_busy_warm_function_waits_briefly_for_a_slot_before_starting_another() -> None:
    rt = await make(scale_out_wait_s=0.25)
    try:
        await rt.call("pair", b"0")  # warm: one instance; its start took ~0.3 s
        short = await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        assert all(r.body == b"done" for r in short)
        # The second call took the first one's slot after 50 ms instead of a cold start.
        assert rt.runtime.pools["pair"].stats()["instances"] == 1
        long = await asyncio.gather(*(rt.call("pair", b"1.0") for _ in range(2)))
        assert all(r.body == b"done" for r in long)
        assert rt.runtime.pools["pair"].stats()["instances"] == 2  # no slot freed in time
    finally:
        await rt.runtime.close()


async def test_a_function_that_starts_fast_scales_out_without_waiting() -> None:
    # echo has no init: a start takes a fork (~10 ms), less than the 50 ms call, so waiting
    # up to scale_out_wait_s would cost more than starting at once.
    rt = await make(scale_out_wait_s=0.5)
    try:
        await rt.call("onebyone", b"0")
        pool = rt.runtime.pools["onebyone"]
        assert pool.last_start_s is not None and pool.last_start_s < 0.2
        assert pool._scale_out_wait() == pool.last_start_s
    finally:
        await rt.runtime.close()


async def test_with_no_scale_out_wait_a_busy_function_starts_another_at_once() -> None:
    rt = await make(scale_out_wait_s=0)
    try:
        await rt.call("pair", b"0")
        await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        stats = rt.runtime.pools["pair"].stats()
        assert stats["instances"] + stats["starting"] == 2  # started at once (still starting)
    finally:
        await rt.runtime.close()


async def test_the_node_registers_when_the_first_instance_starts_and_forwarded_calls_queue() -> (
    None
):
    from tierfaas import errors
    from tierfaas.runtime.events import FunctionWarm, InstanceStarted

    rt = await make(scale_out_wait_s=0.05)
    try:
        first = asyncio.create_task(rt.call("pair", b"0.01"))  # a cold start begins
        await asyncio.sleep(0)
        kinds = [type(e) for e in rt.events]
        assert FunctionWarm in kinds and InstanceStarted not in kinds  # registered at start
        # A forwarded call (warm_only) arriving now waits behind the starting instance (and
        # then briefly behind the first call, which the instance serves first)...
        forwarded = await rt.call("pair", b"0", warm_only=True)
        assert forwarded.body == b"done" and (await first).body == b"done"
        assert rt.runtime.pools["pair"].stats()["instances"] == 1  # ...and started nothing
        # Behind a busy instance it waits scale_out_wait_s at most, then says busy, unrun.
        busy = asyncio.create_task(rt.call("pair", b"0.5"))
        await asyncio.sleep(0.05)
        try:
            await rt.call("pair", b"0", warm_only=True)
            raise AssertionError("a forwarded call waited past scale_out_wait_s")
        except errors.Busy:
            pass
        await busy
    finally:
        await rt.runtime.close()


async def test_a_forwarded_call_to_a_node_with_nothing_started_is_not_warm() -> None:
    from tierfaas import errors

    rt = await make()
    try:
        try:
            await rt.call("pair", b"0", warm_only=True)
            raise AssertionError("expected NotWarm")
        except errors.NotWarm:
            pass
        assert rt.runtime.pools["pair"].stats() == {
            "instances": 0, "busy": 0, "starting": 0, "queued": 0
        }  # fmt: skip
    finally:
        await rt.runtime.close()


async def test_a_call_whose_deadline_passes_in_the_queue_does_not_run_nor_kill_the_instance() -> (
    None
):
    import time

    from tierfaas import errors
    from tierfaas.runtime.events import InstanceStopped

    rt = await make(queue_timeout_s=5)
    try:
        first = asyncio.create_task(rt.call("onebyone", b"0.5"))
        await asyncio.sleep(0.1)
        try:
            await rt.call("onebyone", b"0", deadline=time.time() + 0.2)  # waits 0.4 s
            raise AssertionError("expected a 504")
        except errors.FunctionTimeout as exc:
            assert "did not run" in exc.message
        assert (await first).body == b"done"
        assert not [e for e in rt.events if isinstance(e, InstanceStopped)]
        assert not (await rt.call("onebyone", b"0")).cold  # the same instance, still warm
    finally:
        await rt.runtime.close()


async def test_a_burst_on_a_cold_function_queues_behind_one_start() -> None:
    # Five short calls at once on a function warm nowhere: one instance starts (~0.3 s) and
    # serves all five in turn (~0.25 s), sooner than four more starts would.
    rt = await make(scale_out_wait_s=0.1)
    try:
        results = await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(5)))
        assert all(r.body == b"done" for r in results)
        assert rt.runtime.pools["pair"].stats()["instances"] == 1
        # All five waited for the start, not only the first one on the instance.
        assert [r.cold for r in results] == [True] * 5
        assert not (await rt.call("pair", b"0")).cold
    finally:
        await rt.runtime.close()


async def test_calls_queued_behind_a_start_scale_out_once_it_serves_if_they_still_wait() -> None:
    # Long calls: behind the start, the second call waits; once the instance is up and busy
    # for 1 s, it waits the scale-out wait and then gets an instance of its own.
    rt = await make(scale_out_wait_s=0.1)
    try:
        results = await asyncio.gather(*(rt.call("pair", b"1.0") for _ in range(2)))
        assert all(r.body == b"done" for r in results)
        assert rt.runtime.pools["pair"].stats()["instances"] == 2
    finally:
        await rt.runtime.close()


async def test_with_no_scale_out_wait_a_burst_on_a_cold_function_starts_one_per_call() -> None:
    rt = await make(scale_out_wait_s=0)
    try:
        await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        assert rt.runtime.pools["pair"].stats()["instances"] == 2
    finally:
        await rt.runtime.close()


async def test_behind_a_start_the_queue_timeout_counts_from_when_the_start_ends() -> None:
    from tierfaas import errors

    # queue_timeout 0.2 s, a start of ~0.3 s: the second call outlives its queue timeout
    # while the instance starts, and is then served as soon as the first call ends.
    rt = await make(scale_out_wait_s=0.1, queue_timeout_s=0.2)
    try:
        first, second = await asyncio.gather(*(rt.call("pair", b"0.05") for _ in range(2)))
        assert first.body == second.body == b"done"
        assert rt.runtime.pools["pair"].stats()["instances"] == 1
        # Three 1 s calls on that one instance: the second waits 0.1 s, then an instance
        # starts for it (~0.3 s, longer than its 0.2 s queue timeout, which restarts when
        # the start ends); the third finds max_instances reached and no slot within 0.2 s
        # of that: 429, unrun.
        calls = [asyncio.create_task(rt.call("pair", b"1.0")) for _ in range(3)]
        outcome = await asyncio.gather(*calls, return_exceptions=True)
        assert [getattr(r, "body", None) for r in outcome[:2]] == [b"done", b"done"], outcome
        assert isinstance(outcome[2], errors.Overloaded), outcome
        assert rt.runtime.pools["pair"].stats()["instances"] == 2
    finally:
        await rt.runtime.close()


async def test_a_forwarded_call_behind_a_start_is_refused_busy_soon_after_the_start() -> None:
    from tierfaas import errors

    # A forwarded call queued behind a start whose instance goes to another call: once the
    # start ends it waits only the scale-out wait, then Busy (unrun), so the sender can run it
    # elsewhere, instead of waiting out the whole start timeout behind a long call.
    rt = await make(scale_out_wait_s=0.1)
    try:
        first = asyncio.create_task(rt.call("pair", b"2.0"))  # starts the instance (~0.3 s)
        await asyncio.sleep(0)
        began = asyncio.get_running_loop().time()
        try:
            await rt.call("pair", b"0", warm_only=True)
            raise AssertionError("expected Busy")
        except errors.Busy:
            pass
        assert asyncio.get_running_loop().time() - began < 1.5  # not after the 2 s call
        assert (await first).body == b"done"
    finally:
        await rt.runtime.close()


async def test_the_slot_due_time_follows_the_recent_call_time() -> None:
    rt = await make()
    try:
        pool = rt.runtime.pools["pair"]
        assert pool.slot_due_s() == float("inf")  # no call has finished here yet
        await rt.call("pair", b"0")
        await rt.call("pair", b"0.05")
        assert 0 < pool.slot_due_s() < 0.05  # the average of a ~0 s and a 50 ms call
    finally:
        await rt.runtime.close()


@contextlib.asynccontextmanager
async def warm_pair() -> AsyncIterator[tuple[Harness, FunctionPool]]:
    """A runtime with ``pair`` warm on one instance (one slot; a start takes ~0.3 s, longer
    than the 250 ms scale-out wait, so only the saturation rule starts a second)."""
    rt = await make(scale_out_wait_s=0.25)
    try:
        await rt.call("pair", b"0")
        yield rt, rt.runtime.pools["pair"]
    finally:
        await rt.runtime.close()


async def _keep_busy(
    rt: Harness, callers: int, call_s: float, pause_s: float, until: Callable[[], bool]
) -> None:
    """``callers`` loops calling ``pair`` for ``call_s`` each, ``pause_s`` apart, until
    ``until()`` or 4 s: a bounded load that stops by itself."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + 4.0

    async def caller() -> None:
        while loop.time() < stop and not until():
            answer = await rt.call("pair", str(call_s).encode())
            assert answer.body == b"done"
            if pause_s:
                await asyncio.sleep(pause_s)

    await asyncio.gather(*(caller() for _ in range(callers)))


async def test_a_function_kept_busy_by_calls_shorter_than_a_start_gets_another_instance() -> None:
    # Three callers of 20 ms calls on one instance with one slot: each call waits ~40 ms for
    # the slot, less than the scale-out wait (250 ms), so no call starts an instance; but the
    # slot is busy all the time, and the pool adds one once a second of it shows that.
    async with warm_pair() as (rt, pool):
        await _keep_busy(rt, 3, 0.02, 0.0, lambda: len(pool.instances) == 2)
        assert len(pool.instances) == 2


async def test_a_function_busy_half_the_time_keeps_its_one_instance() -> None:
    # Two callers of 10 ms calls, each pausing 30 ms: the slot is busy about half the time,
    # and calls sometimes queue for it briefly; that is no reason for another instance.
    async with warm_pair() as (rt, pool):
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5
        await _keep_busy(rt, 2, 0.01, 0.03, lambda: loop.time() > until)
        assert len(pool.instances) + pool.starting == 1


async def test_an_extra_instance_that_fails_to_start_fails_no_queued_call() -> None:
    from tierfaas.runtime.zygote_client import ZygoteError

    async with warm_pair() as (rt, pool):
        failed: list[str] = []

        def no_more_processes(spec: Any) -> Any:
            failed.append(spec.name)
            raise ZygoteError("no more processes (test)")

        rt.runtime.spawn_frame = no_more_processes  # type: ignore[method-assign]
        # Every call must still be answered by the one instance (the caller asserts it).
        await _keep_busy(rt, 3, 0.02, 0.0, lambda: bool(failed) and not pool.starting)
        assert failed == ["pair"]  # the extra start was tried, and failed
        assert len(pool.instances) == 1
