"""The learned keep-alive's pure core (runtime/keepalive.py): the idle-time histogram, the
windows it gives for typical call patterns, when it falls back to the fixed default, and which
idle instance is due to stop. Time is given, never read: no clock at all."""

from __future__ import annotations

import random

import pytest

from tierfaas.runtime import keepalive
from tierfaas.runtime.keepalive import (
    IdleHistogram,
    IdleTracker,
    Windows,
    bin_of,
    fixed_windows,
    reap_due,
)

DEFAULT_S = 300.0  # the manifest's keep_alive_s
WORTH = 256 * 600.0  # a cold start is worth a 256 MB instance held for 10 minutes


def learned_windows(
    histogram: IdleHistogram,
    keep_alive_s: float,
    start_s: float | None = None,
    gaps: IdleHistogram | None = None,
    *,
    memory_mb: float = 128.0,
    worth_mb_s: float = WORTH,
) -> Windows:
    """``keepalive.learned_windows`` for a 128 MB function at ``WORTH``."""
    return keepalive.learned_windows(
        histogram, keep_alive_s, start_s, gaps, memory_mb=memory_mb, worth_mb_s=worth_mb_s
    )


def calls(tracker: IdleTracker, starts: list[float], took_s: float) -> None:
    """One call at each time of ``starts`` (in order, none overlapping), each ``took_s`` long."""
    for start in starts:
        tracker.arrived(start)
        tracker.ended(start + took_s)


def histogram_of(idle_times: list[float]) -> IdleHistogram:
    histogram = IdleHistogram()
    for idle_s in idle_times:
        histogram.add(idle_s)
    return histogram


def test_bins_are_a_second_wide_under_a_minute_and_a_minute_wide_up_to_four_hours() -> None:
    assert [bin_of(s) for s in (0.0, 0.99, 1.0, 59.9)] == [0, 0, 1, 59]
    assert [bin_of(s) for s in (60.0, 119.9, 120.0)] == [60, 60, 61]
    assert bin_of(4 * 3600 - 0.1) == 59 + 239
    assert bin_of(4 * 3600) is None
    for idle_s in (0.0, 0.5, 1.0, 59.99, 60.0, 61.0, 3599.0, 14399.0):
        histogram = histogram_of([idle_s])
        index = bin_of(idle_s)
        assert index is not None and histogram.counts[index] == 1 == histogram.in_bounds
    assert histogram_of([14400.0]).out_of_bounds == 1


def test_a_timer_called_every_minute_is_prewarmed_shortly_before_it_and_kept_briefly() -> None:
    tracker = IdleTracker()
    calls(tracker, [60.0 * i for i in range(30)], took_s=0.1)  # 29 idle times of 59.9 s
    windows = learned_windows(tracker.histogram, DEFAULT_S, start_s=0.3)
    assert windows.source == "learned" and windows.reason.startswith("priced: catches 100%")
    assert 55.0 <= windows.prewarm_s < 59.9 - 0.3  # ready before the call
    assert windows.keep_alive_s < 15.0  # from the prewarm: unloaded between calls
    assert windows.prewarm_s + windows.keep_alive_s > 59.9  # ...but still there for it


def test_a_bursty_function_is_kept_through_its_usual_gaps_while_its_memory_is_worth_it() -> None:
    rng = random.Random(7)
    tracker = IdleTracker()
    now = 0.0
    gaps = []
    for _burst in range(6):
        for _call in range(30):  # calls 0.5 s apart, each 0.1 s
            calls(tracker, [now], took_s=0.1)
            now += 0.5
        gap = rng.uniform(8 * 60, 12 * 60)  # then quiet for about 10 minutes
        gaps.append(gap)
        now += gap
    windows = learned_windows(tracker.histogram, DEFAULT_S, memory_mb=64.0)
    assert windows.source == "learned"
    assert windows.prewarm_s == 0.0  # most idle times are short: never unload
    assert windows.keep_alive_s >= max(gaps[:-1])  # the next burst finds it warm
    assert windows.keep_alive_s <= 1.1 * (max(gaps) + 60)  # and not much longer
    # Eight times the memory: a 10-minute wait for one call in 30 is not worth it; the
    # shortest keep-alive covers the gaps within a burst.
    heavy = learned_windows(tracker.histogram, DEFAULT_S, memory_mb=512.0)
    assert heavy == Windows(keepalive.MIN_KEEP_ALIVE_S, 0.0, "learned", heavy.reason)


