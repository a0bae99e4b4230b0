"""The asynchronous calls' Prometheus metrics (on the node's registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily


class _Sized(Protocol):
    def queue_sizes(self) -> dict[str, int]: ...


class _Counts:
    """A counter family kept as plain numbers and exported at each scrape: counting is a
    dict update on the path every call takes (a ``prometheus_client`` child's ``inc`` takes a
    lock and several calls: three per call were a few percent of an accept's loop time)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.values: dict[Any, float] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
        yield family


class CallMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self._accepted = _Counts(
            "tierfaas_async_accepted",
            "Async calls accepted (kept on two nodes) by this node, by function",
            ["function"],
        )
        self._finished = _Counts(
            "tierfaas_async_finished",
            "Async calls this node recorded final, by function and state (succeeded, failed, dead)",
            ["function", "state"],
        )
        self.queue = Gauge(
            "tierfaas_async_queue",
            "This node's own async calls waiting (queued) or running",
            ["state"],
            registry=registry,
        )
        self._attempts = _Counts(
            "tierfaas_async_attempts",
            "Attempts of async calls, by function and outcome (ok, client_error, error, "
            "retry, deferred: the node had no room and it did not run)",
            ["function", "outcome"],
        )
        for counts in (self._accepted, self._finished, self._attempts):
            registry.register(counts)
        # tierfaas_callbacks_total is the CallbackSender's (calls/callbacks.py).

    def watch(self, source: _Sized) -> None:
        for state in ("queued", "running"):
            self.queue.labels(state).set_function(_reader(source, state))

    def accepted(self, function: str) -> None:
        values = self._accepted.values
        values[function] = values.get(function, 0) + 1

    def finished(self, function: str, state: str) -> None:
        values = self._finished.values
        key = (function, state)
        values[key] = values.get(key, 0) + 1

    def attempt(self, function: str, outcome: str) -> None:
        values = self._attempts.values
        key = (function, outcome)
        values[key] = values.get(key, 0) + 1


def _reader(source: _Sized, state: str) -> Callable[[], float]:
    return lambda: float(source.queue_sizes()[state])
