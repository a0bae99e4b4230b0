"""The function logs' counters in ``/metrics``, read when scraped (no work per line)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tierfaas.funclogs.store import LogStore
from tierfaas.runtime.output import OutputBudget


class OutputStats(Collector):
    """Per function: lines dropped over the output rate and lines cut at the line size
    (``budgets``, the output budgets of ``runtime/output.py``), lines kept in the function's
    log here and lines its file could not take (``logs``)."""

    def __init__(self, budgets: Mapping[str, OutputBudget], logs: LogStore) -> None:
        self.budgets = budgets
        self.logs = logs

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "tierfaas_output_dropped_lines",
            "Output lines dropped because the function printed over --output-bytes-per-s",
            labels=["function"],
        )
        truncated = CounterMetricFamily(
            "tierfaas_output_truncated_lines",
            "Output lines cut at the line size (4 KiB), by function",
            labels=["function"],
        )
        for name, budget in sorted(self.budgets.items()):
            dropped.add_metric([name], budget.dropped_lines)
            truncated.add_metric([name], budget.truncated_lines)
        kept = CounterMetricFamily(
            "tierfaas_log_lines",
            "Output lines kept in the function's log here",
            labels=["function"],
        )
        failed = CounterMetricFamily(
            "tierfaas_log_write_failures",
            "Output lines the function's log file could not take (disk full, ...)",
            labels=["function"],
        )
        for name, entry in sorted(self.logs.logs.items()):
            kept.add_metric([name], entry.lines)
            failed.add_metric([name], entry.write_failures)
        yield from (dropped, truncated, kept, failed)
