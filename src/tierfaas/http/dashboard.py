"""The live dashboard: ``GET /`` (static page), ``GET /v1/stats`` (this node's counters) and
``GET /v1/dashboard`` / ``/v1/dashboard/stream`` (the whole cluster, once a second, as JSON or
server-sent events).

The node that serves the page gathers the cluster's numbers itself: it reads ``/v1/cluster``
from its own ClusterManager and ``/v1/stats`` from every member (concurrently, with a short
timeout; a member that does not answer is shown as such), and turns counters into rates by
difference with its previous sample. Rates and the p99 are computed from counters and
latency-bucket deltas, so they are exact over the interval, whichever node serves the page.
The interval is measured on the sampled node's own monotonic clock (``clock`` in its stats),
so a wall-clock step on either node (NTP) never distorts a rate, and clocks never need to
agree between nodes; a node of a release without it is measured by its wall ``time``.
The page itself is plain HTML, CSS and JavaScript shipped in the package (no CDN, no build);
it writes every value with ``textContent``, never as HTML, because names and metadata come
from other nodes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from itertools import accumulate
from typing import Any

import aiohttp

from tierfaas.clock import Clock, monotonic
from tierfaas.http.asgi import Receive, Send
from tierfaas.http.metrics import Metrics
from tierfaas.runtime import Runtime
from tierfaas.runtime.memory import MiB

STREAM_INTERVAL_S = 1.0
PEER_TIMEOUT_S = 0.6
FIRST_SPAN_S = 0.5
RATE_SPAN_S = 1.0
HISTORY_S = 10.0
_STATIC = {
    "/": ("index.html", b"text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}


def static_file(path: str) -> tuple[bytes, bytes] | None:
    """(body, content type) of a packaged dashboard file, or None."""
    entry = _STATIC.get(path)
    if entry is None:
        return None
    name, content_type = entry
    body = resources.files("tierfaas.http").joinpath("static", name).read_bytes()
    return body, content_type


def node_stats(
    name: str,
    runtime: Runtime,
    metrics: Metrics,
    forwarded: int,
    version: str,
    isolation: str,
    clock: Clock = monotonic,
) -> dict[str, Any]:
    """This node's counters, for the dashboard of whichever node serves it, and how it
    isolates its functions (``isolation``, its ``--isolation``). ``time`` is Unix time (to
    show); ``clock`` is seconds of this node's ``clock``, which only the differences between
    its own samples give a meaning to (the rates' intervals)."""
    calls = metrics.calls
    requests = sum(int(c[0]) for c in calls.counts.values())
    cold = sum(int(c[0]) for (_, _, is_cold), c in calls.counts.items() if is_cold)
    errors = sum(int(c[0]) for (_, outcome, _), c in calls.counts.items() if outcome != "ok")
    buckets = [0] * (len(calls.bounds) + 1)
    for latency in calls.latency.values():
        for i, n in enumerate(latency.buckets):
            buckets[i] += n
    memory = runtime.memory_report()
    functions = {}
    for fname, pool in runtime.pools.items():
        stats = pool.stats()
        if stats["instances"] or stats["starting"]:
            functions[fname] = {"instances": stats["instances"], "busy": stats["busy"]}
    return {
        "node": name,
        "version": version,
        "isolation": isolation,
        "time": time.time(),
        "clock": clock(),
        "requests": requests,
        "cold_starts": cold,
        "errors": errors,
        "forwards": forwarded,
        "latency_bounds": list(calls.bounds),
        "latency_buckets": buckets,
        "functions": functions,
        "memory_used_bytes": int(memory.measured_mb * MiB),
        "memory_booked_bytes": int(memory.booked_mb * MiB),
        "memory_budget_bytes": int(memory.budget_mb * MiB),
        "memory_accounting": memory.accounting,
        "evictions": sum(memory.evictions.values()),
        "evictions_last_min": memory.evictions_last_min,
    }


def node_memory(
    sample: dict[str, Any], before: dict[str, Any] | None, span: float | None
) -> dict[str, Any] | None:
    """A node's memory row for the page: used (measured), booked and budget in bytes, and
    evictions per minute over ``span`` seconds since ``before`` (None without a span); None
    for a node of a release that does not report its memory."""
    if not isinstance(sample.get("memory_budget_bytes"), int | float):
        return None
    per_min = None
    if before is not None and span and isinstance(before.get("evictions"), int | float):
        per_min = max(0, sample.get("evictions", 0) - before["evictions"]) * 60 / span
    return {
        "used_bytes": sample.get("memory_used_bytes"),
        "booked_bytes": sample.get("memory_booked_bytes"),
        "budget_bytes": sample["memory_budget_bytes"],
        "accounting": sample.get("memory_accounting"),
        "evictions_per_min": per_min,
    }


def function_isolation(nodes: list[dict[str, Any]], functions: list[str]) -> dict[str, list[str]]:
    """How each of ``functions`` runs on the ``nodes`` where it is warm: their ``--isolation``
    (one entry unless the nodes differ; a node that did not say adds none)."""
    return {
        fn: sorted(
            {str(n["isolation"]) for n in nodes if fn in n["functions"] and n.get("isolation")}
        )
        for fn in functions
    }


def _stamp(sample: dict[str, Any]) -> tuple[str, float]:
    """When ``sample`` was taken, on the sampled node's monotonic clock, or on its wall
    clock for a node of a release that does not send one. Only stamps of the same kind
    compare."""
    if isinstance(sample.get("clock"), int | float):
        return "clock", float(sample["clock"])
    return "time", float(sample["time"])


def _p99(bounds: list[float], deltas: list[int]) -> float | None:
    total = sum(deltas)
    if total <= 0:
        return None
    rank = 0.99 * total
    for bound, seen in zip([*bounds, float("inf")], accumulate(deltas), strict=True):
        if seen >= rank:
            return bound if bound != float("inf") else bounds[-1]
    return None


class Dashboard:
    def __init__(
        self,
        cluster_view: Callable[[], Awaitable[dict[str, Any]]],
        own_stats: Callable[[], dict[str, Any]],
        self_name: str,
        peer_headers: dict[str, str] | None = None,
    ) -> None:
        self.peer_headers = peer_headers or {}  # the admin token, to read peers' /v1/stats
        self.cluster_view = cluster_view
        self.own_stats = own_stats
        self.self_name = self_name
        # Recent samples per node: rates are taken over at least RATE_SPAN_S, whatever the
        # number of viewers polling (each poll would otherwise shrink the others' window).
        self.previous: dict[str, deque[dict[str, Any]]] = {}
        self.session: aiohttp.ClientSession | None = None

    def _base(self, name: str, now: float) -> dict[str, Any] | None:
        """The newest sample of ``name`` at least RATE_SPAN_S before ``now`` (on its clock),
        else its oldest."""
        history = self.previous.get(name)
        if not history:
            return None
        older = [sample for sample in history if _stamp(sample)[1] <= now - RATE_SPAN_S]
        return older[-1] if older else history[0]

    def _remember(self, name: str, sample: dict[str, Any]) -> None:
        """Keeps ``sample`` and the samples of ``name`` from the last HISTORY_S. A sample
        that does not follow the last one on the same clock (the node restarted, on another
        host, or of another release) starts its history again: its counters and its clock
        do not continue the old ones."""
        history = self.previous.setdefault(name, deque())
        kind, now = _stamp(sample)
        if history and (_stamp(history[-1])[0] != kind or _stamp(history[-1])[1] > now):
            history.clear()
        history.append(sample)
        while history and _stamp(history[0])[1] < now - HISTORY_S:
            history.popleft()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _fetch(self, url: str) -> dict[str, Any] | None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            )
        try:
            async with self.session.get(url, headers=self.peer_headers) as response:
                if response.status != 200:
                    return None
                data: dict[str, Any] = await response.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def overview(self) -> dict[str, Any]:
        """The cluster's topology, warm map and rates, for the page. The first call takes a
        second sample a moment after the first, so that even it shows rates."""
        if not self.previous:
            await self._overview()
            await asyncio.sleep(FIRST_SPAN_S)
        return await self._overview()

    async def _overview(self) -> dict[str, Any]:
        view = await self.cluster_view()
        members = view.get("members", [])

        async def stats_of(member: dict[str, Any]) -> dict[str, Any] | None:
            if member.get("name") == self.self_name:
                return self.own_stats()
            if not member.get("http"):
                return None
            return await self._fetch(f"http://{member['http']}/v1/stats")

        samples = await asyncio.gather(*(stats_of(m) for m in members))
        totals = {"requests": 0.0, "cold_starts": 0.0, "forwards": 0.0, "errors": 0.0}
        bounds: list[float] = []
        merged: list[int] = []
        nodes = []
        for member, sample in zip(members, samples, strict=True):
            name = str(member.get("name"))
            row: dict[str, Any] = {
                **member, "reachable": sample is not None, "functions": {}, "isolation": None,
                "memory": None,
            }  # fmt: skip
            if sample is not None:
                row["functions"] = sample.get("functions", {})
                row["isolation"] = sample.get("isolation")
                kind, now = _stamp(sample)
                before = self._base(name, now)
                then = _stamp(before) if before is not None else None
                span = None
                if then is not None and then[0] == kind and now > then[1]:
                    span = now - then[1]
                row["memory"] = node_memory(sample, before, span)
                if before is not None and span is not None:
                    rates = {key: max(0, sample[key] - before[key]) / span for key in totals}
                    row["rates"] = rates
                    for key in totals:
                        totals[key] += rates[key]
                    deltas = [
                        max(0, a - b)
                        for a, b in zip(
                            sample["latency_buckets"], before["latency_buckets"], strict=True
                        )
                    ]
                    bounds = sample["latency_bounds"]
                    merged = [
                        a + b for a, b in zip(merged or [0] * len(deltas), deltas, strict=True)
                    ]
                self._remember(name, sample)
            nodes.append(row)
        live = {str(m.get("name")) for m in members}
        for gone in set(self.previous) - live:
            del self.previous[gone]
        functions = sorted({f for n in nodes for f in n["functions"]})
        return {
            "self": view.get("self"),
            "master": view.get("master"),
            "joined": view.get("joined", True),
            "standalone": view.get("standalone", False),
            "nodes": nodes,
            "functions": functions,
            "isolation": function_isolation(nodes, functions),
            "rates": totals,
            "p99_s": _p99(bounds, merged) if bounds else None,
            "evictions_per_min": sum(
                n["memory"]["evictions_per_min"] or 0.0 for n in nodes if n["memory"]
            ),
            "departed": view.get("departed", []),
            "time": time.time(),
        }

    async def stream(
        self, receive: Receive, send: Send, stopping: Callable[[], bool], request_id: str = ""
    ) -> None:
        """Server-sent events: one overview per second until the client goes or the node
        drains."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while not gone.done() and not stopping():
                payload = json.dumps(await self.overview(), separators=(",", ":"))
                await send(
                    {"type": "http.response.body", "body": f"data: {payload}\n\n".encode(),
                     "more_body": True}
                )  # fmt: skip
                await asyncio.wait({gone}, timeout=STREAM_INTERVAL_S)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
