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


capacity_plots = _load("capacity_plots")


def _run(
    variant: str, nodes: int, cache: bool | None, cold: int, gib_h: float
) -> dict[str, object]:
    hourly = [{"hour": h, "cold_pct": float(cold + h)} for h in range(3)]
    return {
        "variant": variant,
        "nodes": nodes,
        "cluster_cache": cache,
        "cold_calls": cold,
        "cold_pct": cold / 100.0,
        "declared_gib_h": gib_h,
        "measured_gib_h": gib_h / 2,
        "hourly": hourly,
    }


def test_the_figure_compares_each_policy_with_the_baseline_on_as_many_nodes() -> None:
    fixed, gd, learned = capacity_plots.POLICIES
    results = [
        _run(fixed, 1, None, 100, 40.0),
        _run(learned, 1, None, 60, 38.0),
        {"variant": gd, "nodes": 1, "cluster_cache": None, "skipped": "not available"},
        _run(capacity_plots.REFERENCE, 1, None, 30, 80.0),
        _run(fixed, 3, True, 90, 60.0),
        _run(fixed, 3, False, 80, 60.0),
        _run(learned, 3, True, 40, 45.0),
    ]
    groups = capacity_plots.groups_of(results)
    assert [g.label for g in groups] == [
        "1 node",
        "3 nodes, cluster cache off",
        "3 nodes, cluster cache on",
    ]
    bars = capacity_plots.bars(results, "measured")
    one = bars["1 node"]
    assert list(one) == [fixed, learned]  # the skipped one is absent, the reference too
    assert one[fixed].cold_change_pct is None
    assert one[learned].cold_change_pct == pytest.approx(-40.0)
    assert one[learned].gib_h == 19.0  # measured accounting: measured GiB·h
    assert one[learned].memory_change_pct == pytest.approx(-5.0)
    # With the cache on, against the baseline with the cache off (the table's "vs base").
    on = bars["3 nodes, cluster cache on"]
    assert on[fixed].cold_change_pct == pytest.approx(12.5)
    assert on[learned].cold_change_pct == pytest.approx(-50.0)
    assert capacity_plots.hourly(results, 1, None)[learned] == ([0.5, 1.5, 2.5], [60, 61, 62])


def test_the_cluster_figure_reads_the_windows() -> None:
    cluster = {
        "windows": [
            {"from_s": 0.0, "calls": 10, "cold_pct": 50.0},
            {"from_s": 10.0, "calls": 20, "cold_pct": 0.0},
        ]
    }
    assert capacity_plots.cluster_windows(cluster) == ([0.0, 10.0], [50.0, 0.0], [10, 20])


def test_the_figures_are_drawn_where_asked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fixed, _, learned = capacity_plots.POLICIES
    report = {
        "quick": True,
        "simulation": {
            "memory_accounting": "declared",
            "trace": {"functions": 8, "hours": 1.0, "seed": 1},
            "budget_mb_one_node": 1024,
            "budget_mb_per_cluster_node": 512,
            "results": [_run(fixed, 1, None, 10, 2.0), _run(learned, 1, None, 5, 1.0)],
        },
        "cluster": {
            "nodes": 3,
            "functions": 100,
            "rate_per_s": 20.0,
            "warmup_s": 10.0,
            "cold_pct_after_warmup": 0.5,
            "windows": [
                {"from_s": 0.0, "calls": 10, "cold_pct": 50.0},
                {"from_s": 10.0, "calls": 20, "cold_pct": 0.0},
            ],
        },
    }
    written = capacity_plots.draw(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "capacity-cluster-quick.png",
        "capacity-sim-quick.png",
    ]
    assert len(written) == 2
