"""The node's Prometheus metrics, in a registry of its own (documented in docs/operations.md).

Label values are bounded: ``function`` is always a function of the release or ``(unknown)``,
so a client can't grow the metric set by calling made-up names.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tierfaas.runtime.events import InstanceStarted, InstanceStopped, RuntimeEvent

UNKNOWN = "(unknown)"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.invocations = Counter(
            "tierfaas_invocations",
            "Invocations answered by this node, by function, outcome and start kind",
            ["function", "outcome", "start"],
            registry=r,
        )
        self.latency = Histogram(
            "tierfaas_invocation_duration_seconds",
            "Time from request to response for invocations, by function",
            ["function"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
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
        self._counters: dict[tuple[str, str, bool], Any] = {}
        self._latency: dict[str, Any] = {}
        self.draining = Gauge(
            "tierfaas_draining", "1 while the node drains before exiting", registry=r
        )

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        if isinstance(event, InstanceStarted):
            self.instances.labels(event.function).inc()
            self.cold_start.labels(event.function).observe(event.start_s)
        elif isinstance(event, InstanceStopped):
            self.instances.labels(event.function).dec()
            self.instance_stops.labels(event.function, event.reason).inc()

    def record(self, function: str, outcome: str, cold: bool, seconds: float) -> None:
        # labels() takes a lock and builds a key each time; the hot path reuses the children.
        key = (function, outcome, cold)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.invocations.labels(
                function, outcome, "cold" if cold else "warm"
            )
            self._latency[function] = self.latency.labels(function)
        counter.inc()
        self._latency[function].observe(seconds)
