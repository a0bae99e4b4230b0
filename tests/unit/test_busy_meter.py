"""``BusyMeter``: the busy share of a function's slots over the last second."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.runtime.meter import BusyMeter
from tierfaas.testing.clock import FakeClock


def test_the_share_of_slot_time_spent_busy_over_the_last_window() -> None:
    clock = FakeClock()
    meter = BusyMeter(clock, window_s=1.0)
    assert meter.share() == 0.0  # no capacity yet
    meter.change(0, 1)  # one instance, idle
    clock.advance(0.25)
    meter.change(1, 1)  # busy for 0.5 s
    clock.advance(0.5)
    meter.change(0, 1)
    assert meter.share() == pytest.approx(0.5 / 0.75)  # the window so far
    clock.advance(0.25)  # the window completes: 0.5 of 1.0 busy
    assert meter.share() == pytest.approx(0.5)
    meter.change(2, 2)  # a second instance, both busy for the whole next window
    clock.advance(1.0)
    assert meter.share() == pytest.approx(1.0)


def test_a_window_in_which_nothing_changed_keeps_the_state_it_had() -> None:
    clock = FakeClock()
    meter = BusyMeter(clock, window_s=1.0)
    meter.change(1, 2)
    clock.advance(5.5)
    assert meter.share() == pytest.approx(0.5)
    meter.change(0, 2)
    clock.advance(3.0)
    assert meter.share() == 0.0


@given(st.lists(st.tuples(st.floats(0.001, 3.0), st.integers(0, 4), st.integers(0, 4))))
def test_the_share_is_always_between_0_and_1(steps: list[tuple[float, int, int]]) -> None:
    clock = FakeClock()
    meter = BusyMeter(clock, window_s=1.0)
    for dt, busy, extra in steps:
        meter.change(busy, busy + extra)  # busy never exceeds capacity
        clock.advance(dt)
        assert 0.0 <= meter.share() <= 1.0 + 1e-9
