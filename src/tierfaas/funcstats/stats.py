"""What each function did on this node: the calls it ran, their errors and cold starts since
the node started, the last minute's rate and p99 (``window.py``), and its most recent errors.

A call is counted on the node that ran it (or refused it from its queue), once: a node that
forwards a call does not count it, so the counts of every node add up to the cluster's. An
error is an answer with a status >= 500 or a typed tierfaas error (timeout, handler_error,
overloaded, ...); a cold start is a call that waited for an instance to start. Recording
costs a clock read and a few dictionary updates on the node's event loop (no lock).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tierfaas.clock import Clock, monotonic
from tierfaas.funcstats.window import WINDOW_S, CallWindow

RECENT_ERRORS = 20
"""How many of a function's most recent errors a node keeps (in memory)."""
MESSAGE_CHARS = 300
"""An error's message is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class RecentError:
    """One failed call: when it ended (wall clock, ms since the epoch), its request id, the
    status answered, the typed error code and its message (at most ``MESSAGE_CHARS``)."""

    time_ms: int
    request_id: str
    status: int
    error: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ms": self.time_ms, "request_id": self.request_id, "status": self.status,
            "error": self.error, "message": self.message,
        }  # fmt: skip


class FunctionCounts:
    """One function's counts on this node."""

    __slots__ = ("calls", "cold_starts", "errors", "recent", "window")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.cold_starts = 0
        self.window = CallWindow()
        self.recent: deque[RecentError] = deque(maxlen=RECENT_ERRORS)


class FunctionStats:
    """The counts of every function of the release on this node. ``clock`` times the window
    (monotonic seconds); ``wall`` stamps the recent errors (Unix seconds)."""

    def __init__(
        self,
        functions: Iterable[str],
        clock: Clock = monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.started = clock()
        self._counts = {name: FunctionCounts() for name in functions}

    def __contains__(self, function: object) -> bool:
        return function in self._counts

    def ran(self, function: str, seconds: float, cold: bool) -> None:
        """``function`` answered a call after ``seconds`` (its status < 500)."""
        counts = self._counts.get(function)
        if counts is None:
            return  # not a function of the release: nothing to show it under
        counts.calls += 1
        if cold:
            counts.cold_starts += 1
        counts.window.record(self.clock(), seconds, False)

    def failed(
        self,
        function: str,
        seconds: float,
        cold: bool,
        *,
        request_id: str,
        status: int,
        error: str,
        message: str,
    ) -> None:
        """A call of ``function`` ended in an error: ``status`` with the typed ``error`` code
        and its ``message`` (cut to ``MESSAGE_CHARS``)."""
        counts = self._counts.get(function)
        if counts is None:
            return
        counts.calls += 1
        counts.errors += 1
        if cold:
            counts.cold_starts += 1
        counts.window.record(self.clock(), seconds, True)
        recent = RecentError(
            int(self.wall() * 1000), request_id, status, error, message[:MESSAGE_CHARS]
        )
        counts.recent.append(recent)

    def snapshot(self, function: str) -> dict[str, Any]:
        """``{"calls", "errors", "cold_starts", "calls_per_s", "p99_ms"}`` of ``function``:
        the counts since the node started, the rate and p99 of the last ``WINDOW_S`` seconds
        (of the time since the node started, while that is shorter). Zeros for a name the
        release lacks."""
        counts = self._counts.get(function) or FunctionCounts()
        now = self.clock()
        view = counts.window.view(now)
        span = min(float(WINDOW_S), max(1.0, now - self.started))
        return {
            "calls": counts.calls,
            "errors": counts.errors,
            "cold_starts": counts.cold_starts,
            "calls_per_s": round(view.calls / span, 3),
            "p99_ms": view.p99_ms,
        }

    def recent_errors(self, function: str) -> list[dict[str, Any]]:
        """``function``'s most recent errors here, newest first (at most ``RECENT_ERRORS``)."""
        counts = self._counts.get(function)
        if counts is None:
            return []
        return [error.to_json() for error in reversed(counts.recent)]


def function_stats(stats: FunctionStats, function: dict[str, Any]) -> dict[str, Any]:
    """The ``stats`` of a ``GET /v1/functions`` entry: ``stats.snapshot`` of the function, and
    its ``instances`` and ``busy`` ones from ``function`` (the runtime's entry)."""
    return {
        **stats.snapshot(function["name"]),
        "instances": function.get("instances", 0),
        "busy": function.get("busy", 0),
    }
