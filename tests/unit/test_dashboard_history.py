"""The dashboard's curves: a bounded ring of its samples on the serving node's clock, the
rates it records per node and function, and what a page gets back for its ``since``."""

from __future__ import annotations

import asyncio
from typing import Any

from tierfaas.http.dashboard import LINGER_S, Dashboard, sample_due
from tierfaas.http.history import SPACING_S, WINDOW_S, History, parse_since
from tierfaas.testing import FakeClock


def test_one_point_per_spacing_however_many_pages_poll() -> None:
    clock = FakeClock()
    history = History()
    assert history.add(clock(), {"t": 1})
    clock.advance(SPACING_S / 2)  # a second page polls half a second later
    assert not history.add(clock(), {"t": 2})
    clock.advance(SPACING_S / 2)
    assert history.add(clock(), {"t": 3})
    assert [p.values["t"] for p in history.points] == [1, 3]


def test_the_ring_keeps_the_window_and_no_more() -> None:
    clock = FakeClock()
    history = History()
    for second in range(3 * int(WINDOW_S)):
        history.add(clock(), {"t": second})
        clock.advance(1.0)
    assert len(history.points) == WINDOW_S + 1
    assert history.points[0].at >= history.points[-1].at - WINDOW_S
    assert history.points[-1].values["t"] == 3 * WINDOW_S - 1


def test_a_page_gets_the_points_after_its_newest_or_all_of_them() -> None:
    clock = FakeClock()
    history = History(window_s=10.0)
    for second in range(5):
        history.add(clock(), {"t": second})
        clock.advance(1.0)
    full, points = history.since(None)
    assert full and [p["seq"] for p in points] == [1, 2, 3, 4, 5]
    assert history.since(3) == (False, [{"seq": 4, "t": 3}, {"seq": 5, "t": 4}])
    assert history.since(5) == (False, [])
    # A page older than this ring's run (the node restarted): it replaces its copy.
    assert history.since(99)[0]
    for second in range(5, 30):
        history.add(clock(), {"t": second})
        clock.advance(1.0)
    assert history.since(2)[0]  # its points left the window: a gap it must not bridge


def test_a_clock_that_goes_back_starts_the_ring_again() -> None:
    history = History()
    history.add(100.0, {"t": 1})
    history.add(101.0, {"t": 2})
    assert history.add(50.0, {"t": 3})  # not the clock the kept points are on
    assert [p.values["t"] for p in history.points] == [3]
    assert history.points[0].seq == 3  # numbers keep growing: a page's since stays valid


def test_since_in_the_query() -> None:
    assert parse_since(b"since=42") == 42
    assert parse_since(b"x=1&since=7") == 7
    assert parse_since(b"since=-1") is None
    assert parse_since(b"since=abc") is None
    assert parse_since(b"") is None


def stats(clock: float, calls: dict[str, tuple[int, int, int, list[int]]]) -> dict[str, Any]:
    """A node's /v1/stats with per-function (requests, errors, cold starts, buckets)."""
    per_function = {
        fn: {"requests": r, "errors": e, "cold_starts": c, "latency_buckets": b}
        for fn, (r, e, c, b) in calls.items()
    }
    total = [sum(col) for col in zip(*(b for *_, b in calls.values()), strict=True)]
    return {
        "node": "x", "time": 0.0, "clock": clock, "functions": {},
        "requests": sum(r for r, *_ in calls.values()),
        "errors": sum(e for _, e, *_ in calls.values()),
        "cold_starts": sum(c for _, _, c, _ in calls.values()), "forwards": 0,
        "latency_bounds": [0.01, 0.1], "latency_buckets": total or [0, 0, 0], "calls": per_function,
    }  # fmt: skip


