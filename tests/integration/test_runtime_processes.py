"""The runtime with real instance processes (forked from a real zygote), no HTTP: what the
fakes of the unit tier cannot show (imports, limits, crashes, signals, real starts)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator

import pytest

from tests.real_runtime import Harness, make
from tierfaas import errors, procs
from tierfaas.runtime import FunctionWarm, InstanceStarted, InstanceStopped
from tierfaas.runtime.spawner import ZygoteSpawner


@pytest.fixture
async def rt() -> AsyncIterator[Harness]:
    harness = await make()
    yield harness
    await harness.runtime.close()


def alive(pid: int) -> bool:
    return procs.alive(pid, None)  # running, and not a zombie


async def test_first_call_is_cold_then_warm_on_the_same_instance(rt: Harness) -> None:
    first = await rt.call("echo", b"one")
    second = await rt.call("echo", b"two")
    assert (first.body, first.cold) == (b"one", True)
    assert (second.body, second.cold) == (b"two", False)
    started = [e for e in rt.events if isinstance(e, InstanceStarted)]
    assert len(started) == 1 and started[0].pid != os.getpid()
    assert FunctionWarm("echo") in rt.events


async def test_handler_gets_context_env_and_release_cwd(rt: Harness) -> None:
    result = await rt.call("ctx", b"", method="GET", query="a=1", headers={"x-custom": "yes"})
    assert result.content_type == "application/json"
    assert json.loads(result.body) == {
        "function": "ctx",
        "request_id": "req-1",
        "method": "GET",
        "query": "a=1",
        "header": "yes",
        "remaining_ok": True,
        "greeting": "bonjour",
        "cwd_is_release": True,
    }


async def test_async_handlers_run_concurrently_on_one_instance(rt: Harness) -> None:
    began = time.monotonic()
    results = await asyncio.gather(
        *(rt.call("asyncecho", b"%d" % i, query="0.3") for i in range(10))
    )
    assert [r.body for r in results] == [b"%d" % i for i in range(10)]
    assert time.monotonic() - began < 2.5  # 10 x 0.3 s would be 3 s if serialised
    assert rt.runtime.pools["asyncecho"].stats()["instances"] == 1


async def test_package_handler_with_relative_import(rt: Harness) -> None:
    assert (await rt.call("pkgfn", b"abc")).body == b"ABC"


async def test_handler_exception_is_500_with_type_and_message(rt: Harness) -> None:
    with pytest.raises(errors.HandlerFailed) as info:
        await rt.call("boomfn")
    assert (info.value.status, info.value.code) == (500, "ValueError")
    assert info.value.message == "bad input: 42"
    assert "Traceback" not in info.value.message


async def test_crash_is_502_and_the_instance_is_replaced(rt: Harness) -> None:
    with pytest.raises(errors.InstanceCrashed) as info:
        await rt.call("crash")
    assert info.value.status == 502
    assert "exited with code 7" in info.value.message
    with pytest.raises(errors.InstanceCrashed):
        await rt.call("crash")
    stopped = [e for e in rt.events if isinstance(e, InstanceStopped)]
    assert [e.reason for e in stopped] == ["crashed", "crashed"]


async def test_segfault_is_502_naming_the_signal(rt: Harness) -> None:
    with pytest.raises(errors.InstanceCrashed, match="SIGSEGV"):
        await rt.call("segv")
    assert (await rt.call("echo", b"still fine")).body == b"still fine"


async def test_memory_limit_is_502_out_of_memory(rt: Harness) -> None:
    with pytest.raises(errors.OutOfMemory) as info:
        await rt.call("oom")
    assert info.value.status == 502
    assert "memory limit of 64 MiB" in info.value.message


async def test_unserialisable_result_is_a_typed_500(rt: Harness) -> None:
    with pytest.raises(errors.HandlerFailed) as info:
        await rt.call("badresult")
    assert (info.value.status, info.value.code) == (500, "UnserializableResult")


async def test_oversized_result_is_502(rt: Harness) -> None:
    with pytest.raises(errors.ResponseTooLarge):
        await rt.call("huge")
    assert len((await rt.call("huge", b"1000")).body) == 1000


async def test_failing_init_is_502_start_failed_with_the_reason(rt: Harness) -> None:
    with pytest.raises(errors.StartFailed, match="init could not load its model") as info:
        await rt.call("flaky_init")
    assert info.value.status == 502
    assert rt.runtime.pools["flaky_init"].stats()["instances"] == 0


async def test_a_start_past_its_timeout_is_502_and_adds_no_instance() -> None:
    rt = await make()
    spawner = rt.runtime.spawner
    assert isinstance(spawner, ZygoteSpawner)
    # The zygote is up (it has its own start timeout); instances now get 0.1 s, and pair's
    # init takes ~0.3 s.
    spawner.config = dataclasses.replace(spawner.config, start_timeout_s=0.1)
    try:
        with pytest.raises(errors.StartFailed, match=r"within 0\.1 s") as info:
            await rt.call("pair")
        assert info.value.status == 502
        stopped = [e for e in rt.events if isinstance(e, InstanceStopped)]
        assert rt.runtime.pools["pair"].stats()["instances"] == 0 and stopped == []
    finally:
        await rt.runtime.close()


async def test_timeout_is_504_and_kills_the_instance(rt: Harness) -> None:
    await rt.call("slow", b"0.01")
    pid = next(e.pid for e in rt.events if isinstance(e, InstanceStarted))
    began = time.monotonic()
    with pytest.raises(errors.FunctionTimeout) as info:
        await rt.call("slow", b"3")
    assert info.value.status == 504
    assert time.monotonic() - began < 2.0
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.02)
    assert not alive(pid)
    assert (await rt.call("slow", b"0.01")).cold  # a new instance


async def test_a_call_arriving_past_its_deadline_does_not_run_nor_kill_the_instance(
    rt: Harness,
) -> None:
    # A forwarded call delivered late (after a partition heals, TCP hands the node a request
    # its sender gave up on long ago) is refused unrun; the warm instance stays.
    await rt.call("echo", b"warm")
    pid = next(e.pid for e in rt.events if isinstance(e, InstanceStarted))
    with pytest.raises(errors.FunctionTimeout, match="past its deadline") as info:
        await rt.call("echo", b"late", deadline=rt.runtime.clock() - 1.0)
    assert info.value.status == 504
    await asyncio.sleep(0.1)
    assert alive(pid)
    assert not [e for e in rt.events if isinstance(e, InstanceStopped)]
    assert not (await rt.call("echo", b"again")).cold


async def test_concurrency_limit_queues_then_429() -> None:
    rt = await make(queue_max=2, queue_timeout_s=0.3)
    try:
        calls = [asyncio.create_task(rt.call("onebyone", b"0.8")) for _ in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0].body == b"done"  # type: ignore[union-attr]
        assert isinstance(results[1], errors.Overloaded)  # waited 0.3 s, no slot came free
        assert isinstance(results[2], errors.Overloaded)  # the queue was full
        assert results[1].status == 429 and results[1].retry_after_s == 1
    finally:
        await rt.runtime.close()


async def test_queued_calls_run_one_at_a_time_on_concurrency_one() -> None:
    rt = await make(queue_timeout_s=5)
    try:
        began = time.monotonic()
        results = await asyncio.gather(*(rt.call("onebyone", b"0.3") for _ in range(3)))
        assert all(r.body == b"done" for r in results)
        assert time.monotonic() - began >= 0.85  # three 0.3 s calls in a row
        assert rt.runtime.pools["onebyone"].stats()["instances"] == 1
    finally:
        await rt.runtime.close()


async def test_memory_budget_evicts_the_least_recently_used_idle_instance() -> None:
    # Declared: room for two 64 MiB instances, however little they are measured to use.
    rt = await make(memory_budget_mb=128, memory_accounting="declared", eviction="lru")
    try:
        await rt.call("echo", b"1")
        await rt.call("jsonval", b"2")
        await rt.call("echo", b"3")  # echo is now the most recently used
        result = await rt.call("ctx")
        assert result.cold
        await asyncio.sleep(0.1)
        stopped = [e for e in rt.events if isinstance(e, InstanceStopped)]
        assert [(e.function, e.reason) for e in stopped] == [("jsonval", "evicted")]
        assert rt.runtime.memory_used_mb == 128
    finally:
        await rt.runtime.close()


async def test_unknown_function_is_404(rt: Harness) -> None:
    with pytest.raises(errors.UnknownFunction, match="/v1/functions"):
        await rt.call("nope")


async def test_close_leaves_no_instance_process() -> None:
    rt = await make()
    await rt.call("echo")
    await rt.call("jsonval")
    pids = [e.pid for e in rt.events if isinstance(e, InstanceStarted)]
    assert isinstance(rt.runtime.spawner, ZygoteSpawner)
    zygote = rt.runtime.spawner.zygote.pid
    assert zygote is not None and all(alive(p) for p in pids)
    await rt.runtime.close()
    await asyncio.sleep(0.2)
    assert not any(alive(p) for p in [*pids, zygote])


async def test_a_real_start_scales_out_a_busy_function() -> None:
    # pair: one slot per instance, a start of ~0.3 s (its init sleeps). The second of two
    # long calls waits the scale-out wait, then gets an instance of its own.
    rt = await make(scale_out_wait_s=0.1)
    try:
        results = await asyncio.gather(*(rt.call("pair", b"1.0") for _ in range(2)))
        assert all(r.body == b"done" for r in results)
        assert rt.runtime.pools["pair"].stats()["instances"] == 2
        started = [e for e in rt.events if isinstance(e, InstanceStarted)]
        assert len({e.pid for e in started}) == 2
    finally:
        await rt.runtime.close()


async def test_a_prewarmed_instance_is_a_real_process_that_serves() -> None:
    rt = await make()
    try:
        assert rt.runtime.prewarm("echo")
        assert FunctionWarm("echo") in rt.events  # registered as it starts
        for _ in range(200):
            if rt.runtime.pools["echo"].instances:
                break
            await asyncio.sleep(0.02)
        (started,) = [e for e in rt.events if isinstance(e, InstanceStarted)]
        assert alive(started.pid)
        assert not (await rt.call("echo", b"x")).cold
    finally:
        await rt.runtime.close()
