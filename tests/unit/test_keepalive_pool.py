"""Learned keep-alive in the pool, on fake instances and a fake clock: a timer function's
instance is stopped between calls and prewarmed before each, so its calls are warm; a bursty
function is kept through its gaps; with ``--keep-alive-policy fixed`` nothing of that happens.
The windows show in ``GET /v1/functions`` (``Runtime.functions``) and ``/metrics``."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from tierfaas.http.metrics import Metrics
from tierfaas.runtime import keepalive
from tierfaas.runtime.events import InstanceStarted, InstanceStopped
from tierfaas.testing import RuntimeHarness, fake_release

# keep_alive_s 30: a fixed keep-alive stops the timer's instance before each of its calls.
RELEASE = fake_release(
    {
        "timer": {"memory_mb": 64, "keep_alive_s": 30},
        "bursty": {"memory_mb": 64},  # keep_alive_s 300
        "pair": {"memory_mb": 64, "concurrency": 1, "keep_alive_s": 30},
    }
)
PERIOD_S = 60.0
START_S = 0.3  # FakeSpawner's start time


async def every_minute(
    rt: RuntimeHarness, name: str, count: int, body: bytes = b"0.1"
) -> list[bool]:
    """Calls ``name`` once a minute, ``count`` times; whether each was cold."""
    cold = []
    for _ in range(count):
        call = rt.call(name, body)
        await rt.run_for(PERIOD_S)
        cold.append(call.result().cold)
    return cold


def stopped(rt: RuntimeHarness, name: str) -> list[InstanceStopped]:
    return [e for e in rt.events if isinstance(e, InstanceStopped) and e.function == name]


def started(rt: RuntimeHarness, name: str) -> list[InstanceStarted]:
    return [e for e in rt.events if isinstance(e, InstanceStarted) and e.function == name]


async def test_a_timer_is_prewarmed_before_each_call_once_learned_and_not_kept_between() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        pool = rt.runtime.pools["timer"]
        learning = await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 2)
        # 30 s fixed keep-alive: cold until the tight pattern is learned.
        assert all(learning[: keepalive.MIN_TIGHT_SAMPLES])
        windows = pool.windows
        assert windows.source == "learned"
        assert 55.0 <= windows.prewarm_s < PERIOD_S - 0.1 - START_S
        cold = await every_minute(rt, "timer", 10)
        assert not any(cold)
        # Between two calls the instance is stopped once the call ends (next reap round) and
        # one starts again shortly before the next call.
        before, prewarms = len(stopped(rt, "timer")), pool.prewarms
        call = rt.call("timer", b"0.1")
        await rt.run_for(1.2)
        assert len(stopped(rt, "timer")) == before + 1
        assert pool.stats()["instances"] == 0
        await rt.run_for(windows.prewarm_s + START_S)
        assert pool.stats()["instances"] == 1
        assert pool.prewarms == prewarms + 1
        assert not call.result().cold


async def test_with_the_fixed_policy_the_timer_stays_cold_and_nothing_is_prewarmed() -> None:
    async with RuntimeHarness(RELEASE, keep_alive_policy="fixed") as rt:
        cold = await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 12)
        assert all(cold)
        pool = rt.runtime.pools["timer"]
        assert pool.prewarms == 0 and pool.windows == keepalive.fixed_windows(30.0)
        view = pool.keep_alive_view()
        assert view["keep_alive_source"] == "default" and view["idle_samples"] == 0
        # Each instance went 30 s after its call, at the reaper's round.
        assert len(stopped(rt, "timer")) == len(cold)


async def test_a_prewarmed_instance_no_call_uses_goes_after_the_keep_alive_window() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 3)
        windows = rt.runtime.pools["timer"].windows
        assert windows.prewarm_s > 0
        pool = rt.runtime.pools["timer"]
        # The last minute ended with the prewarm of the next call, which never comes.
        assert pool.stats()["instances"] == 1 and pool.prewarms > 0
        count = len(started(rt, "timer"))
        await rt.run_for(windows.keep_alive_s)
        assert stopped(rt, "timer")[-1].reason == "idle"
        assert pool.stats()["instances"] == 0
        await rt.run_for(600.0)
        assert len(started(rt, "timer")) == count  # no activity, no prewarm


async def test_a_bursty_function_is_kept_through_its_gaps_and_its_bursts_start_warm() -> None:
    async def burst(rt: RuntimeHarness) -> bool:
        """Ten calls 0.5 s apart, then ten quiet minutes; whether the first was cold."""
        first = rt.call("bursty", b"0.1")
        await rt.run_for(0.5)
        for _ in range(9):
            rt.call("bursty", b"0.1")
            await rt.run_for(0.5)
        await rt.run_for(600.0)
        return first.result().cold

    # (The reaper's round at 5 s, not 1 s: a shorter test, the same outcome.)
    async with RuntimeHarness(RELEASE, keep_alive_policy="fixed", reap_interval_s=5.0) as fixed_rt:
        assert [await burst(fixed_rt) for _ in range(5)] == [True] * 5  # 300 s < the gaps
    async with RuntimeHarness(RELEASE, reap_interval_s=5.0) as rt:
        cold = [await burst(rt) for _ in range(5)]
        assert cold == [True, True, False, False, False]  # learned from the 1st gap on
        windows = rt.runtime.pools["bursty"].windows
        assert windows.source == "learned" and windows.prewarm_s == 0
        assert 600.0 < windows.keep_alive_s < 800.0


async def test_overlapping_calls_on_two_instances_make_one_idle_time_per_minute() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        pool = rt.runtime.pools["pair"]
        for _ in range(keepalive.MIN_SAMPLES + 3):
            rt.call("pair", b"0.5")
            rt.call("pair", b"0.5")  # concurrency 1: a second instance
            await rt.run_for(PERIOD_S)
        assert pool.keep_alive_view()["idle_samples"] == keepalive.MIN_SAMPLES + 2
        assert pool.windows.prewarm_s > 50.0
        # Both instances go at the end of the activity; one is prewarmed for the next pair,
        # so one of its calls is warm and the other waits for a start (documented).
        calls = [rt.call("pair", b"0.5"), rt.call("pair", b"0.5")]
        await rt.run_for(2.0)
        assert sorted(c.result().cold for c in calls) == [False, True]


async def test_the_windows_show_in_functions_and_metrics() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 3)
        shown = {f["name"]: f for f in rt.runtime.functions()}
        timer = shown["timer"]
        assert timer["keep_alive_source"] == "learned"
        assert timer["keep_alive_reason"].startswith("priced: catches 100% of idle periods")
        assert 55.0 <= timer["prewarm_window_s"] < 60.0
        assert 0 < timer["keep_alive_window_s"] < 15.0
        assert timer["idle_samples"] == keepalive.MIN_SAMPLES + 2
        bursty = shown["bursty"]
        assert (bursty["keep_alive_source"], bursty["keep_alive_window_s"]) == ("default", 300.0)
        assert bursty["keep_alive_reason"] == "0 idle times, fewer than 10"
        metrics = Metrics()
        metrics.watch_keep_alive(rt.runtime.keep_alive)
        text = generate_latest(metrics.registry).decode()
        assert 'tierfaas_keep_alive_window_seconds{function="bursty"} 300.0' in text
        assert 'tierfaas_prewarm_window_seconds{function="bursty"} 0.0' in text
        assert 'tierfaas_keep_alive_learned{function="timer"} 1.0' in text
        assert 'tierfaas_keep_alive_learned{function="pair"} 0.0' in text
        # Learned from its 3rd idle time (a tight pattern): calls 5 to 13 were prewarmed.
        assert 'tierfaas_prewarms_total{function="timer"} 9.0' in text


async def test_a_prewarm_for_a_predicted_call_evicts_an_idle_instance_when_memory_is_full() -> None:
    """A budget of one instance: the timer's prewarm evicts the idle "bursty" instance that
    took the room meanwhile, so the timer's predicted call stays warm (a prewarm that never
    evicted left it cold in a full node)."""
    async with RuntimeHarness(RELEASE, memory_budget_mb=64, memory_accounting="declared") as rt:
        pool = rt.runtime.pools["timer"]
        await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 2)
        assert pool.windows.source == "learned"
        call = rt.call("timer", b"0.1")
        await rt.run_for(1.2)  # the timer's instance stops once its call ended
        assert pool.stats()["instances"] == 0
        rt.call("bursty", b"0.1")  # takes the whole budget, then idles
        await rt.run_for(5.0)
        assert rt.runtime.pools["bursty"].stats()["instances"] == 1
        assert not call.result().cold
        await rt.run_for(PERIOD_S - 6.2)  # the timer's next call is due a period after
        nxt = rt.call("timer", b"0.1")
        await rt.run_for(1.0)
        assert not nxt.result().cold
        assert any(e.reason == "evicted" for e in stopped(rt, "bursty"))


async def test_a_second_instance_of_a_learned_function_is_kept_the_fixed_default() -> None:
    # Calls every 3 s learn the shortest keep-alive (60 s); a peak of two overlapping calls
    # adds a second instance, which the histogram knows nothing of: it stays the function's
    # keep_alive_s (300 s) after its call, while the first follows the learned window.
    async with RuntimeHarness(RELEASE, reap_interval_s=5.0) as rt:
        pool = rt.runtime.pools["bursty"]
        for _ in range(keepalive.MIN_SAMPLES + 5):
            rt.call("bursty", b"0.1")
            await rt.run_for(3.0)
        windows = pool.windows
        assert (windows.prewarm_s, windows.source) == (0.0, "learned")
        assert windows.keep_alive_s == keepalive.MIN_KEEP_ALIVE_S
        first, second = rt.call("bursty", b"1.0"), rt.call("bursty", b"1.0")
        await rt.run_for(2.0)
        assert first.done() and second.done()
        assert pool.stats()["instances"] == 2
        for _ in range(30):  # the function stays busy on its most recently used instance
            rt.call("bursty", b"0.1")
            await rt.run_for(3.0)
        assert pool.stats()["instances"] == 2  # 90 s idle: past 60 s, not past 300 s
        await rt.run_for(300.0)
        assert pool.stats()["instances"] == 0


async def test_a_second_instance_is_kept_at_most_a_cap_under_a_long_learned_window() -> None:
    # Bursts ten minutes apart learn a keep-alive past ten minutes for the function; a peak's
    # second instance is not kept that long (the histogram does not say how often a second
    # one is needed): it goes at 1.5 x the function's keep_alive_s (180 s), the first stays
    # for the learned window.
    release = fake_release({"peaky": {"memory_mb": 64, "keep_alive_s": 120}})
    async with RuntimeHarness(release, reap_interval_s=5.0) as rt:
        pool = rt.runtime.pools["peaky"]
        for _ in range(3):
            for _ in range(10):
                rt.call("peaky", b"0.1")
                await rt.run_for(0.5)
            await rt.run_for(600.0)
        windows = pool.windows
        assert windows.source == "learned" and windows.prewarm_s == 0
        assert windows.keep_alive_s > 600.0
        calls = [rt.call("peaky", b"1.0"), rt.call("peaky", b"1.5")]  # the first ends first
        await rt.run_for(2.0)
        assert all(call.done() for call in calls)
        assert pool.stats()["instances"] == 2
        await rt.run_for(300.0)  # past 180 s: the extra one went; the first is kept
        assert pool.stats()["instances"] == 1
        await rt.run_for(windows.keep_alive_s)
        assert pool.stats()["instances"] == 0


async def test_a_learned_function_is_worth_at_least_the_call_its_windows_predict() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        pool = rt.runtime.pools["timer"]
        await every_minute(rt, "timer", keepalive.MIN_SAMPLES + 2)
        windows = pool.windows
        assert windows.source == "learned" and windows.keep_alive_s < 15.0
        # 12 calls, decayed over hours, count about 12; one call due within the keep-alive
        # window is a rate worth far more.
        assert pool.calls.count(rt.clock()) < keepalive.MIN_SAMPLES + 3
        assert pool.call_frequency() > 1000.0
    async with RuntimeHarness(RELEASE, keep_alive_policy="fixed") as rt:
        pool = rt.runtime.pools["timer"]
        await every_minute(rt, "timer", 3)
        assert pool.call_frequency() == pytest.approx(3.0, rel=0.01)