def test_a_function_called_every_few_seconds_gets_the_shortest_keep_alive() -> None:
    tracker = IdleTracker()
    calls(tracker, [3.0 * i for i in range(100)], took_s=0.05)
    windows = learned_windows(tracker.histogram, DEFAULT_S)
    assert windows.prewarm_s == 0.0 and windows.source == "learned"
    assert windows.keep_alive_s == keepalive.MIN_KEEP_ALIVE_S  # not 3.2 s: it may pause


def test_a_function_called_back_to_back_is_kept_a_minute_not_a_fraction_of_a_second() -> None:
    tracker = IdleTracker()
    calls(tracker, [0.1 * i for i in range(50)], took_s=0.1)  # idle times of 0
    windows = learned_windows(tracker.histogram, DEFAULT_S)
    assert (windows.keep_alive_s, windows.source) == (keepalive.MIN_KEEP_ALIVE_S, "learned")


def test_the_shortest_keep_alive_is_never_longer_than_the_functions_own() -> None:
    # A function that declares half a second is released that soon once learned too, however
    # closely its calls came (a minute would keep what its manifest asks to release).
    tracker = IdleTracker()
    calls(tracker, [0.1 * i for i in range(50)], took_s=0.1)
    windows = learned_windows(tracker.histogram, 0.5)
    assert windows.source == "learned" and windows.keep_alive_s <= 0.5


def test_too_few_idle_times_give_the_fixed_default() -> None:
    # Two clusters of idle times 10 s apart: a pattern, but not one tight enough to trust
    # from a few samples.
    periodic = [49.9, 59.9, 50.1, 59.5, 49.8, 59.7, 50.3, 59.9, 50.0]
    windows = learned_windows(histogram_of(periodic), DEFAULT_S)
    assert windows == Windows(DEFAULT_S, 0.0, "default", "9 idle times, fewer than 10")
    assert learned_windows(histogram_of([*periodic, 59.9]), DEFAULT_S).source == "learned"


def test_a_tight_pattern_is_learned_from_three_idle_times() -> None:
    # An hourly timer: waiting for 10 idle times would leave it cold for 10 hours.
    hourly = [3598.2, 3599.0]
    assert learned_windows(histogram_of(hourly), DEFAULT_S).source == "default"
    windows = learned_windows(histogram_of([*hourly, 3598.7]), DEFAULT_S)
    assert windows.source == "learned"
    assert 3598.2 * 0.9 < windows.prewarm_s < 3598.2
    # One odd time widens the spread past TIGHT_SHARE: back to the default until 10.
    odd = learned_windows(histogram_of([*hourly, 3598.7, 1200.0]), DEFAULT_S)
    assert odd.source == "default"


def test_a_timer_with_calls_of_varying_length_is_prewarmed_from_its_arrivals() -> None:
    # Every minute on the dot, but each call takes 1 to 9 s: the idle times spread over 8 s,
    # the gaps between arrivals over a fraction of a second.
    rng = random.Random(7)
    tracker = IdleTracker()
    start = 0.0
    for _ in range(30):
        took = rng.uniform(1.0, 9.0)
        tracker.arrived(start)
        tracker.ended(start + took)
        start += 60.0 + rng.uniform(-0.3, 0.3)
    by_end = learned_windows(tracker.histogram, DEFAULT_S)
    windows = learned_windows(tracker.histogram, DEFAULT_S, gaps=tracker.gaps)
    assert windows.anchor == "arrival" and windows.source == "learned"
    assert 0.95 * 59.7 - 1 < windows.prewarm_s < 59.7
    # Counted from the arrival, it starts later than the idle times' prewarm would after
    # the same call: ~48 s after the end of a 9 s call instead of ~48 s after a 1 s one.
    after_long = keepalive.windows_for_idle_period(windows, began=0.0, ended=9.0)
    after_short = keepalive.windows_for_idle_period(windows, began=0.0, ended=1.0)
    assert after_long.prewarm_s == pytest.approx(windows.prewarm_s - 9.0)
    assert after_short.prewarm_s == pytest.approx(windows.prewarm_s - 1.0)
    assert by_end.prewarm_s < after_short.prewarm_s
    assert after_short.anchor == "end"  # the idle period's windows count from its end
    # The keep-alive ends at the same moment after the arrival, whatever the call's length.
    assert after_long.prewarm_s + after_long.keep_alive_s == pytest.approx(
        windows.prewarm_s + windows.keep_alive_s - 9.0
    )


