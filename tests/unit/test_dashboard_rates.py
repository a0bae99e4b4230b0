"""The dashboard's rates: intervals on each sampled node's monotonic clock, never its wall
clock, and a history that starts again when a node's clock does not continue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tierfaas.config import Address, NodeConfig
from tierfaas.http.app import NodeApp
from tierfaas.http.dashboard import HISTORY_S, Dashboard
from tierfaas.http.metrics import Metrics
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime
from tierfaas.testing import FakeClock
from tierfaas.testing.asgi import request

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


def sample(requests: int, *, clock: float | None, wall: float) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "node": "b", "version": "1", "time": wall, "requests": requests, "cold_starts": 0,
        "errors": 0, "forwards": 0, "latency_bounds": [0.1], "latency_buckets": [requests, 0],
        "functions": {},
    }  # fmt: skip
    if clock is not None:
        stats["clock"] = clock
    return stats


class Peer:
    """One peer "b", whose next /v1/stats answer the test sets."""

    def __init__(self) -> None:
        self.next: dict[str, Any] = {}
        members = [{"name": "a", "http": None}, {"name": "b", "http": "b:1"}]

        async def view() -> dict[str, Any]:
            return {"self": "a", "master": "a", "members": members}

        async def fetch(url: str) -> dict[str, Any] | None:
            return self.next

        self.dashboard = Dashboard(view, lambda: sample(0, clock=0.0, wall=0.0), "a")
        self.dashboard._fetch = fetch  # type: ignore[method-assign]  # no sockets

    def rates(self, stats: dict[str, Any]) -> dict[str, float] | None:
        self.next = stats
        overview = asyncio.run(self.dashboard._overview())
        row = next(n for n in overview["nodes"] if n["name"] == "b")
        rates: dict[str, float] | None = row.get("rates")
        return rates


def test_a_wall_clock_step_on_the_node_does_not_change_its_rates() -> None:
    peer = Peer()
    assert peer.rates(sample(0, clock=100.0, wall=1_000_000.0)) is None  # nothing to compare
    # NTP steps the node's wall clock back an hour: one second passed on its clock.
    rates = peer.rates(sample(10, clock=101.0, wall=1_000_000.0 - 3600))
    assert rates is not None and rates["requests"] == 10.0
    # ... and forward two hours.
    rates = peer.rates(sample(30, clock=102.0, wall=1_000_000.0 + 3600))
    assert rates is not None and rates["requests"] == 20.0


def test_a_restarted_node_starts_its_history_again() -> None:
    peer = Peer()
    for second in range(30):
        peer.rates(sample(second * 5, clock=1000.0 + second, wall=0.0))
    assert len(peer.dashboard.previous["b"]) <= HISTORY_S + 1
    # It restarted (on another host: its clock is far behind), its counters from 0.
    assert peer.rates(sample(0, clock=5.0, wall=0.0)) is None
    assert len(peer.dashboard.previous["b"]) == 1
    rates = peer.rates(sample(4, clock=6.0, wall=0.0))
    assert rates is not None and rates["requests"] == 4.0
    for second in range(30):  # the history stays bounded on the new clock too
        peer.rates(sample(4 + second, clock=7.0 + second, wall=0.0))
    assert len(peer.dashboard.previous["b"]) <= HISTORY_S + 1


def test_a_node_of_an_older_release_is_measured_by_its_wall_clock() -> None:
    peer = Peer()
    peer.rates(sample(0, clock=None, wall=1000.0))
    rates = peer.rates(sample(6, clock=None, wall=1002.0))
    assert rates is not None and rates["requests"] == 3.0
    # Upgraded: its samples now carry a clock, which does not compare with the wall time.
    assert peer.rates(sample(0, clock=50.0, wall=1003.0)) is None
    rates = peer.rates(sample(2, clock=51.0, wall=1004.0))
    assert rates is not None and rates["requests"] == 2.0


def test_a_nodes_stats_carry_its_injected_clock() -> None:
    config = NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080))
    clock = FakeClock(start=123.0)
    app = NodeApp(Runtime(load_release(TESTREL), config), config, Metrics(), "n1", clock=clock)
    status, _, body = request(app, "/v1/stats")
    stats = json.loads(body)
    assert status == 200 and stats["clock"] == 123.0
    assert isinstance(stats["time"], float)  # Unix time, to show


def test_a_nodes_stats_carry_its_memory_and_evictions() -> None:
    config = NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080))
    config = config.with_changes(memory_budget_mb=512)
    app = NodeApp(Runtime(load_release(TESTREL), config), config, Metrics(), "n1")
    _, _, body = request(app, "/v1/stats")
    stats = json.loads(body)
    assert stats["memory_budget_bytes"] == 512 * 1024 * 1024
    assert (stats["memory_used_bytes"], stats["memory_booked_bytes"], stats["evictions"]) == (
        0, 0, 0,
    )  # fmt: skip
    assert stats["memory_accounting"] == "measured"


def test_evictions_per_minute_come_from_the_counter_over_the_nodes_clock() -> None:
    peer = Peer()

    def with_memory(evictions: int, clock: float) -> dict[str, Any]:
        return {
            **sample(0, clock=clock, wall=0.0), "memory_used_bytes": 10, "memory_booked_bytes": 20,
            "memory_budget_bytes": 30, "memory_accounting": "measured", "evictions": evictions,
        }  # fmt: skip

    def overview(stats: dict[str, Any]) -> dict[str, Any]:
        peer.next = stats
        return asyncio.run(peer.dashboard._overview())

    first = overview(with_memory(5, 100.0))
    row = next(n for n in first["nodes"] if n["name"] == "b")
    assert row["memory"] == {
        "used_bytes": 10, "booked_bytes": 20, "budget_bytes": 30, "accounting": "measured",
        "evictions_per_min": None,
    }  # fmt: skip
    later = overview(with_memory(8, 102.0))  # 3 in 2 s
    row = next(n for n in later["nodes"] if n["name"] == "b")
    assert row["memory"]["evictions_per_min"] == 90.0
    assert later["evictions_per_min"] == 90.0
    # A node of a release that reports no memory: shown as such, no rate.
    older = overview(sample(0, clock=103.0, wall=0.0))
    row = next(n for n in older["nodes"] if n["name"] == "b")
    assert row["memory"] is None and older["evictions_per_min"] == 0.0
