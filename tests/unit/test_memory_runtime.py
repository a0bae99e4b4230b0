"""The runtime's memory on fake instances: measured accounting keeps more instances warm than
declared, readings arrive every ``memory_sample_s`` and correct the bookings, pressure and
overuse evict idle instances, Greedy-Dual keeps the popular one. (Real cgroups and PSS:
tests/integration/test_memory_measured.py.)"""

from __future__ import annotations

from typing import Any

from tierfaas.runtime.events import InstanceStopped
from tierfaas.testing import RuntimeHarness, fake_release

TEN = fake_release({f"f{i}": {"keep_alive_s": 600} for i in range(10)})  # memory_mb 256


def evicted(rt: RuntimeHarness) -> list[str]:
    return [e.function for e in rt.events if isinstance(e, InstanceStopped)]


async def call_each(rt: RuntimeHarness, names: list[str], measured_mb: float | None) -> None:
    """One call to each of ``names`` in turn; each new instance measures ``measured_mb``."""
    for name in names:
        call = rt.call(name)
        await rt.run_for(0.3)
        assert call.done(), name
        call.result()
        for instance in rt.spawner.spawned:
            if instance.measured_mb is None:
                instance.measured_mb = measured_mb
        await rt.run_for(1.0)  # a reading round


def warm(rt: RuntimeHarness) -> int:
    return sum(len(p.instances) for p in rt.runtime.pools.values())


async def test_measured_accounting_keeps_ten_256_mib_functions_warm_in_1_gib() -> None:
    async with RuntimeHarness(TEN, memory_budget_mb=1024) as rt:
        await call_each(rt, list(TEN.functions), measured_mb=20)
        assert warm(rt) == 10 and evicted(rt) == []
        assert rt.runtime.memory_used_mb == 200
        report = rt.runtime.memory_report()
        assert (report.measured_mb, report.budget_mb, report.accounting) == (
            200, 1024, "measured",
        )  # fmt: skip


async def test_declared_accounting_keeps_budget_over_256_of_them() -> None:
    async with RuntimeHarness(TEN, memory_budget_mb=1024, memory_accounting="declared") as rt:
        await call_each(rt, list(TEN.functions), measured_mb=20)
        assert warm(rt) == 4 and len(evicted(rt)) == 6
        assert rt.runtime.memory_report().evictions == {"room": 6}


async def test_a_start_books_the_estimate_until_its_reading_arrives() -> None:
    async with RuntimeHarness(TEN, memory_budget_mb=1024, memory_sample_s=2.0) as rt:
        call = rt.call("f0")
        await rt.run_for(0.3)
        call.result()
        assert rt.runtime.memory_used_mb == 64  # min(256, 64): never measured
        rt.spawner.spawned[0].measured_mb = 30
        await rt.run_for(1.6)
        assert rt.runtime.memory_used_mb == 64  # the first round is at 2 s
        await rt.run_for(0.2)
        assert rt.runtime.memory_used_mb == 30
        assert rt.runtime.budget.estimate_mb(TEN.functions["f0"]) == 30  # its average now


async def test_pressure_evicts_idle_instances_by_value_and_never_busy_ones() -> None:
    release = fake_release({n: {"memory_mb": 64, "keep_alive_s": 600} for n in "abc"})
    async with RuntimeHarness(release, memory_pressure_pct=10.0) as rt:
        busy = rt.call("a", b"20")  # runs 20 s
        await call_each(rt, ["b", "c"], measured_mb=20)
        for _ in range(5):  # b more popular than c
            await rt.call("b")
        rt.probe.pressure_pct = 25.0
        await rt.run_for(1.0)
        assert evicted(rt) == ["c"]  # 10% of the use: one instance, the one worth least
        rt.probe.pressure_pct = 2.0
        await rt.run_for(3.0)
        assert evicted(rt) == ["c"]
        assert rt.runtime.memory_report().evictions == {"pressure": 1}
        assert not busy.done()
        await rt.run_for(20.0)
        assert busy.result().body == b"20"


async def test_measured_use_grown_past_the_budget_evicts_idle_instances() -> None:
    release = fake_release({n: {"memory_mb": 256, "keep_alive_s": 600} for n in "ab"})
    async with RuntimeHarness(release, memory_budget_mb=300) as rt:
        await call_each(rt, ["a", "b"], measured_mb=100)
        assert evicted(rt) == []
        rt.spawner.spawned[0].measured_mb = 250  # a grows
        await rt.run_for(1.0)
        assert evicted(rt) == ["a"]  # worth the least per MiB now
        assert rt.runtime.memory_used_mb <= 300
        assert rt.runtime.memory_report().evictions == {"over_budget": 1}


async def greedy_dual_victim(**settings: Any) -> list[str]:
    """``popular`` served 20 calls, then ``once`` one (more recently); ``third`` needs room
    for one of them."""
    release = fake_release(
        {n: {"memory_mb": 64, "keep_alive_s": 600} for n in ("popular", "once", "third")}
    )
    async with RuntimeHarness(release, memory_budget_mb=128, **settings) as rt:
        await call_each(rt, ["popular"], measured_mb=None)
        for _ in range(19):
            await rt.call("popular")
        await call_each(rt, ["once"], measured_mb=None)
        await call_each(rt, ["third"], measured_mb=None)
        return evicted(rt)


async def test_greedy_dual_evicts_the_instance_used_once_where_lru_evicts_the_popular() -> None:
    assert await greedy_dual_victim() == ["once"]
    assert await greedy_dual_victim(eviction="lru") == ["popular"]


async def test_an_extra_instance_a_peak_left_is_worth_only_the_calls_that_need_it() -> None:
    """``busy`` served 20 calls, two of them at once (a peak: it has a second instance), then
    ``quiet`` 3; ``third`` needs room for one instance. The second instance of ``busy`` is
    used only by a call that arrives while another runs (one did), ``quiet``'s only one by
    its every call: Greedy-Dual evicts the former."""
    names = ("busy", "quiet", "third")
    release = fake_release({n: {"memory_mb": 64, "keep_alive_s": 600} for n in names})
    async with RuntimeHarness(release, memory_budget_mb=192, memory_accounting="declared") as rt:
        peak = [rt.call("busy", b"1.0"), rt.call("busy", b"1.0")]
        await rt.run_for(2.0)
        assert [call.result().cold for call in peak] == [True, True]
        for _ in range(18):
            await rt.call("busy")
        pool = rt.runtime.pools["busy"]
        first, second = pool.idle_values()
        assert first[1] == pool.call_frequency()
        assert first[1] > 19.0 and second[1] < 1.01  # the peak's second call, decayed a bit
        assert first[0].last_used > second[0].last_used  # calls go to the most recent one
        await call_each(rt, ["quiet"], measured_mb=None)
        for _ in range(2):
            await rt.call("quiet")
        await call_each(rt, ["third"], measured_mb=None)
        assert evicted(rt) == ["busy"]
        assert len(pool.instances) == 1 and len(rt.runtime.pools["quiet"].instances) == 1


async def test_close_stops_the_reading_rounds() -> None:
    rt = RuntimeHarness(TEN, reap_interval_s=1.0)
    async with rt:
        await rt.run_for(2.5)
        rounds = rt.probe.rounds
        assert rounds == 2
    await rt.run_for(5.0)
    assert rt.probe.rounds == rounds
    assert rt.clock.pending() == 0