def test_an_activity_that_ends_close_to_the_prewarm_keeps_its_instance() -> None:
    windows = Windows(keep_alive_s=6.0, prewarm_s=57.0, source="learned", anchor="arrival")
    period = keepalive.windows_for_idle_period(windows, began=100.0, ended=140.0)
    # 17 s before the prewarm: not worth a stop and a start; kept until the keep-alive ends.
    assert period.prewarm_s == 0.0
    assert period.keep_alive_s == max(23.0, keepalive.MIN_KEEP_ALIVE_S)
    end_anchored = Windows(keep_alive_s=6.0, prewarm_s=57.0, source="learned")
    assert keepalive.windows_for_idle_period(end_anchored, 100.0, 140.0) is end_anchored


def test_idle_times_mostly_out_of_bounds_keep_only_what_the_rest_pays_for() -> None:
    idle_times = [5 * 3600.0] * 15 + [120.0] * 10  # 60% past the 4-hour range
    windows = learned_windows(histogram_of(idle_times), DEFAULT_S)
    assert windows.source == "learned" and windows.prewarm_s > 100.0
    assert windows.prewarm_s + windows.keep_alive_s == pytest.approx(120.0 * 1.1)


def test_rare_calls_spread_over_the_range_are_not_kept() -> None:
    rng = random.Random(3)
    idle_times = [rng.uniform(0, 4 * 3600.0) for _ in range(500)]
    windows = learned_windows(histogram_of(idle_times), 42.0, memory_mb=256.0)
    assert (windows.keep_alive_s, windows.prewarm_s, windows.source) == (0.0, 0.0, "learned")
    assert windows.reason == "priced: catches 0% of idle periods, holds 0 MB·s each"


def test_poisson_calls_are_kept_all_the_way_when_cheap_and_not_at_all_when_dear() -> None:
    # Calls that come at random keep coming at the same rate however long the wait: with no
    # prewarm to aim, an instance is worth its memory at every moment or at none.
    rng = random.Random(5)
    idle_times = [rng.expovariate(1 / 300.0) for _ in range(150)]  # mean 5 minutes
    histogram = histogram_of(idle_times)
    cheap = learned_windows(histogram, DEFAULT_S, memory_mb=64.0)
    assert cheap.source == "learned" and cheap.prewarm_s == 0.0
    assert cheap.keep_alive_s >= max(idle_times)
    dear = learned_windows(histogram, DEFAULT_S, memory_mb=4096.0)
    assert (dear.keep_alive_s, dear.prewarm_s, dear.source) == (0.0, 0.0, "learned")


def test_the_prewarm_starts_earlier_by_the_start_time_and_is_dropped_when_short() -> None:
    histogram = histogram_of([59.9] * 30)
    quick = learned_windows(histogram, DEFAULT_S, start_s=0.0)
    slow = learned_windows(histogram, DEFAULT_S, start_s=2.0)
    assert quick.prewarm_s - slow.prewarm_s == pytest.approx(2.0)
    assert quick.prewarm_s + quick.keep_alive_s == pytest.approx(slow.prewarm_s + slow.keep_alive_s)
    # Idle times of 20 s: stopping and restarting the instance each time is not worth it.
    short = learned_windows(histogram_of([20.5] * 30), DEFAULT_S)
    assert short.prewarm_s == 0.0 and short.keep_alive_s == keepalive.MIN_KEEP_ALIVE_S


def test_an_hourly_function_is_prewarmed_within_minutes_of_its_call() -> None:
    windows = learned_windows(histogram_of([3599.0] * 25), DEFAULT_S, start_s=0.5)
    assert 3300.0 < windows.prewarm_s < 3540.0
    assert windows.prewarm_s + windows.keep_alive_s >= 3600.0


def test_the_histogram_forgets_an_old_pattern() -> None:
    histogram = histogram_of([5.0] * 2000)  # called every few seconds, for long
    assert learned_windows(histogram, DEFAULT_S).prewarm_s == 0.0
    for _ in range(500):
        histogram.add(59.9)  # now a timer: the old idle times decay away
    assert histogram.samples < keepalive.DECAY_AT
    assert learned_windows(histogram, DEFAULT_S).prewarm_s > 50.0


