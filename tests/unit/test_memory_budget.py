"""``MemoryBudget``: booking instances' memory (declared or measured), evicting other pools'
idle instances by the eviction policy, and relieving measured overuse and pressure."""

from __future__ import annotations

import itertools

from tierfaas.manifest import FunctionSpec
from tierfaas.runtime.budget import MemoryBudget
from tierfaas.runtime.eviction import GreedyDual, Lru
from tierfaas.runtime.memory import MiB
from tierfaas.testing import FakeClock, FakeHolder, FakeInstance, fake_release

SPECS = fake_release(
    {"a": {"memory_mb": 64}, "b": {"memory_mb": 64}, "big": {"memory_mb": 256}}
).functions
_ids = itertools.count(1)


def instance(spec: FunctionSpec, last_used: float = 0.0, served: int = 0) -> FakeInstance:
    one = FakeInstance(next(_ids), spec, FakeClock(), lambda body: 0.0)
    one.last_used = last_used
    one.calls_served = served
    one.start_s = 0.3
    return one


def start(budget: MemoryBudget, one: FakeInstance, **kwargs: object) -> bool:
    """Books ``one``'s start and, if it fits, makes ``one`` the instance it started."""
    if not budget.book(one.spec, **kwargs):  # type: ignore[arg-type]
        return False
    budget.started(one)
    return True


async def test_declared_books_memory_mb_and_frees_it() -> None:
    budget = MemoryBudget(128, accounting="declared")
    first, second = instance(SPECS["a"]), instance(SPECS["a"])
    assert start(budget, first) and start(budget, second)
    assert not budget.book(SPECS["b"])  # nothing to evict
    budget.stopped(first)
    assert budget.used_mb == 64
    budget.stopped(first)  # twice: nothing more
    assert budget.used_mb == 64
    assert budget.book(SPECS["b"])
    budget.start_failed(SPECS["b"])
    assert budget.used_mb == 64


async def test_lru_evicts_the_least_recently_used_idle_instances_of_others() -> None:
    old, recent, busy = (instance(SPECS["a"], t) for t in (1.0, 5.0, 0.5))
    busy.busy = 1
    others = FakeHolder(old, recent, busy)
    asking = FakeHolder(instance(SPECS["b"]))
    budget = MemoryBudget(256, [others, asking], accounting="declared", policy=Lru())
    for one in (old, recent, busy, asking.instances[0]):
        assert start(budget, one)
    assert start(budget, instance(SPECS["b"]), exclude=asking)
    assert (old.death_reason, recent.dead, busy.dead) == ("evicted", False, False)
    assert not old.holds_memory  # its memory is free now, though its process ends later
    assert not asking.instances[0].dead  # never its own
    assert budget.used_mb == 256
    assert budget.report().evictions == {"room": 1}


async def test_without_evict_a_start_that_does_not_fit_is_refused() -> None:
    idle = instance(SPECS["a"])
    budget = MemoryBudget(64, [FakeHolder(idle)], accounting="declared")
    assert start(budget, idle)
    assert not budget.book(SPECS["a"], evict=False)
    assert not idle.dead and budget.used_mb == 64


async def test_nothing_is_evicted_when_the_idle_instances_cannot_make_the_room() -> None:
    idle = instance(SPECS["a"])
    budget = MemoryBudget(128, [FakeHolder(idle)], accounting="declared")
    assert start(budget, idle)
    assert not budget.book(SPECS["big"])  # 64 idle MiB would not make 256
    assert not idle.dead and budget.used_mb == 64


async def test_greedy_dual_keeps_the_instance_of_the_more_called_function() -> None:
    # The frequency is the function's (its holder's), not the instance's own calls.
    popular, recent = instance(SPECS["a"], 1.0), instance(SPECS["b"], 9.0, served=50)
    policy = GreedyDual()
    budget = MemoryBudget(128, [FakeHolder(popular, frequency=50), FakeHolder(recent)],
                          accounting="declared", policy=policy, clock=FakeClock())  # fmt: skip
    assert start(budget, popular) and start(budget, recent)
    assert start(budget, instance(SPECS["a"]))
    assert recent.death_reason == "evicted" and not popular.dead
    assert policy.clock > 0  # the clock rose to the evicted one's priority


