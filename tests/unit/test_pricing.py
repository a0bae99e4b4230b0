"""The priced keep-alive (runtime/pricing.py): the windows that maximize the cold starts an idle
instance is expected to catch less the memory it holds, at one price. Pure: no clock at all."""

from __future__ import annotations

import random

import pytest

from tierfaas.runtime import keepalive
from tierfaas.runtime.keepalive import IdleHistogram
from tierfaas.runtime.pricing import NOTHING, Choice, best_windows

WORTH = 256 * 600.0  # a cold start is worth a 256 MB instance held for 10 minutes


def bins_of(idle_times: list[float]) -> IdleHistogram:
    histogram = IdleHistogram()
    for idle_s in idle_times:
        histogram.add(idle_s)
    return histogram


def choose(idle_times: list[float], memory_mb: float, worth: float = WORTH) -> Choice:
    """The choice with the keep-alive's margins and shortest prewarm."""
    return best_windows(
        bins_of(idle_times).bins(),
        memory_mb,
        worth,
        keep_margin=keepalive.KEEP_ALIVE_MARGIN,
        prewarm_margin=keepalive.PREWARM_MARGIN,
        min_prewarm_s=keepalive.MIN_PREWARM_S,
    )


def value_of(idle_times: list[float], memory_mb: float, prewarm: float, until: float) -> float:
    """The exact value of windows (prewarm, until) on these idle times, at ``WORTH``."""
    caught = sum(1 for idle in idle_times if prewarm < idle <= until) / len(idle_times)
    held = sum(min(idle, until) - min(idle, prewarm) for idle in idle_times) / len(idle_times)
    return caught - memory_mb * held / WORTH


def test_a_function_called_every_few_seconds_is_kept_through_its_gaps() -> None:
    choice = choose([5.0] * 50, 256)
    assert choice.prewarm_s == 0.0
    assert choice.until_s == pytest.approx(5.5)
    assert choice.caught == 1.0
    assert choice.held_mb_s == pytest.approx(256 * 5.0)


def test_rare_unpredictable_calls_are_not_worth_an_instance() -> None:
    rng = random.Random(2)
    idle_times = [rng.expovariate(1 / 7200.0) for _ in range(200)]  # every 2 hours or so
    assert choose(idle_times, 512) == NOTHING


def test_an_hourly_timer_is_unloaded_and_prewarmed_just_before_its_call() -> None:
    idle_times = [3599.0 + 0.1 * i for i in range(10)]
    choice = best_windows(
        bins_of(idle_times).bins(),
        256,
        WORTH,
        start_s=0.5,
        keep_margin=0.1,
        prewarm_margin=0.05,
        min_prewarm_s=30.0,
    )
    assert choice.prewarm_s == pytest.approx(3599.0 * 0.95 - 0.5)
    assert choice.until_s == pytest.approx(3599.9 * 1.1)
    assert choice.caught == 1.0
    # Held from the prewarm to the call: minutes, not the hour a keep-alive would hold.
    assert choice.held_mb_s < 256 * 200


def test_a_prewarm_under_its_minimum_is_not_considered() -> None:
    idle_times = [20.0] * 30  # 20 s gaps: a stop and a start each time would not pay
    choice = choose(idle_times, 256)
    assert choice.prewarm_s == 0.0 and choice.until_s == pytest.approx(22.0)


def test_idle_times_past_the_range_are_never_caught_and_hold_the_whole_window() -> None:
    choice = choose([5 * 3600.0] * 10 + [20.0] * 10, 256)
    assert choice.until_s == pytest.approx(22.0) and choice.caught == pytest.approx(0.5)
    assert choice.held_mb_s == pytest.approx(256 * (20.0 + 22.0) / 2)  # every period holds the 30 s


def test_a_higher_price_keeps_instances_at_least_as_long() -> None:
    rng = random.Random(4)
    idle_times = [rng.lognormvariate(5.0, 1.5) for _ in range(300)]
    bins = bins_of(idle_times).bins()
    untils = [best_windows(bins, 256, worth).until_s for worth in (1e4, 1e5, 1e6, 1e7)]
    assert choose(idle_times, 256, 1e7).value > 0
    assert untils == sorted(untils) and untils[0] < untils[-1]


@pytest.mark.parametrize("seed", range(20))
def test_no_fixed_keep_alive_is_worth_more_on_the_same_idle_times(seed: int) -> None:
    # A fixed keep-alive k is the point (0, k) of the search: the choice is worth at least as
    # much, on the idle times themselves.
    rng = random.Random(seed)
    shape = rng.choice(["bursty", "poisson", "timer"])
    if shape == "bursty":
        # Bursts of calls seconds apart, between quiet times of 5 to 30 minutes.
        idle_times = [
            rng.uniform(0, 30) if rng.random() < 0.7 else rng.uniform(300, 2000) for _ in range(150)
        ]
    elif shape == "poisson":
        mean = rng.choice([60.0, 600.0, 3600.0])
        idle_times = [rng.expovariate(1 / mean) for _ in range(150)]
    else:
        period = rng.choice([60.0, 900.0, 3600.0])
        idle_times = [period + rng.gauss(0, 1) for _ in range(150)]
    memory_mb = rng.choice([64.0, 256.0, 512.0])
    choice = best_windows(
        bins_of(idle_times).bins(), memory_mb, WORTH, prewarm_margin=0.05, min_prewarm_s=30.0
    )
    # The value the choice is made by never overstates it (a prewarm's margin catches, at
    # most, idle times it does not count on).
    exact = value_of(idle_times, memory_mb, choice.prewarm_s, choice.until_s)
    assert choice.value <= exact + 1e-9
    for fixed in (0.0, 60.0, 300.0, 600.0, 1800.0):
        assert exact >= value_of(idle_times, memory_mb, 0.0, fixed) - 1e-9


def test_an_empty_histogram_or_no_price_gives_nothing() -> None:
    assert best_windows(IdleHistogram().bins(), 256, WORTH) == NOTHING
    assert best_windows(bins_of([5.0] * 10).bins(), 256, 0.0) == NOTHING


def test_an_instance_kept_at_all_is_kept_at_least_the_shortest_keep_alive() -> None:
    back_to_back = bins_of([0.01] * 50).bins()
    assert best_windows(back_to_back, 256, WORTH).until_s == pytest.approx(0.01)
    floored = best_windows(back_to_back, 256, WORTH, min_prewarm_s=30.0, min_keep_s=60.0)
    assert (floored.prewarm_s, floored.until_s, floored.caught) == (0.0, 60.0, 1.0)
    # The minute is priced like any window: calls rare enough are still not kept.
    rare = bins_of([0.01] * 5 + [5 * 3600.0] * 45).bins()  # 90 % past the range
    assert best_windows(rare, 512, WORTH, min_prewarm_s=30.0, min_keep_s=60.0) == NOTHING
