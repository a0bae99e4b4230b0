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
Each sample is also a point of the curves the page draws (``history.py``: the last 15
minutes, kept here so a page opened now has them at once): the cluster's, each node's and each
function's rates, the latter from the per-function counters and latency buckets of
``/v1/stats``. The page of one function (``function_view``, ``function_page.py``) adds what
every member says of it: its recent errors and log lines, read by this node with the admin
token, so the browser talks to one node only.
The pages are plain HTML, CSS and JavaScript shipped in the package (no CDN, no build; the
charts are SVG drawn by ``static/charts.js``); they write every value with ``textContent``,
never as HTML, because names, log lines and messages come from other nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from itertools import accumulate
from typing import Any

import aiohttp

from tierfaas import errors
from tierfaas.clock import Clock, LoopScheduler, Scheduler, Timer, monotonic
from tierfaas.http import function_page
from tierfaas.http.asgi import Receive, Send
from tierfaas.http.history import SPACING_S, WINDOW_S, History
from tierfaas.http.metrics import UNKNOWN, Metrics
from tierfaas.names import is_valid_name
from tierfaas.runtime import Runtime
from tierfaas.runtime.memory import MiB

STREAM_INTERVAL_S = 1.0
PEER_TIMEOUT_S = 0.6
FIRST_SPAN_S = 0.5
RATE_SPAN_S = 1.0
HISTORY_S = 10.0
LINGER_S = WINDOW_S
"""How long the dashboard goes on sampling once a second after its last viewer left: the
curves' window, so a page opened again within it finds them whole. It costs what an open page
does (one ``/v1/stats`` read per member a second) and nothing once that time is over."""

log = logging.getLogger(__name__)


def sample_due(now: float, last_view: float | None, newest_point: float | None) -> bool | None:
    """Whether the background sampler takes a sample at ``now`` (seconds of the serving
    node's clock): True when a page viewed within ``LINGER_S`` and no sample of a viewer made
    a point within the last ``SPACING_S``; False to skip this one; None to stop, nobody having
    watched for ``LINGER_S``."""
    if last_view is None or now - last_view >= LINGER_S:
        return None
    return newest_point is None or now - newest_point >= SPACING_S


