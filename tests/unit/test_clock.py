"""The fake clock as a scheduler, and the production scheduler's conversion to its clock."""

from __future__ import annotations

import asyncio
import functools

import pytest

from tierfaas.clock import LoopScheduler
from tierfaas.testing import FakeClock, settle


def test_advance_runs_due_timers_in_time_order_each_at_its_own_time() -> None:
    clock = FakeClock(start=0.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock())))
    clock.call_at(1.0, lambda: fired.append(("a", clock())))
    # A callback's own timers run within the same advance when they fall inside it.
    clock.call_later(0.5, lambda: clock.call_later(0.25, lambda: fired.append(("c", clock()))))
    clock.call_later(3.0, lambda: fired.append(("late", clock())))
    clock.advance(2.5)
    assert fired == [("c", 0.75), ("a", 1.0), ("b", 2.0)]
    assert clock() == 2.5
    assert clock.pending() == 1


def test_timers_due_at_one_time_run_in_scheduling_order_and_cancelled_ones_never() -> None:
    clock = FakeClock()
    fired: list[int] = []
    timers = [clock.call_later(1.0, functools.partial(fired.append, n)) for n in range(4)]
    timers[2].cancel()
    clock.advance(1.0)
    assert fired == [0, 1, 3]
    timers[0].cancel()  # already ran: nothing happens
    assert clock.next_due() is None


def test_a_timer_in_the_past_runs_at_the_next_advance() -> None:
    clock = FakeClock(start=10.0)
    fired: list[float] = []
    clock.call_at(5.0, lambda: fired.append(clock()))
    clock.advance(0)
    assert fired == [10.0]
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_run_for_lets_what_a_timer_wakes_run_before_the_next_fires() -> None:
    clock = FakeClock(start=0.0)
    seen: list[float] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1.0)  # each sleep starts when the previous one ended
            seen.append(clock())

    task = asyncio.get_running_loop().create_task(ticker())
    await clock.run_for(10.0)
    assert task.done() and seen == [1.0, 2.0, 3.0]
    assert clock() == 10.0


async def test_the_loop_scheduler_converts_times_of_its_clock_to_delays() -> None:
    clock = FakeClock(start=500.0)
    scheduler = LoopScheduler(clock)
    assert scheduler.clock is clock
    fired: list[str] = []
    scheduler.call_at(400.0, lambda: fired.append("past"))  # due: runs at once
    later = scheduler.call_later(3600.0, lambda: fired.append("later"))
    await settle()
    assert fired == ["past"]
    later.cancel()
