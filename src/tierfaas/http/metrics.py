"""The node's Prometheus metrics, in a registry of its own (documented in docs/operations.md).

Label values are bounded: ``function`` is always a function of the release or ``(unknown)``,
so a client can't grow the metric set by calling made-up names; ``outcome`` is ``ok``, an error
code, or the type of the exception a handler raised, at most ``MAX_OUTCOMES`` per function
(then ``(other)``), so a handler raising ever new exception types can't grow it either.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tierfaas.funclogs.metrics import OutputStats
from tierfaas.funclogs.store import LogStore
from tierfaas.runtime.budget import MemoryReport
from tierfaas.runtime.events import InstanceStarted, InstanceStopped, RuntimeEvent
from tierfaas.runtime.keepalive import Windows
from tierfaas.runtime.output import OutputBudget

MiB = 1024 * 1024
EVICTION_REASONS = ("room", "pressure", "over_budget")
UNKNOWN = "(unknown)"
OTHER = "(other)"
MAX_OUTCOMES = 32

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Counted in plain numbers on the hot path and turned into the counter and histogram
        # families only when scraped: a prometheus_client inc() and observe() take a lock
        # each, about 1.5 µs per call together.
        self.calls = _CallStats(_LATENCY_BUCKETS)
        r.register(self.calls)
        self.instances = Gauge(
            "tierfaas_instances", "Live instance processes, by function", ["function"], registry=r
        )
        self.cold_start = Histogram(
            "tierfaas_cold_start_seconds",
            "Time to fork an instance, import its handler and run its init",
            ["function"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.instance_stops = Counter(
            "tierfaas_instance_stops",
            "Instances stopped, by function and reason (idle, evicted, crashed, timeout, ...)",
            ["function", "reason"],
            registry=r,
        )
        self.draining = Gauge(
            "tierfaas_draining", "1 while the node drains before exiting", registry=r
        )
        self.http_rejected = Counter(
            "tierfaas_http_rejected",
            "Connections closed for a bad or slow request, by reason (malformed, head_timeout, "
            "head_too_large, body_timeout, send_timeout)",
            ["reason"],
            registry=r,
        )
        self.unauthorized = Counter(
            "tierfaas_unauthorized",
            "Requests refused for a missing or wrong API key or admin token, by kind",
            ["kind"],
            registry=r,
        )

    def watch_keep_alive(self, source: Callable[[], Iterable[tuple[str, Windows, int]]]) -> None:
        """Exposes the keep-alive windows ``source`` gives (``Runtime.keep_alive``: one row per
        function of the release, so the label set is bounded), read when scraped."""
        self.registry.register(_KeepAlive(source))

    def watch_memory(self, report: Callable[[], MemoryReport]) -> None:
        """Exposes the node's memory (``Runtime.memory_report``), read when scraped."""
        self.registry.register(_MemoryStats(report))

    def watch_output(self, budgets: Mapping[str, OutputBudget], logs: LogStore) -> None:
        """Exposes what the functions printed: lines dropped over the output rate, cut at
        the line size, kept, and not written to disk (``tierfaas.funclogs.metrics``)."""
        self.registry.register(OutputStats(budgets, logs))

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        if isinstance(event, InstanceStarted):
            self.instances.labels(event.function).inc()
            self.cold_start.labels(event.function).observe(event.start_s)
        elif isinstance(event, InstanceStopped):
            self.instances.labels(event.function).dec()
            self.instance_stops.labels(event.function, event.reason).inc()

    def record(self, function: str, outcome: str, cold: bool, seconds: float) -> None:
        self.calls.record(function, outcome, cold, seconds)

    def http_rejected_by(self, reason: str) -> None:
        self.http_rejected.labels(reason).inc()


