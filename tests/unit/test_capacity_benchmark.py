"""benchmarks/traces.py and the simulator of benchmarks/capacity.py: the trace is deterministic
and has the advertised shape; the simulator replays it on the real runtime (FakeClock, no
process) and reports a variant this code cannot select as not available."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tierfaas.config import NodeConfig

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


traces = _load("traces")
capacity = _load("capacity")


def test_one_seed_gives_one_trace_and_another_a_different_one() -> None:
    profiles = traces.generate_profiles(40, seed=7)
    first = traces.events(profiles, 6 * 3600.0, seed=7, max_daily_calls=500.0)
    again = traces.events(traces.generate_profiles(40, seed=7), 6 * 3600.0, 7, 500.0)
    other = traces.events(traces.generate_profiles(40, seed=8), 6 * 3600.0, 8, 500.0)
    assert first == again
    assert first != other
    assert [e.time for e in first] == sorted(e.time for e in first)


def test_the_trace_has_the_azure_shape() -> None:
    profiles = traces.generate_profiles(50, seed=1)
    trace = traces.events(profiles, traces.DAY_S, seed=1, max_daily_calls=500.0)
    shape = traces.describe(profiles, trace, traces.DAY_S)
    assert shape["daily_calls"]["decades_covered"] >= 6.0
    assert shape["trigger_share"]["timer"] == pytest.approx(0.16, abs=0.02)
    assert shape["interarrival_cv_median"]["timer"] < 0.05  # periodic
    assert shape["interarrival_cv_median"]["http"] > 1.0  # bursty
    assert shape["mean_duration_s"]["under_1s_share"] > 0.5
    assert set(shape["declared_mb"]) <= {128, 256, 512}
    # A thinned function's events stand for its real rate.
    busiest = max(profiles, key=lambda p: p.daily_calls)
    weights = [e.weight for e in trace if e.function == busiest.name]
    assert len(weights) < busiest.daily_calls / 100
    assert sum(weights) == pytest.approx(busiest.daily_calls, rel=0.1)


def test_zipf_popularity_favours_the_first_functions() -> None:
    names = [f"f{i:03d}" for i in range(100)]
    trace = traces.zipf_events(names, 600.0, 20.0, seed=3)
    counts = {name: sum(e.function == name for e in trace) for name in names}
    assert len(trace) == pytest.approx(12_000, rel=0.05)
    # Zipf(1): the first has ~1/H(100) ~ 19 % of the calls, the tenth a tenth of that.
    assert counts["f000"] / len(trace) == pytest.approx(0.193, abs=0.02)
    assert counts["f000"] > 5 * counts["f009"]


def test_the_baseline_runs_and_a_missing_setting_is_not_faked() -> None:
    have = {f.name for f in dataclasses.fields(NodeConfig)}
    baseline = capacity.node_settings(capacity.VARIANTS[0], False)
    assert isinstance(baseline, dict)
    learned = capacity.node_settings(capacity.VARIANTS[2], True)
    if "keep_alive_policy" not in have:
        assert isinstance(learned, str) and "not available" in learned
    else:
        assert not isinstance(learned, str) or "cluster_cache" in learned


@pytest.mark.parametrize("nodes", [1, 2])
async def test_the_simulator_replays_a_trace_on_the_real_runtime(nodes: int) -> None:
    profiles = traces.generate_profiles(8, seed=2)
    trace = traces.events(profiles, 3600.0, seed=2, max_daily_calls=500.0)
    settings = capacity.node_settings(capacity.VARIANTS[0], None if nodes == 1 else False)
    assert isinstance(settings, dict)
    result = await capacity.simulate(
        profiles,
        trace,
        3600.0,
        variant=capacity.VARIANTS[0],
        settings={**settings, **capacity.tick_settings(5.0)},
        nodes=nodes,
        cluster_cache=None if nodes == 1 else False,
        budget_mb=1024,
        seed=2,
    )
    assert result.events == len(trace)
    called = {e.function for e in trace}
    # Each function's first call is cold; a 1 GiB budget holds few of them, so more are.
    assert len(called) <= result.cold_calls <= len(trace)
    assert result.peak_declared_mb <= 1024 * nodes
    assert 0 < result.measured_gib_h < result.declared_gib_h
    assert math.isclose(math.fsum(h["calls"] for h in result.hourly), result.calls, rel_tol=1e-9)
