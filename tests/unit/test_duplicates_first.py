"""``duplicates_first`` (pure) and its use in ``MemoryBudget``: with the cluster as one cache,
an idle instance whose function is also warm on another node is evicted before the others."""

from __future__ import annotations

from tierfaas.runtime.budget import MemoryBudget
from tierfaas.runtime.duplicates import duplicates_first
from tierfaas.runtime.eviction import Lru
from tierfaas.testing import FakeClock, FakeHolder, FakeInstance, fake_release

SPECS = fake_release(
    {"a": {"memory_mb": 64}, "b": {"memory_mb": 64}, "c": {"memory_mb": 64}}
).functions


def test_duplicates_move_to_the_front_and_each_part_keeps_its_order() -> None:
    ranked = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    asked: list[str] = []

    def elsewhere(function: str) -> bool:
        asked.append(function)
        return function == "b"

    result = duplicates_first(ranked, lambda item: item[0], elsewhere)
    assert result == [("b", 2), ("b", 5), ("a", 1), ("a", 3), ("c", 4)]
    assert sorted(asked) == ["a", "b", "c"]  # once per function


def test_nothing_warm_elsewhere_keeps_the_order() -> None:
    ranked = [("a", 1), ("b", 2)]
    assert duplicates_first(ranked, lambda item: item[0], lambda _: False) == ranked


def instance(name: str, last_used: float) -> FakeInstance:
    one = FakeInstance(0, SPECS[name], FakeClock(), lambda body: 0.0)
    one.last_used = last_used
    return one


def start(budget: MemoryBudget, one: FakeInstance) -> bool:
    """Books ``one``'s start and, if it fits, makes ``one`` the instance it started."""
    if not budget.book(one.spec):
        return False
    budget.started(one)
    return True


async def test_the_budget_evicts_a_duplicate_before_an_older_instance() -> None:
    oldest, duplicate = instance("a", 1.0), instance("b", 9.0)
    budget = MemoryBudget(128, [FakeHolder(oldest), FakeHolder(duplicate)], accounting="declared",
                          policy=Lru())  # fmt: skip
    budget.warm_elsewhere = lambda function: function == "b"
    assert start(budget, oldest) and start(budget, duplicate)
    assert budget.would_evict(SPECS["c"])
    assert budget.book(SPECS["c"])
    assert duplicate.death_reason == "evicted" and not oldest.dead


async def test_greedy_dual_order_also_puts_duplicates_first() -> None:
    busy_one, duplicate = instance("a", 1.0), instance("b", 9.0)
    # The duplicate's function is called far more here: worth more by value...
    budget = MemoryBudget(128, [FakeHolder(busy_one, frequency=1000),
                                FakeHolder(duplicate, frequency=100_000)],
                          accounting="declared", clock=FakeClock())  # fmt: skip
    budget.warm_elsewhere = lambda function: function == "b"
    assert start(budget, busy_one) and start(budget, duplicate)
    assert budget.book(SPECS["c"])
    assert duplicate.death_reason == "evicted" and not busy_one.dead


async def test_the_node_that_carries_the_functions_history_holds_no_duplicate() -> None:
    oldest, carrier = instance("a", 1.0), instance("b", 9.0)
    budget = MemoryBudget(128, [FakeHolder(oldest), FakeHolder(carrier)], accounting="declared",
                          policy=Lru())  # fmt: skip
    budget.warm_elsewhere = lambda function: function == "b"
    # This node learned b's windows from the history that travels: the copy elsewhere is the
    # duplicate (both nodes see the other warm, and each evicting its own would lose both).
    budget.carries_history = lambda function: function == "b"
    assert start(budget, oldest) and start(budget, carrier)
    assert budget.book(SPECS["c"])
    assert oldest.death_reason == "evicted" and not carrier.dead


async def test_without_warm_elsewhere_the_budget_evicts_the_least_recently_used() -> None:
    oldest, duplicate = instance("a", 1.0), instance("b", 9.0)
    budget = MemoryBudget(128, [FakeHolder(oldest), FakeHolder(duplicate)], accounting="declared",
                          policy=Lru())  # fmt: skip
    assert start(budget, oldest) and start(budget, duplicate)
    assert budget.book(SPECS["c"])
    assert oldest.death_reason == "evicted" and not duplicate.dead


def test_would_evict_is_false_while_the_start_fits() -> None:
    budget = MemoryBudget(128, accounting="declared")
    assert not budget.would_evict(SPECS["a"])
    assert budget.book(SPECS["a"])
    assert not budget.would_evict(SPECS["b"])
    assert budget.book(SPECS["b"])
    assert budget.would_evict(SPECS["c"])