async def test_measured_books_an_estimate_then_the_reading() -> None:
    budget = MemoryBudget(1024, accounting="measured")
    first = instance(SPECS["big"])
    assert budget.estimate_mb(SPECS["big"]) == 64  # never measured: min(memory_mb, 64)
    assert budget.estimate_mb(SPECS["a"]) == 64
    assert start(budget, first)
    assert budget.used_mb == 64
    budget.measured({first: 12 * MiB})
    assert budget.used_mb == 12 and budget.measured_mb == 12
    assert budget.estimate_mb(SPECS["big"]) == 12  # the function's recent average now
    budget.measured({first: 22 * MiB})
    assert 12 < budget.estimate_mb(SPECS["big"]) < 22
    budget.measured({first: None})  # not read this round: the last reading stands
    assert budget.used_mb == 22


async def test_an_estimate_never_exceeds_memory_mb() -> None:
    budget = MemoryBudget(1024, accounting="measured")
    one = instance(SPECS["a"])
    assert start(budget, one)
    budget.measured({one: 90 * MiB})  # more than its limit (PSS of a process: possible)
    assert budget.estimate_mb(SPECS["a"]) == 64


async def test_measured_keeps_more_instances_than_the_declared_limits_allow() -> None:
    budget = MemoryBudget(512, accounting="measured")
    started = []
    for _ in range(20):
        one = instance(SPECS["big"])
        if not start(budget, one):
            break
        started.append(one)
        budget.measured({one: 20 * MiB})
    assert len(started) == 20  # declared: 512 / 256 = 2
    assert budget.used_mb == 400


async def test_declared_ignores_readings_for_admission_but_reports_them() -> None:
    budget = MemoryBudget(512, accounting="declared")
    one = instance(SPECS["big"])
    assert start(budget, one)
    budget.measured({one: 20 * MiB})
    report = budget.report()
    assert (report.booked_mb, report.measured_mb, report.budget_mb) == (256, 20, 512)


async def test_a_reading_of_a_stopped_instance_is_ignored() -> None:
    budget = MemoryBudget(512, accounting="measured")
    one = instance(SPECS["a"])
    assert start(budget, one)
    budget.stopped(one)
    budget.measured({one: 30 * MiB})
    assert budget.used_mb == 0 and budget.measured_mb == 0


async def test_relieve_evicts_the_overuse_when_measured_use_grows_past_the_budget() -> None:
    grown, small, busy = (instance(SPECS["big"], t) for t in (1.0, 2.0, 3.0))
    busy.busy = 1
    budget = MemoryBudget(
        300, [FakeHolder(grown, small, busy)], accounting="measured", policy=Lru()
    )
    for one in (grown, small, busy):
        assert start(budget, one)
    assert budget.relieve(None, 10.0) == 0  # 192 of 300: nothing to do
    budget.measured({grown: 200 * MiB, small: 30 * MiB, busy: 100 * MiB})
    assert budget.relieve(None, 10.0) == 1
    assert grown.death_reason == "evicted" and not small.dead and not busy.dead
    assert budget.used_mb == 130
    assert budget.report().evictions == {"over_budget": 1}


async def test_relieve_evicts_under_pressure_only_past_the_threshold() -> None:
    instances = [instance(SPECS["a"], float(t)) for t in range(5)]
    budget = MemoryBudget(1024, [FakeHolder(*instances)], accounting="measured", policy=Lru())
    for one in instances:
        assert start(budget, one)
    assert budget.relieve(9.0, 10.0) == 0
    assert budget.relieve(50.0, 0.0) == 0  # threshold 0: off
    assert budget.relieve(None, 10.0) == 0  # no PSI on this kernel
    assert budget.relieve(12.5, 10.0) == 1  # 10% of 320 MiB booked: one instance
    assert instances[0].death_reason == "evicted"
    assert budget.report().evictions == {"pressure": 1}


async def test_the_report_counts_the_evictions_of_the_last_minute() -> None:
    clock = FakeClock()
    instances = [instance(SPECS["a"], float(t)) for t in range(3)]
    budget = MemoryBudget(64 * 3, [FakeHolder(*instances)], accounting="declared", clock=clock)
    for one in instances:
        assert start(budget, one)
    assert start(budget, instance(SPECS["b"]))
    clock.advance(30)
    assert start(budget, instance(SPECS["b"]))
    assert budget.report().evictions_last_min == 2
    clock.advance(30)
    assert budget.report().evictions_last_min == 1
    assert budget.report().evictions == {"room": 2}
