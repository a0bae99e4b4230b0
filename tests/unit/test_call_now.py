"""A call sent at once, with no task (``Runtime.call_now`` / ``finish_now``, the node's path
for a call its function has a free slot for), on fake instances and a fake clock: it is
refused (None) with nothing changed when no slot is free, and otherwise leaves the pool, the
function's statistics and its result as ``Runtime.invoke`` leaves them, answered or failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tierfaas import errors
from tierfaas.runtime import Invocation, PendingCall
from tierfaas.testing import RuntimeHarness, fake_release

RELEASE = fake_release(
    {
        "echo": {"concurrency": 2, "max_instances": 1, "memory_mb": 64, "timeout_s": 5},
        "cold": {"memory_mb": 64},
    }
)


def call_now(rt: RuntimeHarness, name: str, body: bytes, **kwargs: Any) -> PendingCall | None:
    arguments: dict[str, Any] = {
        "request_id": "now-1", "method": "POST", "path": "/", "query": "", "headers": None,
        "started": rt.clock(),
    }  # fmt: skip
    arguments.update(kwargs)
    return rt.runtime.call_now(name, body, **arguments)


def finish(rt: RuntimeHarness, name: str, call: PendingCall) -> Invocation:
    return rt.runtime.finish_now(name, rt.clock(), "now-1", call)


def pool_state(rt: RuntimeHarness, name: str) -> dict[str, Any]:
    pool = rt.runtime.pools[name]
    return {
        **pool.stats(),
        "busy": [i.busy for i in pool.instances],
        "served": [i.calls_served for i in pool.instances],
        "in_flight": pool._calls_in_flight,
        "calls": pool.calls.count(rt.clock()),
        "share": pool.meter.share(),
    }


def stats_of(rt: RuntimeHarness, name: str) -> dict[str, Any]:
    snapshot = rt.runtime.stats.snapshot(name)
    return {key: snapshot[key] for key in ("calls", "errors")}


async def warmed(rt: RuntimeHarness, name: str = "echo") -> None:
    """``name`` started by a first call, answered, and its instance idle."""
    first = rt.call(name, b"")
    await rt.run_for(1.0)
    assert first.result().cold


async def test_no_free_slot_is_none_and_changes_nothing() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        before = (pool_state(rt, "cold"), stats_of(rt, "cold"))
        assert call_now(rt, "cold", b"x") is None  # no instance yet: invoke starts one
        assert (pool_state(rt, "cold"), stats_of(rt, "cold")) == before
        assert rt.spawner.spawned == []
        await warmed(rt)
        busy = [rt.call("echo", b"1.0") for _ in range(2)]  # both slots of the one instance
        await rt.run_for(0.1)
        assert call_now(rt, "echo", b"x") is None
        await rt.run_for(1.0)
        assert all(task.done() for task in busy)


async def test_an_unknown_function_is_a_404() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        with pytest.raises(errors.UnknownFunction):
            call_now(rt, "nope", b"")


@pytest.mark.parametrize("body", [b"", b"0.2"], ids=["at once", "after 0.2 s"])
async def test_an_answered_call_counts_as_invoke_counts_it(body: bytes) -> None:
    results = {}
    for way in ("invoke", "now"):
        async with RuntimeHarness(RELEASE) as rt:
            await warmed(rt)
            if way == "invoke":
                task = rt.call("echo", body)
                await rt.run_for(0.3)
                result = task.result()
            else:
                call = call_now(rt, "echo", body)
                assert call is not None and not call.cold
                assert rt.runtime.pools["echo"].instances[0].busy == 1
                await rt.run_for(0.3)
                assert call.future.done()
                result = finish(rt, "echo", call)
            results[way] = (result, pool_state(rt, "echo"), stats_of(rt, "echo"))
    assert results["now"] == results["invoke"]
    result, state, _ = results["now"]
    assert result == Invocation(body, "application/octet-stream", False, 200, None)
    assert state["busy"] == [0] and state["served"] == [2] and state["in_flight"] == 0


async def test_a_failed_call_counts_as_invoke_counts_it() -> None:
    outcomes = {}
    for way in ("invoke", "now"):
        async with RuntimeHarness(RELEASE) as rt:
            await warmed(rt)
            if way == "invoke":
                task = rt.call("echo", b"9")  # past the 5 s timeout: the instance is killed
                await rt.run_for(6)
                error = task.exception()
            else:
                call = call_now(rt, "echo", b"9")
                assert call is not None
                await rt.run_for(6)
                with pytest.raises(errors.FunctionTimeout) as raised:
                    finish(rt, "echo", call)
                error = raised.value
            assert isinstance(error, errors.FunctionTimeout)
            outcomes[way] = (pool_state(rt, "echo"), stats_of(rt, "echo"))
    assert outcomes["now"] == outcomes["invoke"]
    assert outcomes["now"][1]["errors"] == 1


async def test_a_call_out_of_time_before_it_is_sent_does_not_run() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        await warmed(rt)
        (instance,) = rt.spawner.spawned
        sent = len(instance.received)
        with pytest.raises(errors.FunctionTimeout, match="did not run"):
            call_now(rt, "echo", b"", started=rt.clock() - 6)  # arrived 6 s ago; 5 s allowed
        assert len(instance.received) == sent
        state = pool_state(rt, "echo")
        assert state["busy"] == [0] and state["in_flight"] == 0
        assert stats_of(rt, "echo")["errors"] == 1


async def test_the_handler_sees_the_context_invoke_gives_it() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        await warmed(rt)
        call = call_now(
            rt, "echo", b"", request_id="r-9", method="PUT", path="/a", query="q=1",
            headers={"x-h": "v"},
        )  # fmt: skip
        assert call is not None
        await asyncio.sleep(0)
        context = rt.spawner.spawned[0].received[-1][1]
        assert context is not None
        assert {k: context[k] for k in ("request_id", "method", "path", "query", "headers")} == {
            "request_id": "r-9", "method": "PUT", "path": "/a", "query": "q=1",
            "headers": {"x-h": "v"},
        }  # fmt: skip
        assert context["deadline"] > 0