def test_overlapping_calls_make_one_idle_time_per_gap_in_the_whole_activity() -> None:
    tracker = IdleTracker()
    tracker.arrived(0.0)
    tracker.arrived(0.5)  # on another instance, or another slot
    assert not tracker.ended(1.0)  # one still in flight: not idle
    assert tracker.ended(2.0)
    tracker.arrived(62.0)
    tracker.arrived(62.1)
    assert tracker.histogram.samples == 1
    assert tracker.histogram.percentile_bin(0.5) == (60.0, 120.0)  # 62 - 2 = 60 s idle


def test_the_first_call_makes_no_idle_time() -> None:
    tracker = IdleTracker()
    tracker.arrived(100.0)
    assert tracker.histogram.samples == 0 and tracker.active == 1


def test_without_a_prewarm_an_idle_instance_goes_keep_alive_after_its_last_call() -> None:
    windows = fixed_windows(30.0)
    for served in (True, False):
        for function_idle in (True, False):
            flags = {"served": served, "function_idle": function_idle}
            assert not reap_due(windows, now=129.9, last_used=100.0, **flags)
            assert reap_due(windows, now=130.0, last_used=100.0, **flags)


def test_with_a_prewarm_an_instance_that_served_goes_once_the_function_is_idle() -> None:
    windows = Windows(keep_alive_s=10.0, prewarm_s=55.0, source="learned")
    assert reap_due(windows, now=100.0, last_used=100.0, served=True, function_idle=True)
    # While other calls of the function run, an idle instance keeps the keep-alive window.
    assert not reap_due(windows, now=105.0, last_used=100.0, served=True, function_idle=False)
    assert reap_due(windows, now=110.0, last_used=100.0, served=True, function_idle=False)
    # A prewarmed instance that no call used yet waits for it, the keep-alive window long.
    assert not reap_due(windows, now=109.0, last_used=100.0, served=False, function_idle=True)
    assert reap_due(windows, now=110.0, last_used=100.0, served=False, function_idle=True)


def test_a_five_minute_timer_is_prewarmed_from_its_idle_times_not_its_bins_edge() -> None:
    # Idle times of 299-300 s fall in the 1-minute bin [240, 300): from its edge the prewarm
    # would start more than a minute early, the instance idle all that time.
    rng = random.Random(3)
    idle_times = [299.0 + rng.random() for _ in range(30)]
    histogram = histogram_of(idle_times)
    assert histogram.percentile_bin(0.05) == (240.0, 300.0)
    windows = learned_windows(histogram, DEFAULT_S, start_s=0.3)
    assert windows.source == "learned"
    assert min(idle_times) * 0.9 < windows.prewarm_s < min(idle_times) - 0.3
    assert windows.prewarm_s + windows.keep_alive_s >= max(idle_times)
    assert windows.keep_alive_s < 60.0


def test_the_keep_alive_covers_the_longest_idle_time_in_a_bin_not_its_edge() -> None:
    idle_times = [5.0] * 60 + [61.0] * 20  # the longer ones' bin is [60, 120)
    windows = learned_windows(histogram_of(idle_times), DEFAULT_S)
    assert windows.prewarm_s == 0
    assert windows.keep_alive_s == pytest.approx(61.0 * 1.1)


def test_an_extra_instance_keeps_the_learned_window_held_between_the_default_and_a_cap() -> None:
    # The histogram does not say how often a second instance is needed: a shorter learned
    # window gives way to the default, a much longer one is cut to 1.5 x the default.
    assert keepalive.EXTRA_KEEP_ALIVE_FACTOR == 1.5
    cases = {60.0: DEFAULT_S, 1.2 * DEFAULT_S: 1.2 * DEFAULT_S, 4 * 3600.0: 1.5 * DEFAULT_S}
    for learned_s, kept_s in cases.items():
        learned = Windows(keep_alive_s=learned_s, source="learned")
        extra = keepalive.extra_windows(learned, DEFAULT_S)
        assert (extra.keep_alive_s, extra.prewarm_s) == (kept_s, 0.0)
    assert keepalive.extra_windows(Windows(60.0, source="learned"), DEFAULT_S).source == "default"
    # One with a prewarm, and the fixed policy's, stay as they are.
    prewarmed = Windows(keep_alive_s=10.0, prewarm_s=50.0, source="learned")
    fixed = fixed_windows(30.0)
    for windows in (prewarmed, fixed):
        assert keepalive.extra_windows(windows, DEFAULT_S) is windows
