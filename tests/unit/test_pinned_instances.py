"""min_instances on a node (issue 19.5): the instances the master pins are started at once,
neither reaped nor evicted while the lease lasts, and ordinary once it ends."""

from __future__ import annotations

import pytest

from tierfaas import errors
from tierfaas.testing import RuntimeHarness, fake_release

RELEASE = fake_release(
    {
        "f": {"memory_mb": 64, "keep_alive_s": 1.0, "max_instances": 4},
        "g": {"memory_mb": 64, "keep_alive_s": 300.0},
        "h": {"memory_mb": 64, "keep_alive_s": 300.0},
    }
)


async def test_pinned_instances_start_and_outlive_their_keep_alive_until_the_lease_ends() -> None:
    async with RuntimeHarness(RELEASE, reap_interval_s=0.5) as rt:
        assert rt.runtime.pin({"f": 2}, lease_s=10.0) == {"f": 2}
        await rt.run_for(5.0)  # started, then idle far past keep_alive_s
        pool = rt.runtime.pools["f"]
        assert len(pool.instances) == 2 and pool.stats()["pinned"] == 2
        assert rt.runtime.pin({"f": 2}, lease_s=10.0) == {"f": 2}  # renewed: nothing starts
        assert rt.spawner.attempts == 2
        await rt.run_for(11.0)  # no renewal: the lease ends, the reaper takes them
        assert not pool.instances and pool.stats()["pinned"] == 0


async def test_a_plan_that_no_longer_names_a_function_unpins_it() -> None:
    async with RuntimeHarness(RELEASE, reap_interval_s=0.5) as rt:
        rt.runtime.pin({"f": 1}, lease_s=60.0)
        await rt.run_for(0.5)
        assert rt.runtime.pin({}, lease_s=60.0) == {}
        await rt.run_for(2.0)
        assert not rt.runtime.pools["f"].instances  # reaped after its keep-alive


async def test_a_pinned_instance_is_not_evicted_and_its_start_may_evict() -> None:
    async with RuntimeHarness(RELEASE, memory_budget_mb=128) as rt:
        for name in ("g", "h"):
            call = rt.call(name)
            await rt.run_for(0.5)
            assert call.result().cold
        rt.runtime.pin({"f": 1}, lease_s=60.0)  # the budget is full: evicts the older, g
        await rt.run_for(0.5)
        assert len(rt.runtime.pools["f"].instances) == 1
        assert not rt.runtime.pools["g"].instances
        call = rt.call("g")  # needs room: h goes, never the pinned f
        await rt.run_for(0.5)
        assert call.result().cold
        assert len(rt.runtime.pools["f"].instances) == 1
        assert not rt.runtime.pools["h"].instances


async def test_only_the_instances_beyond_the_pin_may_go_and_a_busy_one_counts() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        rt.runtime.pin({"f": 2}, lease_s=60.0)
        await rt.run_for(0.5)
        pool = rt.runtime.pools["f"]
        assert pool.idle_instances() == []
        rt.runtime.pin({"f": 1}, lease_s=60.0)
        older, newer = sorted(pool.instances, key=lambda i: i.last_used)
        assert pool.idle_instances() == [older]  # the most recently used one stays
        newer.busy = 1  # a busy instance covers the pin: the idle one may go
        assert pool.idle_instances() == [older]
        newer.busy, older.busy = 0, 1
        assert pool.idle_instances() == [newer]
        older.busy = 0


async def test_an_instance_beyond_the_pin_is_valued_behind_the_pinned_one() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        rt.runtime.pin({"f": 2}, lease_s=60.0)
        await rt.run_for(0.5)
        pool = rt.runtime.pools["f"]
        for _ in range(3):
            await rt.call("f")
        rt.runtime.pin({"f": 1}, lease_s=60.0)
        older, _ = sorted(pool.instances, key=lambda i: i.last_used)
        # The pinned, most recent one takes the next call; the other only a call arriving
        # while one runs (none did): it is not worth the function's frequency.
        assert pool.idle_values() == [(older, 0.0)]
        assert pool.call_frequency() > 2.9


async def test_an_unknown_function_changes_nothing() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        with pytest.raises(errors.UnknownFunction):
            rt.runtime.pin({"f": 1, "nope": 1}, lease_s=60.0)
        assert rt.spawner.attempts == 0
