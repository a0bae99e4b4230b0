"""/metrics: the node's memory gauges and its evictions counter, read when scraped."""

from __future__ import annotations

from tierfaas.http.metrics import Metrics
from tierfaas.runtime.budget import MemoryReport

MiB = 1024 * 1024


def test_memory_gauges_and_evictions_by_reason() -> None:
    metrics = Metrics()
    reports = [MemoryReport(2048, 300, 120.5, "measured", {"room": 3, "pressure": 1})]
    metrics.watch_memory(lambda: reports[-1])
    value = metrics.registry.get_sample_value
    assert value("tierfaas_memory_used_bytes") == 120.5 * MiB
    assert value("tierfaas_memory_booked_bytes") == 300 * MiB
    assert value("tierfaas_memory_budget_bytes") == 2048 * MiB
    assert value("tierfaas_evictions_total", {"reason": "room"}) == 3
    assert value("tierfaas_evictions_total", {"reason": "pressure"}) == 1
    assert value("tierfaas_evictions_total", {"reason": "over_budget"}) == 0
    reports.append(MemoryReport(2048, 300, 120.5, "measured", {"room": 4}))
    assert value("tierfaas_evictions_total", {"reason": "room"}) == 4  # read when scraped
