"""``MemoryBudget``: booking instances' memory, evicting other pools' idle instances."""

from __future__ import annotations

from tierfaas.runtime.budget import MemoryBudget
from tierfaas.runtime.ports import PoolInstance
from tierfaas.testing import FakeClock, FakeInstance, fake_release

SPECS = fake_release({"a": {"memory_mb": 64}, "b": {"memory_mb": 64}}).functions


class Holder:
    def __init__(self, *instances: FakeInstance) -> None:
        self.instances = list(instances)

    def idle_instances(self) -> list[PoolInstance]:
        return [i for i in self.instances if not i.dead and not i.busy]


def instance(name: str, last_used: float) -> FakeInstance:
    one = FakeInstance(0, SPECS[name], FakeClock(), lambda body: 0.0)
    one.last_used = last_used
    return one


async def test_books_within_the_budget_and_releases() -> None:
    budget = MemoryBudget(128)
    assert budget.book(64) and budget.book(64)
    assert not budget.book(1)  # nothing to evict
    budget.release(64)
    assert budget.used_mb == 64
    budget.release(1000)
    assert budget.used_mb == 0  # never below nothing


async def test_past_the_budget_the_least_recently_used_idle_instances_of_others_go() -> None:
    old, recent, busy = instance("a", 1.0), instance("a", 5.0), instance("a", 0.5)
    busy.busy = 1
    others = Holder(old, recent, busy)
    asking = Holder(instance("b", 0.0))
    budget = MemoryBudget(192, [others, asking])
    for _ in range(3):
        assert budget.book(64)
    assert budget.book(64, exclude=asking)
    assert (old.death_reason, recent.dead, busy.dead) == ("evicted", False, False)
    assert not old.holds_memory  # its memory is free now, though its process ends later
    assert asking.instances[0].dead is False  # never its own
    assert budget.used_mb == 192


async def test_without_evict_a_start_that_does_not_fit_is_refused() -> None:
    idle = instance("a", 1.0)
    budget = MemoryBudget(64, [Holder(idle)])
    assert budget.book(64)
    assert not budget.book(64, evict=False)
    assert not idle.dead and budget.used_mb == 64
