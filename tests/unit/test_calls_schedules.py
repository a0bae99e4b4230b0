"""The master's schedule ticker on a FakeClock: catch-up, ticks on time, stop, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.calls.cron import parse
from tierfaas.calls.schedules import (
    ScheduleTicker,
    crons_of,
    due_ticks,
    idempotency_key,
    next_tick,
)
from tierfaas.manifest import load_release
from tierfaas.testing import FakeClock
from tierfaas.testing.clock import settle


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def hm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


class Wall:
    """Wall time (Unix seconds) driven by a FakeClock, optionally stepped by hand."""

    def __init__(self, clock: FakeClock, start: str) -> None:
        self.clock = clock
        self.offset = at(start) - clock()

    def __call__(self) -> float:
        return self.clock() + self.offset

    def step(self, seconds: float) -> None:
        self.offset += seconds


class Fired(list[tuple[str, str]]):
    def __call__(self, function: str, tick: float) -> None:
        self.append((function, hm(tick)))


EVERY_5 = {"report": parse("*/5 * * * *")}


def ticker(
    clock: FakeClock, wall: Wall, fire: object, started_at: str | None = None, **kw: float
) -> ScheduleTicker:
    return ScheduleTicker(
        fire,  # type: ignore[arg-type]
        wall,
        clock,
        started_at=None if started_at is None else at(started_at),
        **kw,
    )


def test_due_ticks_are_the_half_open_window_in_order() -> None:
    crons = {"b": parse("*/10 * * * *"), "a": parse("*/5 * * * *")}
    due = due_ticks(crons, at("2026-12-03T13:00"), at("2026-12-03T13:10"))
    assert [(name, hm(tick)) for name, tick in due] == [
        ("a", "13:05:00"),
        ("a", "13:10:00"),
        ("b", "13:10:00"),
    ]
    assert due_ticks(crons, at("2026-12-03T13:10"), at("2026-12-03T13:10")) == []
    assert due_ticks({}, 0.0, 1e9) == []


def test_next_tick_of_any_function() -> None:
    crons = {"b": parse("7 * * * *"), "a": parse("*/5 * * * *")}
    assert hm(next_tick(crons, at("2026-12-03T13:06")) or 0) == "13:07:00"
    assert next_tick({}, 0.0) is None


def test_the_idempotency_key_names_the_function_and_the_whole_second() -> None:
    assert idempotency_key("report", at("2026-12-03T13:05")) == "schedule:report:1796303100"
    assert len(idempotency_key("f" * 64, at("2286-01-01T00:00"))) <= 128


async def test_ticks_fire_on_time_after_start() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:01:30")
    fired = Fired()
    ticker(clock, wall, fired, started_at="2026-12-03T13:01:00").start(EVERY_5)
    assert fired == []
    clock.advance(210 - 0.001)  # to 13:04:59.999
    assert fired == []
    clock.advance(0.001)
    assert fired == [("report", "13:05:00")]
    clock.advance(600)
    assert fired[1:] == [("report", "13:10:00"), ("report", "13:15:00")]


async def test_a_new_master_fires_the_catch_up_window_at_once() -> None:
    # The old master died around 13:05; this node (up since 12:00) becomes master at 13:06:10.
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:06:10")
    fired = Fired()
    ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=120).start(EVERY_5)
    assert fired == [("report", "13:05:00")]  # 13:04:10 < 13:05 <= 13:06:10
    clock.advance(300)
    assert fired == [("report", "13:05:00"), ("report", "13:10:00")]


async def test_a_tick_at_the_window_start_is_caught_up() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:07:00")
    fired = Fired()
    ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=120).start(EVERY_5)
    assert fired == [("report", "13:05:00")]


async def test_no_tick_before_the_nodes_own_start() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:05:30")
    fired = Fired()
    ticker(clock, wall, fired, started_at="2026-12-03T13:05:10", catchup_s=120).start(EVERY_5)
    assert fired == []  # 13:05 is before the node started: a new cluster owes nothing


async def test_stop_fires_nothing_more_and_a_restart_catches_up_again() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:00")
    fired = Fired()
    tick = ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=120)
    tick.start(EVERY_5)
    clock.advance(60)
    assert fired == [("report", "13:05:00")]
    tick.stop()
    assert not tick.running and clock.pending() == 0
    clock.advance(600)
    assert len(fired) == 1
    # Master again at 13:15:00: the 13:15 tick may have been fired by another master; the key
    # makes this repeat harmless, and a tick missed between two masters is not lost.
    tick.start(EVERY_5)
    assert fired[1:] == [("report", "13:15:00")]


async def test_a_long_pause_fires_only_the_window_not_a_backlog() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:00")
    fired = Fired()
    tick = ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=120)
    tick.start({"every": parse("* * * * *")})
    fired.clear()
    # The process is frozen for an hour: its timer fires late, once.
    wall.step(3600)
    clock.advance(60)
    # The ticks of the last 120 s, both ends in: 14:03, 14:04 and 14:05.
    assert fired == [("every", "14:03:00"), ("every", "14:04:00"), ("every", "14:05:00")]


async def test_a_wall_clock_stepped_back_fires_nothing_twice() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:00")
    fired = Fired()
    tick = ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=120)
    tick.start(EVERY_5)
    clock.advance(60)
    assert fired == [("report", "13:05:00")]
    wall.step(-120)  # 13:05 -> 13:03
    clock.advance(900)
    assert fired == [
        ("report", "13:05:00"),
        ("report", "13:10:00"),
        ("report", "13:15:00"),
    ]


async def test_an_early_timer_waits_for_the_wall_clock() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:00")
    fired = Fired()
    tick = ticker(clock, wall, fired, started_at="2026-12-03T12:00:00")
    tick.start(EVERY_5)
    wall.step(-10)  # the wall clock is slowed by NTP while the timer runs
    clock.advance(60)
    assert fired == []
    clock.advance(10)
    assert fired == [("report", "13:05:00")]


async def test_update_takes_a_new_releases_schedules() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:00")
    fired = Fired()
    tick = ticker(clock, wall, fired, started_at="2026-12-03T12:00:00")
    tick.start(EVERY_5)
    tick.update({"hourly": parse("@hourly")})
    clock.advance(3600)
    assert fired == [("hourly", "14:00:00")]
    tick.update({})
    assert clock.pending() == 0


async def test_a_failed_fire_is_retried_within_the_window_then_given_up() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:59")
    attempts: list[str] = []

    def refuse(function: str, tick: float) -> None:
        attempts.append(hm(wall()))
        raise RuntimeError("503: no holder")

    ticker(
        clock, wall, refuse, started_at="2026-12-03T12:00:00", catchup_s=60, retry_cap_s=30
    ).start(EVERY_5)
    clock.advance(200)
    # 13:05:00, then 1, 2, 4, 8, 16 s later; the next (30 s on) would pass 60 s: given up.
    assert attempts == ["13:05:00", "13:05:01", "13:05:03", "13:05:07", "13:05:15", "13:05:31"]


async def test_an_awaitable_fire_that_fails_is_retried() -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:04:59")
    calls: list[str] = []

    async def submit(function: str, tick: float) -> None:
        calls.append(hm(wall()))
        if len(calls) == 1:
            raise ConnectionError("no live peer")

    tick = ticker(clock, wall, submit, started_at="2026-12-03T12:00:00")
    tick.start(EVERY_5)
    await clock.run_for(1)
    await settle()
    await clock.run_for(2)
    assert calls == ["13:05:00", "13:05:01"]
    tick.stop()


def test_crons_of_a_release(tmp_path: Path) -> None:
    (tmp_path / "tierfaas.toml").write_text(
        '[release]\nname = "r"\nversion = "1"\n'
        '[functions.a]\nhandler = "fns:f"\nschedule = "0 * * * *"\n'
        '[functions.b]\nhandler = "fns:f"\n'
    )
    (tmp_path / "fns.py").write_text("def f(body):\n    return body\n")
    crons = crons_of(load_release(tmp_path).functions)
    assert list(crons) == ["a"]
    assert crons["a"].minutes == {0}


@pytest.mark.parametrize("catchup_s", [0.0, 30.0])
async def test_a_window_shorter_than_the_gap_fires_no_catch_up(catchup_s: float) -> None:
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:06:10")
    fired = Fired()
    ticker(clock, wall, fired, started_at="2026-12-03T12:00:00", catchup_s=catchup_s).start(EVERY_5)
    assert fired == []


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(["* * * * *", "*/5 * * * *", "7,8,9 * * * *", "@hourly"]),
    handovers=st.lists(
        st.tuples(st.floats(1.0, 4000.0), st.floats(0.0, 110.0)), min_size=1, max_size=5
    ),
)
def test_across_failovers_within_the_window_no_tick_is_lost(
    expression: str, handovers: list[tuple[float, float]]
) -> None:
    """Masters follow one another: each runs a while, dies, and the next starts up to 110 s
    later (detection plus election, within the 120 s window). Every tick from the first
    start to the end is fired by some master; repeats only come from the catch-up window
    (the key dedups them)."""
    clock = FakeClock()
    wall = Wall(clock, "2026-12-03T13:00:30")
    began = wall()
    crons = {"f": parse(expression)}
    fired: list[float] = []
    master = ScheduleTicker(lambda name, tick: fired.append(tick), wall, clock, started_at=began)
    master.start(crons)
    for run_s, gap_s in handovers:
        clock.advance(run_s)
        master.stop()  # it dies
        clock.advance(gap_s)
        # A node up since the cluster began becomes master.
        master = ScheduleTicker(
            lambda name, tick: fired.append(tick), wall, clock, started_at=began
        )
        master.start(crons)
    clock.advance(60)
    expected = list(crons["f"].ticks(began, wall()))
    assert sorted(set(fired)) == expected
    repeats = len(fired) - len(set(fired))
    assert repeats <= sum(1 for _ in handovers) * 3  # at most the catch-up window's ticks