class Cluster:
    """Nodes "a" (serving) and "b", whose next stats the test sets; the dashboard's clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.next: dict[str, dict[str, Any]] = {}
        members = [{"name": "a", "http": "a:1"}, {"name": "b", "http": "b:1"}]

        async def view() -> dict[str, Any]:
            return {"self": "a", "master": "a", "members": members}

        async def fetch(url: str) -> dict[str, Any] | None:
            return self.next["b"]

        self.dashboard = Dashboard(view, lambda: self.next["a"], "a", clock=self.clock)
        self.dashboard._fetch = fetch  # type: ignore[method-assign]  # no sockets

    def sample(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        self.next = {"a": a, "b": b}
        overview = asyncio.run(self.dashboard._overview())
        self.clock.advance(1.0)
        return overview


def test_each_sample_is_a_point_with_the_rates_of_the_cluster_its_nodes_and_functions() -> None:
    cluster = Cluster()
    first = cluster.sample(
        stats(10.0, {"f": (0, 0, 0, [0, 0, 0])}), stats(20.0, {"f": (0, 0, 0, [0, 0, 0])})
    )
    assert first["history"] == {"window_s": WINDOW_S, "full": True, "points": []}  # no rates yet
    later = cluster.sample(
        stats(12.0, {"f": (10, 2, 1, [9, 1, 0])}),  # 2 s on a's clock
        stats(21.0, {"f": (5, 0, 0, [5, 0, 0]), "g": (3, 3, 3, [0, 0, 3])}),  # g is new
    )
    [point] = later["history"]["points"]
    assert point["seq"] == 1 and isinstance(point["t"], float)
    assert (point["requests"], point["errors"], point["cold_starts"]) == (13.0, 4.0, 3.5)
    assert point["nodes"] == {
        "a": {"requests": 5.0, "errors": 1.0, "cold_starts": 0.5},
        "b": {"requests": 8.0, "errors": 3.0, "cold_starts": 3.0},
    }
    assert point["functions"] == {
        # f: 9 + 5 calls under 10 ms, 1 under 100 ms -> p99 at the 100 ms bound
        "f": {"requests": 10.0, "errors": 1.0, "cold_starts": 0.5, "p99_s": 0.1},
        # g: 3 calls over the last bound -> the last bound stands for them
        "g": {"requests": 3.0, "errors": 3.0, "cold_starts": 3.0, "p99_s": 0.1},
    }
    assert point["p99_s"] == 0.1


def test_a_node_of_a_release_without_per_function_counters_adds_its_totals_only() -> None:
    cluster = Cluster()
    old = stats(5.0, {"f": (0, 0, 0, [0, 0, 0])})
    del old["calls"]
    cluster.sample(stats(1.0, {"f": (0, 0, 0, [0, 0, 0])}), old)
    newer = {**stats(6.0, {"f": (4, 0, 0, [4, 0, 0])})}
    del newer["calls"]
    later = cluster.sample(stats(2.0, {"f": (1, 0, 0, [1, 0, 0])}), newer)
    [point] = later["history"]["points"]
    assert point["requests"] == 5.0 and point["functions"]["f"]["requests"] == 1.0


def test_the_sampler_goes_on_for_the_window_after_the_last_view_then_stops() -> None:
    clock = FakeClock()
    members = [{"name": "a", "http": "a:1"}, {"name": "b", "http": "b:1"}]

    def now_stats() -> dict[str, Any]:
        calls = int(clock() - 1000.0) * 3  # 3 calls a second, on a clock that moves
        return stats(clock(), {"f": (calls, 0, 0, [calls, 0, 0])})

    async def view() -> dict[str, Any]:
        return {"self": "a", "master": "a", "members": members}

    async def fetch(url: str) -> dict[str, Any] | None:
        return now_stats()

    dashboard = Dashboard(view, now_stats, "a", clock=clock, scheduler=clock)
    dashboard._fetch = fetch  # type: ignore[method-assign]  # no sockets

    async def run() -> None:
        await dashboard._overview()  # sampled once already: the view below does not wait
        clock.advance(1.0)
        await dashboard.overview()  # a page looks once, then leaves
        assert len(dashboard.history.points) == 1
        await clock.run_for(10.0)
        assert len(dashboard.history.points) == 11  # a point a second, nobody watching
        assert dashboard.history.points[-1].values["functions"]["f"]["requests"] == 6.0
        await clock.run_for(LINGER_S)
        assert clock.pending() == 0  # stopped: nobody looked for the whole window
        kept = len(dashboard.history.points)
        assert WINDOW_S - 2 <= kept <= WINDOW_S + 1
        await clock.run_for(60.0)
        assert len(dashboard.history.points) == kept
        await dashboard.overview()  # a page comes back: the sampler starts again
        await clock.run_for(5.0)
        assert dashboard.history.points[-1].at == clock()
        await dashboard.close()
        assert clock.pending() == 0

    asyncio.run(run())


def test_a_viewer_that_sampled_just_now_spares_the_sampler_a_read() -> None:
    assert sample_due(100.0, 99.0, None) is True
    assert sample_due(100.0, 99.0, 99.5) is False  # a page's poll made a point 0.5 s ago
    assert sample_due(100.0, 99.0, 99.0) is True
    assert sample_due(100.0, 100.0 - LINGER_S, 99.0) is None  # nobody looked: stop
    assert sample_due(100.0, None, None) is None


def test_a_function_without_a_call_in_the_interval_is_left_out_of_the_point() -> None:
    cluster = Cluster()
    idle = {"f": (4, 0, 0, [4, 0, 0]), "g": (2, 0, 0, [2, 0, 0])}
    cluster.sample(stats(1.0, idle), stats(1.0, idle))
    busy = {"f": (6, 0, 0, [6, 0, 0]), "g": (2, 0, 0, [2, 0, 0])}
    [point] = cluster.sample(stats(2.0, busy), stats(2.0, idle))["history"]["points"]
    assert set(point["functions"]) == {"f"}
