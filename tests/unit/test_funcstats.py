"""Per-function stats of a node (``tierfaas.funcstats``) on a FakeClock: counts since start,
the rate and p99 of the last minute, the ring of recent errors, and what the runtime records
for each call it runs."""

from __future__ import annotations

import pytest

from tierfaas import errors
from tierfaas.funcstats.stats import MESSAGE_CHARS, RECENT_ERRORS, FunctionStats, function_stats
from tierfaas.funcstats.window import (
    BIN_RATIO,
    WINDOW_S,
    CallWindow,
    bin_upper_ms,
    latency_bin,
    percentile_ms,
)
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release


def stats_on(clock: FakeClock) -> FunctionStats:
    return FunctionStats(["hello", "fails"], clock, wall=lambda: 1_700_000_000.5)


def fail(stats: FunctionStats, request_id: str, message: str = "boom", cold: bool = False) -> None:
    stats.failed(
        "fails", 0.010, cold, request_id=request_id, status=500, error="ValueError", message=message
    )


@pytest.mark.parametrize("ms", [0.001, 0.02, 0.5, 1.0, 3.3, 47.0, 999.0, 30_000.0])
def test_a_latency_falls_in_a_bin_whose_upper_bound_is_within_the_ratio(ms: float) -> None:
    upper = bin_upper_ms(latency_bin(ms))
    assert upper >= ms
    assert upper <= max(0.01, ms) * BIN_RATIO * 1.000001


def test_p99_is_the_bin_of_the_call_of_rank_ceil_99_percent() -> None:
    window = CallWindow()
    for _ in range(98):
        window.record(1000.2, 0.001, False)  # 1 ms
    window.record(1000.3, 0.100, False)  # 100 ms: rank 99 of 100
    window.record(1000.4, 5.0, True)  # 5 s: rank 100
    view = window.view(1000.5)
    assert (view.calls, view.errors) == (100, 1)
    assert view.p99_ms == pytest.approx(100.0, rel=BIN_RATIO - 1)
    assert view.p99_ms is not None and view.p99_ms >= 100.0


def test_no_calls_no_p99() -> None:
    assert CallWindow().view(5.0).p99_ms is None
    assert percentile_ms({}, 0, 0.99) is None


def test_the_window_forgets_calls_older_than_a_minute() -> None:
    window = CallWindow()
    window.record(100.5, 0.002, False)
    window.record(130.5, 0.002, True)
    assert window.view(159.9).calls == 2
    assert window.view(160.0).calls == 1  # second 100 is 60 s behind second 160: out
    assert window.view(190.0) == window.view(10_000.0)
    assert window.view(190.0).calls == 0


def test_a_slot_reused_a_minute_later_starts_from_zero() -> None:
    window = CallWindow()
    for _ in range(5):
        window.record(100.1, 2.0, True)
    window.record(100.0 + WINDOW_S + 0.5, 0.001, False)  # the same slot, a minute later
    view = window.view(100.0 + WINDOW_S + 0.6)
    assert (view.calls, view.errors) == (1, 0)
    assert view.p99_ms is not None and view.p99_ms < 0.01 * BIN_RATIO**150


def test_counts_since_start_and_rate_of_the_last_minute() -> None:
    clock = FakeClock(1000.0)
    stats = stats_on(clock)
    for _ in range(30):
        clock.advance(1.0)
        stats.ran("hello", 0.004, cold=False)
    stats.ran("hello", 0.2, cold=True)
    fail(stats, "r1", cold=True)
    hello = stats.snapshot("hello")
    assert hello == {
        "calls": 31, "errors": 0, "cold_starts": 1,
        "calls_per_s": pytest.approx(31 / 30, abs=0.001), "p99_ms": pytest.approx(200, rel=0.05),
    }  # fmt: skip
    assert stats.snapshot("fails")["errors"] == 1
    assert stats.snapshot("fails")["cold_starts"] == 1
    clock.advance(120.0)  # two minutes quiet: the window is empty, the totals stay
    hello = stats.snapshot("hello")
    assert (hello["calls"], hello["calls_per_s"], hello["p99_ms"]) == (31, 0.0, None)


def test_the_rate_divides_by_a_full_minute_once_the_node_is_older() -> None:
    clock = FakeClock(1000.0)
    stats = stats_on(clock)
    clock.advance(300.0)
    for _ in range(120):
        stats.ran("hello", 0.001, cold=False)
    assert stats.snapshot("hello")["calls_per_s"] == 2.0


def test_recent_errors_newest_first_at_most_twenty_messages_cut() -> None:
    clock = FakeClock()
    stats = stats_on(clock)
    for number in range(RECENT_ERRORS + 5):
        fail(stats, f"req-{number}", message="x" * 1000)
    recent = stats.recent_errors("fails")
    assert len(recent) == RECENT_ERRORS
    assert [e["request_id"] for e in recent[:2]] == ["req-24", "req-23"]
    assert recent[-1]["request_id"] == "req-5"
    assert recent[0] == {
        "time_ms": 1_700_000_000_500, "request_id": "req-24", "status": 500,
        "error": "ValueError", "message": "x" * MESSAGE_CHARS,
    }  # fmt: skip
    assert stats.snapshot("fails")["errors"] == RECENT_ERRORS + 5


def test_a_name_outside_the_release_is_not_kept() -> None:
    stats = stats_on(FakeClock())
    stats.ran("made-up", 0.001, cold=False)
    fail(stats, "r")
    assert "made-up" not in stats
    assert stats.snapshot("made-up")["calls"] == 0
    assert stats.recent_errors("made-up") == []


def test_the_entry_stats_add_the_instances_of_the_runtime_entry() -> None:
    stats = stats_on(FakeClock())
    stats.ran("hello", 0.001, cold=True)
    entry = function_stats(stats, {"name": "hello", "instances": 2, "busy": 1})
    assert entry["instances"] == 2 and entry["busy"] == 1 and entry["calls"] == 1
    assert set(entry) == {
        "calls", "errors", "cold_starts", "calls_per_s", "p99_ms", "instances", "busy"
    }  # fmt: skip


# -- what the runtime records ----------------------------------------------------------------

RELEASE = fake_release(
    {
        "echo": {"concurrency": 1, "max_instances": 1, "memory_mb": 64, "timeout_s": 1.0},
    }
)


async def test_the_runtime_counts_a_cold_call_a_warm_one_and_a_timeout() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        first = rt.call("echo", b"0.1")
        await rt.run_for(0.5)  # the fake start takes 0.3 s, then the call 0.1 s
        assert first.result().cold
        await rt.call("echo", b"0")
        late = rt.call("echo", b"5")  # longer than its 1 s timeout
        await rt.run_for(1.5)
        assert isinstance(late.exception(), errors.FunctionTimeout)
        snapshot = rt.runtime.stats.snapshot("echo")
        assert (snapshot["calls"], snapshot["errors"], snapshot["cold_starts"]) == (3, 1, 1)
        (recent,) = rt.runtime.stats.recent_errors("echo")
        assert recent["request_id"] == "req-3"
        assert (recent["status"], recent["error"]) == (504, "timeout")


async def test_a_forwarded_call_refused_unrun_is_not_counted() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        refused = rt.call("echo", b"0", warm_only=True)  # nothing warm here
        await rt.run_for(0.1)
        assert isinstance(refused.exception(), errors.NotWarm)
        assert rt.runtime.stats.snapshot("echo")["calls"] == 0
        assert rt.runtime.stats.recent_errors("echo") == []
