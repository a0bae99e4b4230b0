"""The asynchronous calls' Prometheus metrics (on the node's registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge


class _Sized(Protocol):
    def queue_sizes(self) -> dict[str, int]: ...


class CallMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.accepted_total = Counter(
            "tierfaas_async_accepted",
            "Async calls accepted (kept on two nodes) by this node, by function",
            ["function"],
            registry=registry,
        )
        self.finished_total = Counter(
            "tierfaas_async_finished",
            "Async calls this node recorded final, by function and state (succeeded, failed, dead)",
            ["function", "state"],
            registry=registry,
        )
        self.queue = Gauge(
            "tierfaas_async_queue",
            "This node's own async calls waiting (queued) or running",
            ["state"],
            registry=registry,
        )
        self.attempts_total = Counter(
            "tierfaas_async_attempts",
            "Attempts of async calls, by function and outcome (ok, client_error, error, "
            "retry, deferred: the node had no room and it did not run)",
            ["function", "outcome"],
            registry=registry,
        )
        # tierfaas_callbacks_total is the CallbackSender's (calls/callbacks.py).
        self._accepted: dict[str, Any] = {}
        self._finished: dict[tuple[str, str], Any] = {}
        self._attempts: dict[tuple[str, str], Any] = {}

    def watch(self, source: _Sized) -> None:
        for state in ("queued", "running"):
            self.queue.labels(state).set_function(_reader(source, state))

    # labels() takes a lock and builds a key: the children counted per call are kept.

    def accepted(self, function: str) -> None:
        child = self._accepted.get(function)
        if child is None:
            child = self._accepted[function] = self.accepted_total.labels(function)
        child.inc()

    def finished(self, function: str, state: str) -> None:
        key = (function, state)
        child = self._finished.get(key)
        if child is None:
            child = self._finished[key] = self.finished_total.labels(function, state)
        child.inc()

    def attempt(self, function: str, outcome: str) -> None:
        key = (function, outcome)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self.attempts_total.labels(function, outcome)
        child.inc()


def _reader(source: _Sized, state: str) -> Callable[[], float]:
    return lambda: float(source.queue_sizes()[state])
