"""The dashboard's page of one function (``/functions.html?name=NAME``), gathered by the node
that serves it: ``GET /v1/dashboard/functions/NAME``. Pure: these functions shape what the
``Dashboard`` read from the nodes (their ``/v1/stats``, ``/v1/functions/NAME`` and
``/v1/logs``) into the answer; a node that did not answer, or answered something else than
expected, adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tierfaas.funclogs.line import LogLine
from tierfaas.funclogs.merge import merge

PATH = "/v1/dashboard/functions/"
LOG_SINCE = "15m"
"""How far back the page's log lines reach: the curves' window."""
LOG_LINES = 100
"""The newest lines the page shows, of all nodes together (each node sends at most this)."""
ERRORS = 40
"""The newest errors the page shows, of all nodes together (each node keeps 20)."""
MESSAGE_CHARS = 300


def latency_histogram(samples: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The calls of ``name`` per latency bucket, summed over the nodes' ``/v1/stats``
    ``samples`` (counted since each node started). ``bounds`` are the buckets' upper bounds
    in seconds; ``counts`` has one more entry, the calls slower than the last bound."""
    bounds: list[float] = []
    counts: list[int] = []
    for sample in samples:
        row = (sample.get("calls") or {}).get(name)
        if not isinstance(row, dict) or not isinstance(sample.get("latency_bounds"), list):
            continue
        buckets = [int(n) for n in row.get("latency_buckets", [])]
        if not counts:
            bounds, counts = list(sample["latency_bounds"]), [0] * len(buckets)
        if len(buckets) == len(counts):  # nodes of one release share the bounds
            counts = [a + b for a, b in zip(counts, buckets, strict=True)]
    return {"bounds": bounds, "counts": counts, "calls": sum(counts)}


def function_points(points: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The curve of ``name`` in the dashboard's history points: its rates at each point,
    zero where it had no call (a point is a sample of the whole cluster)."""
    curve = []
    for point in points:
        row = point.get("functions", {}).get(name) or {}
        curve.append(
            {
                "seq": point["seq"],
                "t": point["t"],
                "requests": row.get("requests", 0.0),
                "errors": row.get("errors", 0.0),
                "cold_starts": row.get("cold_starts", 0.0),
                "p99_s": row.get("p99_s"),
            }
        )
    return curve


def recent_errors(answers: Iterable[tuple[str, Any]], limit: int = ERRORS) -> list[dict[str, Any]]:
    """The newest ``limit`` errors of every ``(node, GET /v1/functions/NAME answer)``, newest
    first, each with its node. Fields are checked and cut: they come from other nodes."""
    found = []
    for node, answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("recent_errors"), list):
            continue
        for error in answer["recent_errors"]:
            if not isinstance(error, dict) or not isinstance(error.get("time_ms"), int):
                continue
            found.append(
                {
                    "node": str(answer.get("node") or node),
                    "time_ms": error["time_ms"],
                    "request_id": str(error.get("request_id", ""))[:64],
                    "status": error.get("status") if isinstance(error.get("status"), int) else None,
                    "error": str(error.get("error", ""))[:64],
                    "message": str(error.get("message", ""))[:MESSAGE_CHARS],
                }
            )
    found.sort(key=lambda error: error["time_ms"], reverse=True)
    return found[:limit]


def log_lines(bodies: Iterable[bytes], limit: int = LOG_LINES) -> list[dict[str, Any]]:
    """The newest ``limit`` lines of every node's ``GET /v1/logs`` answer (ndjson, oldest
    first), merged in time order, oldest first. A line that is not a log line (a follower's
    ``missed`` note, a torn line) is left out."""
    per_node = []
    for body in bodies:
        lines = []
        for raw in body.splitlines():
            try:
                lines.append(LogLine.from_json(json.loads(raw)))
            except ValueError:
                continue
        lines.sort(key=lambda line: line.time)
        per_node.append(lines)
    return [line.to_json() for line in merge(per_node, limit)]