_STATIC = {
    "/": ("index.html", b"text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
    "/charts.js": ("charts.js", b"text/javascript; charset=utf-8"),
    "/functions.html": ("functions.html", b"text/html; charset=utf-8"),
    "/functions.js": ("functions.js", b"text/javascript; charset=utf-8"),
}
STATIC_PATHS = frozenset(_STATIC)
"""The dashboard's pages and their files, which the admin token guards like its data."""


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
    per_function: dict[str, dict[str, Any]] = {}
    for (fname, outcome, is_cold), (count, _) in calls.counts.items():
        if fname == UNKNOWN:
            continue  # calls to names the release does not have: no page to show them on
        row = per_function.setdefault(fname, {"requests": 0, "errors": 0, "cold_starts": 0})
        row["requests"] += int(count)
        row["errors"] += int(count) if outcome != "ok" else 0
        row["cold_starts"] += int(count) if is_cold else 0
    for fname, row in per_function.items():
        of_function = calls.latency.get(fname)
        row["latency_buckets"] = list(of_function.buckets) if of_function else [0] * len(buckets)
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
        "calls": per_function,
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


def function_rates(
    sample: dict[str, Any], before: dict[str, Any], span: float
) -> dict[str, dict[str, Any]]:
    """Each function's calls, errors and cold starts per second over ``span`` seconds since
    ``before``, with its latency-bucket deltas (``buckets``); {} for a node of a release that
    does not count per function. A function new since ``before`` counts from zero."""
    calls, earlier = sample.get("calls"), before.get("calls")
    if not isinstance(calls, dict) or not isinstance(earlier, dict):
        return {}
    rates = {}
    for fn, now in calls.items():
        then = earlier.get(fn) or {}
        row: dict[str, Any] = {
            key: max(0, now[key] - then.get(key, 0)) / span for key in _FUNCTION_COUNTERS
        }
        old = then.get("latency_buckets") or [0] * len(now["latency_buckets"])
        row["buckets"] = [max(0, a - b) for a, b in zip(now["latency_buckets"], old, strict=True)]
        rates[str(fn)] = row
    return rates


def _sum_buckets(into: list[int], deltas: list[int]) -> list[int]:
    return [a + b for a, b in zip(into or [0] * len(deltas), deltas, strict=True)]


def _r(value: float) -> float:
    """A rate as the page shows it: three decimals keep the history small."""
    return round(value, 3)


_FUNCTION_COUNTERS = ("requests", "errors", "cold_starts")


def _warm(cell: Any) -> dict[str, int]:
    """A node's instances of a function (its ``/v1/stats`` ``functions`` entry), checked."""
    if not isinstance(cell, dict):
        return {"instances": 0, "busy": 0}
    return {
        key: cell[key] if isinstance(cell.get(key), int) else 0 for key in ("instances", "busy")
    }


class Dashboard:
    """Samples the cluster for the page (``overview``, ``function_view``) and keeps the
    curves of the last ``history.window_s`` seconds. ``known`` says whether a function is in
    this node's release; ``self_url`` is where this node answers (``http://HOST:PORT``), to
    read its own recent errors and log lines as it reads its peers'."""

    def __init__(
        self,
        cluster_view: Callable[[], Awaitable[dict[str, Any]]],
        own_stats: Callable[[], dict[str, Any]],
        self_name: str,
        peer_headers: dict[str, str] | None = None,
        *,
        clock: Clock = monotonic,
        scheduler: Scheduler | None = None,
        known: Callable[[str], bool] = lambda name: False,
        self_url: str | None = None,
    ) -> None:
        self.peer_headers = peer_headers or {}  # the admin token, to read peers' /v1/stats
        self.cluster_view = cluster_view
        self.own_stats = own_stats
        self.self_name = self_name
        self.clock = clock
        self.scheduler = scheduler or LoopScheduler(clock)
        self.known = known
        self.self_url = self_url
        # Recent samples per node: rates are taken over at least RATE_SPAN_S, whatever the
        # number of viewers polling (each poll would otherwise shrink the others' window).
        self.previous: dict[str, deque[dict[str, Any]]] = {}
        self.history = History()
        self.latest: dict[str, dict[str, Any]] = {}  # each reachable node's newest stats
        self.session: aiohttp.ClientSession | None = None
        self.last_view: float | None = None  # when a page last asked, on ``clock``
        self.sampler: Timer | None = None  # the background sampler's next tick
        self.sampling: asyncio.Future[Any] | None = None  # its sample under way

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

    def _viewed(self) -> None:
        """A page asked: the background sampler runs (again) until ``LINGER_S`` after it."""
        self.last_view = self.clock()
        if self.sampler is None:
            self.sampler = self.scheduler.call_later(STREAM_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        self.sampler = None
        newest = self.history.points[-1].at if self.history.points else None
        due = sample_due(self.clock(), self.last_view, newest)
        if due is None:
            return
        if due and self.sampling is None:
            self.sampling = asyncio.ensure_future(self._sample())
        self.sampler = self.scheduler.call_later(STREAM_INTERVAL_S, self._tick)

    async def _sample(self) -> None:
        try:
            await self._overview(self.history.last_seq)
        except Exception:  # the next tick tries again; a page would show the same failure
            log.warning("the dashboard's background sample failed", exc_info=True)
        finally:
            self.sampling = None

    async def close(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
            self.sampler = None
        if self.sampling is not None:
            self.sampling.cancel()
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

    async def overview(self, since: int | None = None) -> dict[str, Any]:
        """The cluster's topology, warm map and rates, for the page, with the curves' points
        after ``since`` (every point when None; see ``History.since``). The first call takes
        a second sample a moment after the first, so that even it shows rates."""
        self._viewed()
        if not self.previous:
            await self._overview()
            await asyncio.sleep(FIRST_SPAN_S)
        return await self._overview(since)

    async def _overview(self, since: int | None = None) -> dict[str, Any]:
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
        per_node: dict[str, dict[str, float]] = {}
        per_function: dict[str, dict[str, Any]] = {}
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
                    per_node[name] = {key: _r(rates[key]) for key in _FUNCTION_COUNTERS}
                    for key in totals:
                        totals[key] += rates[key]
                    deltas = [
                        max(0, a - b)
                        for a, b in zip(
                            sample["latency_buckets"], before["latency_buckets"], strict=True
                        )
                    ]
                    bounds = sample["latency_bounds"]
                    merged = _sum_buckets(merged, deltas)
                    for fn, fn_rates in function_rates(sample, before, span).items():
                        into = per_function.setdefault(fn, {"buckets": []})
                        for key in _FUNCTION_COUNTERS:
                            into[key] = into.get(key, 0.0) + fn_rates[key]
                        into["buckets"] = _sum_buckets(into["buckets"], fn_rates["buckets"])
                self._remember(name, sample)
                self.latest[name] = sample
            nodes.append(row)
        live = {str(m.get("name")) for m in members}
        for gone in set(self.previous) - live:
            del self.previous[gone]
        for gone in set(self.latest) - live:
            del self.latest[gone]
        functions = sorted({f for n in nodes for f in n["functions"]})
        p99 = _p99(bounds, merged) if bounds else None
        if per_node:
            self.history.add(
                self.clock(),
                {
                    "t": round(time.time(), 3),
                    **{key: _r(value) for key, value in totals.items()},
                    "p99_s": p99,
                    "nodes": per_node,
                    "functions": {
                        fn: {
                            **{key: _r(row[key]) for key in _FUNCTION_COUNTERS},
                            "p99_s": _p99(bounds, row["buckets"]) if bounds else None,
                        }
                        for fn, row in sorted(per_function.items())
                        # A function without a call in the interval is left out (the page
                        # reads 0): a release of many functions keeps its points small.
                        if any(row[key] for key in _FUNCTION_COUNTERS)
                    },
                },
            )
        return {
            "self": view.get("self"),
            "master": view.get("master"),
            "joined": view.get("joined", True),
            "standalone": view.get("standalone", False),
            "nodes": nodes,
            "functions": functions,
            "isolation": function_isolation(nodes, functions),
            "rates": totals,
            "p99_s": p99,
            "evictions_per_min": sum(
                n["memory"]["evictions_per_min"] or 0.0 for n in nodes if n["memory"]
            ),
            "departed": view.get("departed", []),
            "time": time.time(),
            "history": self.history.to_json(since),
        }

    async def _get(self, url: str) -> tuple[int, bytes] | None:
        """(status, body) of a GET to a node (with the admin token), None if it does not
        answer in time."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            )
        try:
            async with self.session.get(url, headers=self.peer_headers) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def function_view(self, name: str) -> dict[str, Any]:
        """The page of function ``name``: its curves, latency histogram, where it is warm,
        and the recent errors and log lines of every node. Raises ``BadName`` for a name
        that is not one and ``UnknownFunction`` for one that neither this node's release
        nor any node's counters have."""
        if not is_valid_name(name):
            raise errors.BadName(f"{name[:80]!r} is not a function name (1-64 of [A-Za-z0-9._-])")
        overview = await self.overview(self.history.last_seq)  # samples; no copy of the curves
        if not self.known(name) and not any(
            name in (sample.get("calls") or {}) for sample in self.latest.values()
        ):
            raise errors.UnknownFunction(
                f"no function {name!r} in this cluster's release; see GET /v1/functions"
            )
        urls = {
            str(node["name"]): f"http://{node['http']}" if node.get("http") else self.self_url
            for node in overview["nodes"]
            if node["reachable"] and (node.get("http") or node["name"] == self.self_name)
        }
        targets = [(node, url) for node, url in urls.items() if url]
        quoted = urllib.parse.quote(name)
        answers = await asyncio.gather(
            *(self._get(f"{url}/v1/functions/{quoted}") for _, url in targets),
            *(
                self._get(
                    f"{url}/v1/logs?function={quoted}&since={function_page.LOG_SINCE}"
                    f"&limit={function_page.LOG_LINES}"
                )
                for _, url in targets
            ),
        )
        described, logged = answers[: len(targets)], answers[len(targets) :]
        error_answers = []
        for (node, _), answer in zip(targets, described, strict=True):
            if answer is not None and answer[0] == 200:
                try:
                    error_answers.append((node, json.loads(answer[1])))
                except ValueError:
                    continue
        return {
            "name": name,
            "self": self.self_name,
            "time": time.time(),
            "window_s": self.history.window_s,
            "points": function_page.function_points(
                (p.to_json() for p in self.history.points), name
            ),
            "latency": function_page.latency_histogram(self.latest.values(), name),
            "nodes": [
                {
                    "name": node["name"],
                    "reachable": node["reachable"],
                    **_warm(node["functions"].get(name)),
                }
                for node in sorted(overview["nodes"], key=lambda node: str(node["name"]))
            ],
            # Nodes of a release without /v1/functions/NAME answer 404: none of them is
            # counted here, and the page says that errors are not reported.
            "errors_reported_by": len(error_answers),
            "recent_errors": function_page.recent_errors(error_answers),
            "logs": function_page.log_lines(
                answer[1] for answer in logged if answer is not None and answer[0] == 200
            ),
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
            since = None  # the first event carries every point, the next ones the new ones
            while not gone.done() and not stopping():
                overview = await self.overview(since)
                since = self.history.last_seq
                payload = json.dumps(overview, separators=(",", ":"))
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