class _CallStats(Collector):
    """``tierfaas_invocations_total`` and ``tierfaas_invocation_duration_seconds``, exposed
    exactly as a prometheus_client Counter and Histogram would be (with ``_created``).
    ``record`` and ``collect`` run on the node's event loop thread only: no lock."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.labels = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.counts: dict[tuple[str, str, bool], list[float]] = {}  # [count, created]
        self.outcomes: dict[str, int] = {}  # distinct outcome keys per function
        self.latency: dict[str, _Latency] = {}

    def record(self, function: str, outcome: str, cold: bool, seconds: float) -> None:
        key = (function, outcome, cold)
        count = self.counts.get(key)
        if count is None:
            seen = self.outcomes.get(function, 0)
            if seen >= MAX_OUTCOMES:
                key = (function, OTHER, cold)
                count = self.counts.get(key)
            if count is None:
                self.outcomes[function] = seen + 1
                count = self.counts[key] = [0, time.time()]
        count[0] += 1
        latency = self.latency.get(function)
        if latency is None:
            latency = self.latency[function] = _Latency(len(self.bounds))
        latency.buckets[bisect_left(self.bounds, seconds)] += 1  # le: the first bound >= it
        latency.sum += seconds

    def collect(self) -> Iterator[Metric]:
        invocations = CounterMetricFamily(
            "tierfaas_invocations",
            "Invocations answered by this node, by function, outcome and start kind",
            labels=["function", "outcome", "start"],
        )
        for (function, outcome, cold), (count, since) in list(self.counts.items()):
            labels = [function, outcome, "cold" if cold else "warm"]
            invocations.add_metric(labels, count, created=since)
        yield invocations
        name = "tierfaas_invocation_duration_seconds"
        duration = HistogramMetricFamily(
            name, "Time from request to response for invocations, by function", labels=["function"]
        )
        created = GaugeMetricFamily(
            f"{name}_created", "Time from request to response for invocations, by function",
            labels=["function"],
        )  # fmt: skip
        for function, latency in list(self.latency.items()):
            cumulative = list(accumulate(latency.buckets))
            duration.add_metric(
                [function], list(zip(self.labels, map(float, cumulative), strict=True)), latency.sum
            )
            created.add_metric([function], latency.created)
        yield duration
        yield created


class _KeepAlive(Collector):
    """``tierfaas_keep_alive_window_seconds``, ``tierfaas_prewarm_window_seconds``,
    ``tierfaas_keep_alive_learned`` and ``tierfaas_prewarms_total``, per function."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, Windows, int]]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        keep = GaugeMetricFamily(
            "tierfaas_keep_alive_window_seconds",
            "How long an idle instance is kept (from its last call, or from its prewarm)",
            labels=["function"],
        )
        prewarm = GaugeMetricFamily(
            "tierfaas_prewarm_window_seconds",
            "After the function's last activity, when one instance starts again (0: none)",
            labels=["function"],
        )
        learned = GaugeMetricFamily(
            "tierfaas_keep_alive_learned",
            "1 if the windows are learned from idle times, 0 for the fixed keep_alive_s",
            labels=["function"],
        )
        prewarms = CounterMetricFamily(
            "tierfaas_prewarms",
            "Instances started by the prewarm timer for a predicted call",
            labels=["function"],
        )
        for function, windows, started in self.source():
            keep.add_metric([function], windows.keep_alive_s)
            prewarm.add_metric([function], windows.prewarm_s)
            learned.add_metric([function], 1.0 if windows.source == "learned" else 0.0)
            prewarms.add_metric([function], started)
        yield from (keep, prewarm, learned, prewarms)


class _MemoryStats(Collector):
    """``tierfaas_memory_used_bytes`` (measured), ``tierfaas_memory_booked_bytes`` (what
    admission counts), ``tierfaas_memory_budget_bytes`` and ``tierfaas_evictions_total``
    (by reason: room, pressure, over_budget), read from the runtime when scraped."""

    def __init__(self, report: Callable[[], MemoryReport]) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        now = self.report()
        for name, text, mb in (
            ("used", "Memory the node's instances use, as last measured", now.measured_mb),
            ("booked", "Memory booked against the budget (measured or declared)", now.booked_mb),
            ("budget", "Memory the node's instances may book", now.budget_mb),
        ):
            yield GaugeMetricFamily(f"tierfaas_memory_{name}_bytes", text, value=mb * MiB)
        evictions = CounterMetricFamily(
            "tierfaas_evictions",
            "Idle instances evicted, by reason: room (for a start), pressure (PSI), "
            "over_budget (measured use past the budget)",
            labels=["reason"],
        )
        for reason in EVICTION_REASONS:
            evictions.add_metric([reason], now.evictions.get(reason, 0))
        yield evictions


class _Latency:
    __slots__ = ("buckets", "created", "sum")

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * (bounds + 1)  # per bucket (not cumulative), the last one +Inf
        self.sum = 0.0
        self.created = time.time()
