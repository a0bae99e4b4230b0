"""``eviction.py``: Greedy-Dual and LRU orders, the Greedy-Dual clock, victims."""

from __future__ import annotations

import pytest

from tierfaas.runtime.eviction import (
    FREQUENCY_HALF_LIFE_S,
    HISTORY,
    CallRate,
    Candidate,
    GreedyDual,
    Lru,
    make_policy,
    victims,
)
from tierfaas.testing import FakeClock


def candidate(
    key: str, last_used: float, frequency: int = 1, cost_s: float = 0.3, size_mb: float = 64
) -> Candidate:
    return Candidate(key, last_used, frequency, cost_s, size_mb)


def keys(ordered: list[Candidate]) -> list[str]:
    return [str(c.key) for c in ordered]


def test_lru_orders_by_last_use() -> None:
    clock = FakeClock()
    old = candidate("old", clock())
    clock.advance(5)
    new = candidate("new", clock(), frequency=1000)
    assert keys(Lru().order([new, old])) == ["old", "new"]


def test_greedy_dual_values_frequency_times_cost_over_size() -> None:
    now = FakeClock()()
    policy = GreedyDual()
    ordered = policy.order(
        [
            candidate("popular", now, frequency=10),
            candidate("slow_start", now, cost_s=6.0),
            candidate("fat", now, size_mb=512),
            candidate("plain", now),
        ]
    )
    # values: 10 * 0.3 / 64 = 3 / 64 < 1 * 6 / 64; 1 * 0.3 / 512 < 1 * 0.3 / 64
    assert keys(ordered) == ["fat", "plain", "popular", "slow_start"]


def test_greedy_dual_keeps_a_popular_instance_that_lru_would_evict() -> None:
    clock = FakeClock()
    popular = candidate("popular", clock(), frequency=100)
    clock.advance(60)
    once = candidate("once", clock())
    assert keys(GreedyDual().order([popular, once]))[0] == "once"
    assert keys(Lru().order([popular, once]))[0] == "popular"


def test_the_clock_rises_to_the_evicted_priority_and_ages_instances_not_used_since() -> None:
    clock = FakeClock()
    policy = GreedyDual()
    # Popular long ago: value 100 * 1 / 10 = 10.
    popular = candidate("popular", clock(), frequency=100, cost_s=1.0, size_mb=10)
    for i in range(12):
        clock.advance(1)
        # Each eviction of an instance used just now (clock + 1 * 1 / 1) raises the clock
        # by one.
        victim = candidate(f"v{i}", clock(), frequency=1, cost_s=1.0, size_mb=1)
        first = policy.order([popular, victim])[0]
        assert first.key == (f"v{i}" if i < 9 else "popular"), i  # 9: a tie, the older first
        policy.evicted(victim, clock())
    assert policy.clock == pytest.approx(12.0)
    # Used again now, it starts from the current clock: worth keeping again.
    fresh = candidate("popular", clock(), frequency=101, cost_s=1.0, size_mb=10)
    assert policy.priority(fresh) == pytest.approx(12.0 + 10.1)


def test_the_clock_at_a_use_is_the_one_in_effect_then() -> None:
    clock = FakeClock()
    policy = GreedyDual()
    before = clock()
    clock.advance(1)
    policy.evicted(candidate("x", before, frequency=5, cost_s=1.0, size_mb=1), clock())
    assert policy.clock_at(before) == 0.0
    assert policy.clock_at(clock()) == 5.0
    clock.advance(1)
    assert policy.clock_at(clock()) == 5.0


def test_the_history_is_bounded_and_older_uses_count_from_zero() -> None:
    clock = FakeClock()
    policy = GreedyDual()
    first_use = clock()
    for _ in range(HISTORY + 1):
        clock.advance(1)
        policy.evicted(candidate("x", clock(), cost_s=1.0, size_mb=1), clock())
    assert len(policy._times) <= HISTORY
    assert policy.clock_at(first_use) == 0.0
    assert policy.clock_at(clock()) == policy.clock


def test_victims_free_enough_or_none() -> None:
    ordered = [candidate("a", 0, size_mb=30), candidate("b", 0, size_mb=30), candidate("c", 0)]
    assert keys(victims(ordered, 50)) == ["a", "b"]
    assert keys(victims(ordered, 0)) == []
    assert keys(victims(ordered, 500)) == []  # all of them would not make the room
    assert keys(victims(ordered, 500, all_or_nothing=False)) == ["a", "b", "c"]


def test_make_policy_by_setting() -> None:
    assert isinstance(make_policy("greedy-dual"), GreedyDual)
    assert isinstance(make_policy("lru"), Lru)


def test_call_rate_halves_every_half_life() -> None:
    rate = CallRate(half_life_s=100.0)
    assert rate.count(0.0) == 0.0
    rate.called(0.0)
    rate.called(0.0)
    assert rate.count(0.0) == 2.0
    assert rate.count(100.0) == pytest.approx(1.0)
    rate.called(200.0)
    assert rate.count(200.0) == pytest.approx(1.5)
    assert rate.count(150.0) == pytest.approx(1.5)  # never read back in time
    assert CallRate().half_life_s == FREQUENCY_HALF_LIFE_S


def test_a_steady_rate_averages_what_count_expecting_gives_for_a_predicted_call() -> None:
    rate = CallRate(half_life_s=600.0)
    for i in range(2000):  # one call every 10 s, long enough to reach the steady count
        rate.called(10.0 * i)
    steady = rate.count(19_990.0)
    expected = CallRate(half_life_s=600.0).count_expecting(19_990.0, 10.0)
    assert expected == pytest.approx(steady, rel=0.01)
    assert rate.count_expecting(19_990.0, 3600.0) == steady  # the calls are worth more
