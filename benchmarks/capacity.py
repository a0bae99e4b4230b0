"""Capacity: cold starts and memory under a day of Azure-shaped calls, and on a real cluster.

    .venv/bin/python benchmarks/capacity.py                 # full: see docs/benchmarks.md
    .venv/bin/python benchmarks/capacity.py --quick         # < 60 s: smaller trace, short cluster
    .venv/bin/python benchmarks/capacity.py --no-cluster    # the simulation only
    # --functions N --hours H --seed S --budget-mb MB --nodes N --max-daily-calls N --tick-s S
    # --memory-accounting declared|measured --cold-starts local|home --cold-start-worth-mb-s X
    # --history control|node|oracle --variants 0,2 --sim-nodes 1|cluster|both --cache off|on|both
    # --cluster-seconds S --cluster-rate R --markdown

1. **Simulation** (``simulate``): a trace of ``benchmarks/traces.py`` replayed on the real
   ``Runtime`` (its pools, policy, memory budget and reaper) of ``tierfaas.testing.runtime``,
   on a ``FakeClock``: each instance is a ``FakeInstance`` that takes its function's start
   cost to start and each call's duration to answer; a day passes in seconds of wall time.
   One node (and the baseline once more with unbounded memory: the cold starts a fixed
   keep-alive causes by itself), and a cluster of ``--nodes`` nodes whose routing is modelled
   here with the router's own pure parts: each call lands on a node round-robin (the front
   door), which runs it if it has a free slot, else forwards it per
   ``tierfaas.routing.decision.decide``
   to a node where the function is warm (the real routing table, replicated in batches, is
   modelled as instant and exact; a target's load is its pool's busy share over the last
   second), which runs it warm only or refuses it (then the next, then here); a node that
   forwards a function often starts its own instance through ``HotTracker`` and
   ``Runtime.prewarm``, as the router does. The functions' idle histories travel as the
   control plane carries them (``--history control``, the product's): each runtime's
   ``FunctionCold`` history goes to a ``control.histories.HistoryStore`` on the fake clock,
   each ``FunctionWarm`` takes it back into ``Runtime.adopt_history``, instantly (the
   messages' latency is not modelled), and each node's ``share_histories`` asks the
   (exact) table whether a function is warm elsewhere. ``--history node``: each node keeps
   its own (the code before histories travelled); ``oracle``: an experiment, a node starting
   a function warm nowhere takes over the tracker of the node that served it last.
   Variants (NodeConfig settings named in docs/architecture.md / issue 19): fixed 10-minute
   keep-alive + LRU eviction (Lambda- and OpenWhisk-like: every function's ``keep_alive_s``
   is 600), fixed + Greedy-Dual, learned
   windows + Greedy-Dual, each in the cluster with and without ``cluster_cache`` (whose
   runtime part is wired as node/compose.py wires it: each node's budget asks the table
   whether a function is warm elsewhere, to evict those duplicates first). A variant
   whose setting this code's ``NodeConfig`` does not have is reported "not available on this
   code" and not run (only a setting asking for today's behaviour may be missing). Memory is
   accounted as declared (``memory_accounting = "declared"`` where the setting exists) so that
   the variants compare keep-alive and eviction on one budget; ``--memory-accounting
   measured`` has each fake instance report its function's working set instead.

   Measured: cold calls (answers that waited for a start) as a share of the calls the trace
   stands for (a thinned busy function's event stands for several calls: see traces.py;
   its cold start is one), instances started, evicted and reaped, calls refused, and
   memory-seconds: the integral over the day of the memory held by instances, from the
   moment a start begins to the moment the instance is gone, both declared (``memory_mb``)
   and measured-like (the trace's working set per function; the fakes have no real memory).
2. **Real cluster** (``--no-cluster`` skips it): ``tierfaas up --detach`` with 3 nodes on
   loopback at default settings and a generated release of 100 tiny Python functions (each
   with an ``init``, default ``memory_mb``), then a client replaying Poisson arrivals whose
   function is drawn with Zipf(1.0) popularity, several calls in flight; cold calls are the
   answers with ``X-Tierfaas-Start: cold``, reported per 10 s window and after the first
   minute. ``tierfaas down`` and a reaper of the state dir's processes clean up.

Results: tables on stdout, benchmarks/results/capacity.json (with each variant's hourly series
and the cluster's 10 s windows) and, when matplotlib is installed (the ``bench`` extra), the
figures of ``capacity_plots.py``: docs/capacity-sim.png and docs/capacity-cluster.png (a quick
run's go to benchmarks/results/ only; ``--no-plot``: none; ``capacity_plots.py JSON...``
redraws them from saved results).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import _common as c
import capacity_plots
import traces
from tierfaas import errors
from tierfaas.config import NodeConfig
from tierfaas.control.histories import HistoryStore
from tierfaas.manifest import FunctionSpec
from tierfaas.routing.decision import Candidate, Forward, LocalState, decide
from tierfaas.routing.hot import HotTracker
from tierfaas.runtime import Runtime
from tierfaas.runtime.events import (
    FunctionCold,
    FunctionWarm,
    InstanceStarted,
    InstanceStopped,
    RuntimeEvent,
)
from tierfaas.testing.clock import FakeClock, settle
from tierfaas.testing.runtime import FakeInstance, FakeSpawner, RuntimeHarness, fake_release
from tierfaas.topology import hrw_weight

FIXED_KEEP_ALIVE_S = 600.0
TODAY = {
    "keep_alive_policy": "fixed",
    "eviction": "lru",
    "cluster_cache": False,
    "memory_accounting": "declared",
}
"""Each variant setting's value that is this code's behaviour when NodeConfig lacks it."""
CLUSTER_CACHE_NOTE = (
    "cluster_cache is passed to every node's NodeConfig and, as node/compose.py does, each "
    "node's MemoryBudget.warm_elsewhere answers from the (instant, exact) table; the router's "
    "re-lookup before an evicting start is moot with an exact table"
)
CLUSTER_CACHE_UNWIRED = (
    "cluster_cache is passed to every node's NodeConfig, but this code's MemoryBudget has no "
    "warm_elsewhere: the simulator applies only what the Runtime does by itself"
)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    keep_alive_policy: str
    eviction: str


VARIANTS = (
    Variant("fixed 10 min + LRU", "fixed", "lru"),
    Variant("fixed 10 min + Greedy-Dual", "fixed", "greedy-dual"),
    Variant("learned + Greedy-Dual", "learned", "greedy-dual"),
)
UNBOUNDED = Variant("fixed 10 min, unbounded memory (reference)", "fixed", "lru")
"""The cold starts a fixed keep-alive causes by itself: the baseline with no memory limit."""
UNBOUNDED_MB = 1 << 30


def node_settings(
    variant: Variant, cluster_cache: bool | None, memory_accounting: str = "declared"
) -> dict[str, Any] | str:
    """The NodeConfig settings that select ``variant``, or why this code cannot run it."""
    wanted: dict[str, Any] = {
        "keep_alive_policy": variant.keep_alive_policy,
        "eviction": variant.eviction,
        "memory_accounting": memory_accounting,
    }
    if cluster_cache is not None:
        wanted["cluster_cache"] = cluster_cache
    have = {f.name for f in dataclasses.fields(NodeConfig)}
    missing = [k for k, v in wanted.items() if k not in have and v != TODAY[k]]
    if missing:
        return f"not available on this code (NodeConfig has no {', '.join(missing)})"
    return {k: v for k, v in wanted.items() if k in have}


def tick_settings(tick_s: float) -> dict[str, float]:
    """The settings of a node's periodic checks, every ``tick_s`` in the simulation: each is a
    timer on the fake clock, and a day at 1 s is 86,400 of them per node and check."""
    have = {f.name for f in dataclasses.fields(NodeConfig)}
    return {k: tick_s for k in ("reap_interval_s", "memory_sample_s") if k in have}


# -- the simulation --------------------------------------------------------------------------


class MemoryLedger:
    """The memory held by instances, integrated over time (MB x seconds)."""

    def __init__(self, declared: dict[str, int], measured: dict[str, int], now: float) -> None:
        self.declared = declared
        self.measured = measured
        self.held_declared = 0
        self.held_measured = 0
        self.declared_mb_s = 0.0
        self.measured_mb_s = 0.0
        self.peak_declared = 0
        self._last = now

    def accrue(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self.declared_mb_s += elapsed * self.held_declared
            self.measured_mb_s += elapsed * self.held_measured
            self._last = now

    def hold(self, name: str, now: float) -> None:
        self.accrue(now)
        self.held_declared += self.declared[name]
        self.held_measured += self.measured[name]
        self.peak_declared = max(self.peak_declared, self.held_declared)

    def release(self, name: str, now: float) -> None:
        self.accrue(now)
        self.held_declared -= self.declared[name]
        self.held_measured -= self.measured[name]


class SimSpawner(FakeSpawner):
    """A ``FakeSpawner`` whose starts take each function's own start cost, and whose
    instances' memory is booked in a ``MemoryLedger`` from the start's beginning until the
    instance is gone. Where the fakes report a measured use (``FakeInstance.measured_mb``,
    with measured accounting), each instance reports its function's working set."""

    def __init__(self, clock: FakeClock, start_s: dict[str, float], ledger: MemoryLedger) -> None:
        super().__init__(clock)
        self.start_costs = start_s
        self.ledger = ledger

    async def spawn(self, spec: FunctionSpec) -> FakeInstance:
        name = spec.name
        # FakeSpawner.spawn reads start_s before its first await: this start's cost.
        self.start_s = self.start_costs[name]
        self.ledger.hold(name, self.clock())
        try:
            instance = await super().spawn(spec)
        except BaseException:
            self.ledger.release(name, self.clock())
            raise
        instance.closed.add_done_callback(lambda _: self.ledger.release(name, self.clock()))
        if hasattr(instance, "measured_mb"):
            instance.measured_mb = self.ledger.measured[name]
        # Only the live ones are needed (close() kills them): a day starts thousands.
        if len(self.spawned) > 512:
            self.spawned = [i for i in self.spawned if not i.dead]
        return instance


async def settle_fast() -> None:
    """Runs the event loop until nothing is ready (the loop's ready queue is empty), at most
    ``settle()``'s 50 rounds: exact, and cheaper than always 50 when little is ready."""
    loop = asyncio.get_running_loop()
    ready: collections.deque[object] | None = getattr(loop, "_ready", None)
    if ready is None:
        await settle()
        return
    for _ in range(50):
        await asyncio.sleep(0)
        if not ready:
            return


async def advance_to(clock: FakeClock, target: float) -> None:
    """Moves the fake clock to ``target``, firing each timer at its time and letting the loop
    run what each one wakes (as ``FakeClock.run_for``)."""
    await settle_fast()
    while True:
        due = clock.next_due()
        if due is None or due > target:
            break
        clock.advance(max(0.0, due - clock()))
        await settle_fast()
    if target > clock():
        clock.advance(target - clock())


@dataclass
class Counts:
    calls: float = 0.0  # real calls the events stand for
    events: int = 0
    cold: int = 0
    forwarded: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    calls_by_function: collections.defaultdict[str, float] = field(
        default_factory=lambda: collections.defaultdict(float)
    )
    cold_by_function: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class SimResult:
    variant: str
    nodes: int
    cluster_cache: bool | None
    settings: dict[str, Any]
    calls: float
    events: int
    cold_calls: int
    cold_pct: float
    cold_events_pct: float
    cold_start_s: float  # the cold calls' start time, summed (what Greedy-Dual's cost weighs)
    function_cold_pct: dict[str, float]  # median, p75, p90 over functions of their cold %
    cold_by_trigger: dict[str, int]  # cold calls of timer, http and other functions
    cold_by_decade: dict[str, int]  # cold calls by the function's daily calls, per decade
    forwarded: int
    refused: dict[str, int]
    starts: int
    evictions: int
    reaped_idle: int
    declared_gib_h: float
    measured_gib_h: float
    peak_declared_mb: int
    wall_s: float
    hourly: list[dict[str, float]]
    note: str = ""


class SimNode:
    """One simulated node: a real ``Runtime`` on fake instances, and its hot tracker."""

    def __init__(
        self,
        name: str,
        harness: RuntimeHarness,
        hot: HotTracker,
    ) -> None:
        self.name = name
        self.harness = harness
        self.runtime = harness.runtime
        self.hot = hot


class SimCluster:
    """Nodes on one fake clock and the routing model of the module's doc."""

    def __init__(
        self, nodes: list[SimNode], seed: int, home_starts: bool = False, history: str = "control"
    ) -> None:
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.rng = random.Random(seed)
        self.home_starts = home_starts
        self.history = history
        self._requests = 0

    def oracle_history(self, node: SimNode, function: str) -> None:
        """``--history oracle`` (an experiment, not the product): ``function`` is warm nowhere
        and starts on ``node``, which takes over the idle history of the node whose activity
        of it ended last, its end and its last arrival included, so that the idle time this
        call records is the cluster's."""
        pools = [n.runtime._pool(function) for n in self.nodes]
        if any(p.registered for p in pools):
            return
        here = node.runtime._pool(function)
        trackers = [p.idle for p in pools if p.idle is not None and p.idle.idle_since is not None]
        if here.idle is None or not trackers:
            return
        last = max(trackers, key=lambda t: t.idle_since or 0.0)
        if last is here.idle:
            return
        changes = here.idle.histogram.changes + last.histogram.changes + 1
        here.idle.histogram = copy.deepcopy(last.histogram)
        here.idle.gaps = copy.deepcopy(last.gaps)
        here.idle.histogram.changes = changes
        here.idle.idle_since = last.idle_since
        here.idle.began = last.began

    def home(self, function: str) -> str | None:
        """The function's home as ``ControlPlane.home`` picks it (``--cold-starts home``),
        or None (``local``: a function warm nowhere starts where its call landed)."""
        if not self.home_starts:
            return None
        return max(self.nodes, key=lambda n: (hrw_weight(function, n.name), n.name)).name

    def warm_elsewhere(self, node: SimNode, function: str) -> bool:
        """``function`` is warm on a node other than ``node`` (the table, instant and exact)."""
        return any(
            other.runtime.pool(function).registered for other in self.nodes if other is not node
        )

    def wire_cluster_cache(self) -> bool:
        """The cluster cache's runtime part, wired as node/compose.py does: each node's budget
        evicts first the idle instances of functions warm on another node. False if this
        code's budget has no such hook."""
        wired = False
        for node in self.nodes:
            budget = node.runtime.budget
            if hasattr(budget, "warm_elsewhere"):
                budget.warm_elsewhere = functools.partial(self.warm_elsewhere, node)
                wired = True
        return wired

    async def call(self, node: SimNode, name: str, body: bytes) -> tuple[bool, bool]:
        """(cold, forwarded) of one call arriving at ``node``."""
        self._requests += 1
        request_id = f"req-{self._requests}"
        tried: set[str] = set()
        pool = node.runtime.pool(name)
        while len(self.nodes) > 1:
            warm, free = pool.free_slots()
            local = LocalState(warm, free, pool.slot_due_s() if warm else math.inf)
            if local.runs_here_now:
                break
            candidates = [
                Candidate(other.name, other.runtime.pool(name).recent_load())
                for other in self.nodes
                if other is not node and other.runtime.pool(name).registered
            ]
            decision = decide(
                local,
                candidates,
                self_name=node.name,
                hops=0,
                hop_limit=1,
                tried=tried,
                rng=self.rng,
                home=self.home(name),
            )
            if not isinstance(decision, Forward):
                break
            target = self.by_name[decision.node]
            try:
                # The home may start it when it has room (Router._run_forwarded).
                if decision.start and not target.runtime.pool(name).can_take():
                    raise errors.Busy(f"{name!r} has no room at its home")
                result = await target.runtime.invoke(
                    name, body, request_id=request_id, warm_only=not decision.start
                )
            except (errors.NotWarm, errors.Busy):
                tried.add(decision.node)
                continue
            if node.hot.forwarded(name, target.runtime.pool(name).recent_load()):
                node.runtime.prewarm(name)
            return result.cold, True
        if self.history == "oracle":
            self.oracle_history(node, name)
        result = await node.runtime.invoke(name, body, request_id=request_id)
        return result.cold, False


def function_cold_pct(counts: Counts) -> dict[str, float]:
    """The spread over functions of each one's cold calls as a share of its calls (the
    paper's per-application view: a policy that serves the busy functions well can still
    leave most functions cold)."""
    shares = [
        100.0 * counts.cold_by_function[name] / calls
        for name, calls in counts.calls_by_function.items()
        if calls > 0
    ]
    return {
        "median": c.percentile(shares, 50),
        "p75": c.percentile(shares, 75),
        "p90": c.percentile(shares, 90),
    }


def cold_by(counts: Counts, group_of: dict[str, str]) -> dict[str, int]:
    """Cold calls summed by a grouping of the functions (where the cold starts come from)."""
    groups: collections.Counter[str] = collections.Counter()
    for name, cold in counts.cold_by_function.items():
        groups[group_of[name]] += cold
    return dict(sorted(groups.items()))


def sim_release(profiles: Sequence[traces.FunctionProfile]) -> Any:
    return fake_release(
        {
            p.name: {
                "memory_mb": p.memory_mb,
                "keep_alive_s": FIXED_KEEP_ALIVE_S,
                "timeout_s": 3600.0,
                "max_instances": 4,
            }
            for p in profiles
        }
    )


async def simulate(
    profiles: Sequence[traces.FunctionProfile],
    trace: Sequence[traces.Event],
    duration_s: float,
    *,
    variant: Variant,
    settings: dict[str, Any],
    nodes: int,
    cluster_cache: bool | None,
    budget_mb: int,
    seed: int,
    history: str = "control",
) -> SimResult:
    """Replays ``trace`` on ``nodes`` simulated nodes (see the module's doc)."""
    began = time.perf_counter()
    clock = FakeClock(start=0.0)
    release = sim_release(profiles)
    ledger = MemoryLedger(
        {p.name: p.memory_mb for p in profiles}, {p.name: p.measured_mb for p in profiles}, 0.0
    )
    start_costs = {p.name: p.start_s for p in profiles}
    stopped: collections.Counter[str] = collections.Counter()
    starts = 0

    # The master's idle histories (``--history control``): the same store and hooks as the
    # product's, with the control plane's messages instant (as the routing table is here).
    histories = HistoryStore(clock) if history == "control" else None

    def on_event(runtime: Runtime, event: RuntimeEvent) -> None:
        nonlocal starts
        if isinstance(event, InstanceStarted):
            starts += 1
        elif isinstance(event, InstanceStopped):
            stopped[event.reason] += 1
        elif histories is None:
            pass
        elif isinstance(event, FunctionCold):
            if event.history:  # the Unregister's
                histories.put(event.function, event.history)
        elif isinstance(event, FunctionWarm):  # the Register's answer
            data = histories.take(event.function)
            if data is not None:
                runtime.adopt_history(event.function, data)

    sim_nodes: list[SimNode] = []
    for index in range(nodes):
        harness = RuntimeHarness(
            release,
            clock=clock,
            spawner=SimSpawner(clock, start_costs, ledger),
            memory_budget_mb=budget_mb,
            **settings,
        )
        # Not harness.events: a day is many events.
        harness.runtime.listeners = [functools.partial(on_event, harness.runtime)]

        hot = HotTracker(clock, NodeConfig.default_of("hot_forwards_per_s"))
        sim_nodes.append(SimNode(f"node-{index}", harness, hot))
    cluster = SimCluster(
        sim_nodes, seed, home_starts=settings.get("cold_starts") == "home", history=history
    )
    if histories is not None:
        for n in sim_nodes:
            # As node/compose.py wires it: what the (instant, exact) table knows.
            n.runtime.share_histories(functools.partial(cluster.warm_elsewhere, n))
    note = ""
    if cluster_cache:
        note = CLUSTER_CACHE_NOTE if cluster.wire_cluster_cache() else CLUSTER_CACHE_UNWIRED
    counts = Counts()
    hourly: list[dict[str, float]] = []
    hour_mark = (0.0, 0, 0.0, 0.0)  # calls, cold, declared and measured MB-s at the hour's end
    next_hour = 3600.0

    def record(event: traces.Event, task: asyncio.Task[tuple[bool, bool]]) -> None:
        counts.calls += event.weight
        counts.events += 1
        counts.calls_by_function[event.function] += event.weight
        if task.cancelled():
            counts.refused["cancelled"] += 1
            return
        exc = task.exception()
        if isinstance(exc, errors.HttpError):
            counts.refused[exc.code] += 1
            return
        if exc is not None:
            raise exc
        cold, forwarded = task.result()
        counts.cold += cold
        counts.cold_by_function[event.function] += cold
        counts.forwarded += forwarded

    def close_hour(at: float) -> None:
        nonlocal hour_mark
        ledger.accrue(at)
        calls0, cold0, mb_s0, measured0 = hour_mark
        hour_calls = counts.calls - calls0
        hourly.append(
            {
                "hour": len(hourly),
                "calls": hour_calls,
                "cold": counts.cold - cold0,
                "cold_pct": 100.0 * (counts.cold - cold0) / hour_calls if hour_calls else 0.0,
                "declared_mb_avg": (ledger.declared_mb_s - mb_s0) / 3600.0,
                "measured_mb_avg": (ledger.measured_mb_s - measured0) / 3600.0,
            }
        )
        hour_mark = (counts.calls, counts.cold, ledger.declared_mb_s, ledger.measured_mb_s)

    tasks: set[asyncio.Task[tuple[bool, bool]]] = set()
    for n in sim_nodes:
        await n.harness.__aenter__()
    try:
        for index, event in enumerate(trace):
            while event.time >= next_hour:
                await advance_to(clock, next_hour)
                close_hour(next_hour)
                next_hour += 3600.0
            await advance_to(clock, event.time)
            node = sim_nodes[index % nodes]
            body = repr(event.duration).encode()
            task = asyncio.get_running_loop().create_task(cluster.call(node, event.function, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(functools.partial(record, event))
        while next_hour <= duration_s:
            await advance_to(clock, next_hour)
            close_hour(next_hour)
            next_hour += 3600.0
        await advance_to(clock, duration_s)
        ledger.accrue(duration_s)
        declared_mb_s, measured_mb_s = ledger.declared_mb_s, ledger.measured_mb_s
    finally:
        for task in list(tasks):
            task.cancel()
        for n in sim_nodes:
            await n.harness.__aexit__(None, None, None)
    return SimResult(
        variant=variant.name,
        nodes=nodes,
        cluster_cache=cluster_cache,
        settings=settings,
        calls=counts.calls,
        events=counts.events,
        cold_calls=counts.cold,
        cold_pct=100.0 * counts.cold / counts.calls if counts.calls else math.nan,
        cold_events_pct=100.0 * counts.cold / counts.events if counts.events else math.nan,
        cold_start_s=math.fsum(
            start_costs[name] * cold for name, cold in counts.cold_by_function.items()
        ),
        function_cold_pct=function_cold_pct(counts),
        cold_by_trigger=cold_by(counts, {p.name: p.trigger for p in profiles}),
        cold_by_decade=cold_by(
            counts, {p.name: f"1e{int(math.log10(p.daily_calls))}" for p in profiles}
        ),
        forwarded=counts.forwarded,
        refused=dict(counts.refused),
        starts=starts,
        evictions=stopped["evicted"],
        reaped_idle=stopped["idle"],
        declared_gib_h=declared_mb_s / 1024.0 / 3600.0,
        measured_gib_h=measured_mb_s / 1024.0 / 3600.0,
        peak_declared_mb=ledger.peak_declared,
        wall_s=time.perf_counter() - began,
        hourly=hourly,
        note=note,
    )


# -- the real cluster ------------------------------------------------------------------------

CLUSTER_FUNCTIONS = 100
HANDLERS = """\
\"\"\"capacity benchmark: tiny functions, each with an init (generated).\"\"\"

TABLE: dict[str, int] = {}


def setup() -> None:
    TABLE.update((str(i), i * i) for i in range(1000))


def handle(body: bytes) -> bytes:
    return body
"""


def write_release(directory: Path, functions: int) -> list[str]:
    """A release of ``functions`` tiny Python functions f000... with an init each, at every
    default setting (``memory_mb`` included); returns their names."""
    names = [f"f{i:03d}" for i in range(functions)]
    lines = ["[release]", 'name = "capacity"', 'version = "1.0.0"', ""]
    for name in names:
        lines += [f"[functions.{name}]", 'handler = "fns:handle"', 'init = "fns:setup"', ""]
    (directory / "tierfaas.toml").write_text("\n".join(lines))
    (directory / "fns.py").write_text(HANDLERS)
    return names


@dataclass
class ClusterCall:
    sent: float  # seconds since the replay began
    function: str
    status: int
    start: str  # the X-Tierfaas-Start header: cold, warm, or "" (none: an error)
    latency_s: float


def _post(url: str, sent: float, function: str, began: float) -> ClusterCall:
    request = urllib.request.Request(url, data=b"x", method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return ClusterCall(
                sent,
                function,
                response.status,
                response.headers.get("X-Tierfaas-Start", ""),
                time.perf_counter() - t0,
            )
    except urllib.error.HTTPError as exc:
        return ClusterCall(sent, function, exc.code, "", time.perf_counter() - t0)
    except OSError:
        return ClusterCall(sent, function, 0, "", time.perf_counter() - t0)


def replay_on_cluster(
    port: int, trace: Sequence[traces.Event], in_flight: int
) -> list[ClusterCall]:
    """Sends each call of ``trace`` at its time (at most ``in_flight`` at once)."""
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        futures = []
        for event in trace:
            delay = began + event.time - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            url = f"http://127.0.0.1:{port}/function/{event.function}"
            futures.append(pool.submit(_post, url, event.time, event.function, began))
        return [f.result() for f in futures]


def _cluster_pids(state_dir: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads((state_dir / "cluster.json").read_text())
        return [int(state["supervisor"]["pid"])] + [int(n["pid"]) for n in state["nodes"]]
    return []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if text.encode() in cmdline:
                    found.append(int(entry))
    return found


@contextlib.contextmanager
def cluster_up(release: Path, state_dir: Path, port: int, first_host: str) -> Iterator[None]:
    """``tierfaas up --detach`` with 3 nodes; on exit ``tierfaas down``, then SIGKILL to
    whatever of it is left (the processes the state file names or whose command line names
    the state dir)."""
    tierfaas = [sys.executable, "-m", "tierfaas.cli"]
    up = [
        *tierfaas, "up", "--nodes", "3", "--detach", "--release", str(release),
        "--state-dir", str(state_dir), "--port", str(port), "--first-host", first_host,
    ]  # fmt: skip
    pids: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # so that the cluster is stopped on the way out

    old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        done = subprocess.run(up, capture_output=True, text=True, timeout=120, check=False)
        pids += _cluster_pids(state_dir)
        if done.returncode != 0:
            raise RuntimeError(f"tierfaas up failed ({done.returncode}): {done.stderr}")
        yield
    finally:
        subprocess.run(
            [*tierfaas, "down", "--state-dir", str(state_dir)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        for pid in [*pids, *_processes_mentioning(str(state_dir))]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        signal.signal(signal.SIGTERM, old_sigterm)


def cluster_summary(
    calls: Sequence[ClusterCall], warmup_s: float, window_s: float = 10.0
) -> dict[str, Any]:
    after = [call for call in calls if call.sent >= warmup_s]
    cold_after = sum(call.start == "cold" for call in after)
    errors_after = sum(call.status != 200 for call in after)
    windows = []
    end = max((call.sent for call in calls), default=0.0)
    t = 0.0
    while t <= end:
        inside = [call for call in calls if t <= call.sent < t + window_s]
        windows.append(
            {
                "from_s": t,
                "calls": len(inside),
                "cold_pct": 100.0 * sum(x.start == "cold" for x in inside) / len(inside)
                if inside
                else 0.0,
            }
        )
        t += window_s
    return {
        "calls": len(calls),
        "calls_after_warmup": len(after),
        "cold_after_warmup": cold_after,
        "cold_pct_after_warmup": 100.0 * cold_after / len(after) if after else math.nan,
        "cold_pct_all": 100.0 * sum(x.start == "cold" for x in calls) / len(calls)
        if calls
        else math.nan,
        "errors_after_warmup": errors_after,
        "statuses": dict(collections.Counter(str(x.status) for x in calls)),
        "latency_ms_after_warmup": c.summarize([x.latency_s for x in after], 1e3),
        "functions_called": len({x.function for x in calls}),
        "windows": windows,
    }


def run_cluster(
    seconds: float, rate: float, warmup_s: float, seed: int, first_host: str, in_flight: int
) -> dict[str, Any]:
    """Part 2 (see the module's doc)."""
    from tierfaas.procs import free_port

    with tempfile.TemporaryDirectory(prefix="tierfaas-capacity-") as tmp:
        release = Path(tmp) / "release"
        release.mkdir()
        names = write_release(release, CLUSTER_FUNCTIONS)
        trace = traces.zipf_events(names, seconds, rate, seed)
        port = free_port()
        began = time.perf_counter()
        with cluster_up(release, Path(tmp) / "state", port, first_host):
            up_s = time.perf_counter() - began
            calls = replay_on_cluster(port, trace, in_flight)
        summary = cluster_summary(calls, warmup_s)
    return {
        "nodes": 3,
        "functions": CLUSTER_FUNCTIONS,
        "zipf_exponent": 1.0,
        "seconds": seconds,
        "rate_per_s": rate,
        "warmup_s": warmup_s,
        "in_flight": in_flight,
        "up_s": up_s,
        **summary,
    }


# -- the report ------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:,.{digits}f}")
    )


SIM_COLUMNS = (
    "variant",
    "nodes",
    "cluster cache",
    "cold calls",
    "cold %",
    "cold-start s",
    "fn cold % p50/p75",
    "starts",
    "evicted",
    "reaped",
    "refused",
    "GiB·h declared",
    "GiB·h measured",
    "cold vs base",
    "cold-start s vs base",
    "GiB·h vs base",
)


def sim_rows(results: Sequence[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """The table's rows, and the notes of the variants that did not run."""
    baselines = {
        r["nodes"]: r
        for r in results
        if r["variant"] == VARIANTS[0].name and not r["cluster_cache"] and "skipped" not in r
    }
    rows: list[list[str]] = []
    notes: list[str] = []
    for r in results:
        cache = "-" if r["cluster_cache"] is None else ("on" if r["cluster_cache"] else "off")
        head = [r["variant"], str(r["nodes"]), cache]
        if "skipped" in r:
            if r["skipped"] not in notes:
                notes.append(r["skipped"])
            mark = f"n/a ({notes.index(r['skipped']) + 1})"
            rows.append([*head, mark, *["-"] * (len(SIM_COLUMNS) - 4)])
            continue
        base = baselines.get(r["nodes"])
        vs_cold = vs_time = vs_mem = "-"
        if base is not None and base["cold_calls"] and base is not r:
            # Memory as the budget counted it in this run (the same in every variant).
            accounting = r["settings"].get("memory_accounting", "declared")
            gib_h = f"{accounting}_gib_h"
            vs_cold = f"{100.0 * (r['cold_calls'] / base['cold_calls'] - 1):+.1f} %"
            vs_time = f"{100.0 * (r['cold_start_s'] / base['cold_start_s'] - 1):+.1f} %"
            vs_mem = f"{100.0 * (r[gib_h] / base[gib_h] - 1):+.1f} %"
        fn = r["function_cold_pct"]
        rows.append(
            [
                *head,
                f"{r['cold_calls']:,}",
                _fmt(r["cold_pct"], 2),
                _fmt(r["cold_start_s"], 0),
                f"{_fmt(fn['median'])} / {_fmt(fn['p75'])}",
                f"{r['starts']:,}",
                f"{r['evictions']:,}",
                f"{r['reaped_idle']:,}",
                f"{sum(r['refused'].values()):,}",
                _fmt(r["declared_gib_h"]),
                _fmt(r["measured_gib_h"]),
                vs_cold,
                vs_time,
                vs_mem,
            ]
        )
    return rows, [f"({i}) {note}" for i, note in enumerate(notes, 1)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="< 60 s: a smaller trace")
    parser.add_argument("--no-cluster", action="store_true", help="skip the real cluster")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulation")
    parser.add_argument("--functions", type=int, help="simulated functions (200; quick 60)")
    parser.add_argument("--hours", type=float, help="simulated hours (24; quick 6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-daily-calls", type=float, default=500.0)
    parser.add_argument(
        "--budget-mb", type=int, help="one node's memory budget (16384; quick 5120)"
    )
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the simulated cluster")
    parser.add_argument(
        "--tick-s",
        type=float,
        default=5.0,
        help="the nodes' periodic checks in the simulation: reap_interval_s and, where it "
        "exists, memory_sample_s (1 s each by default; 5 s here saves wall time)",
    )
    parser.add_argument(
        "--memory-accounting",
        choices=("declared", "measured"),
        default="declared",
        help="what the budget counts in every variant (measured: each instance reports its "
        "function's working set; needs NodeConfig.memory_accounting)",
    )
    parser.add_argument(
        "--cold-starts",
        choices=("local", "home"),
        default=NodeConfig.default_of("cold_starts"),
        help="where the simulated cluster starts a function warm nowhere (the node setting "
        "--cold-starts: local, on the node the call landed on; home, on the function's "
        "rendezvous home)",
    )
    parser.add_argument(
        "--cold-start-worth-mb-s",
        type=float,
        help="the node setting cold_start_worth_mb_s in every variant (what the learned "
        "windows price a cold start at; NodeConfig's default when not given)",
    )
    parser.add_argument(
        "--variants",
        help="only these simulated variants: their indexes in the table's order, comma-separated "
        "(0 fixed + LRU, 1 fixed + Greedy-Dual, 2 learned + Greedy-Dual); all by default",
    )
    parser.add_argument(
        "--sim-nodes",
        choices=("1", "cluster", "both"),
        default="both",
        help="simulate one node (with the unbounded reference), the --nodes cluster, or both",
    )
    parser.add_argument(
        "--cache",
        choices=("off", "on", "both"),
        default="both",
        help="the cluster's variants with the cluster cache off, on, or both",
    )
    parser.add_argument(
        "--history",
        choices=("control", "node", "oracle"),
        default="control",
        help="where a node starting a function finds its idle history: control (the "
        "product's: the one the master kept from the function's last Unregister), node (its "
        "own only, as before histories travelled), oracle (an experiment: a node starting a "
        "function warm nowhere takes over the history of the node that served it last)",
    )
    parser.add_argument("--cluster-seconds", type=float, help="real cluster replay (150; quick 25)")
    parser.add_argument("--cluster-warmup-s", type=float, help="not counted (60; quick 10)")
    parser.add_argument("--cluster-rate", type=float, default=20.0, help="calls/s")
    parser.add_argument("--cluster-in-flight", type=int, default=16)
    parser.add_argument("--first-host", default="127.0.5.10")
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    parser.add_argument("--no-plot", action="store_true", help="do not draw docs/capacity-*.png")
    args = parser.parse_args(argv)
    quick = args.quick
    functions = args.functions or (60 if quick else 200)
    hours = args.hours or (6.0 if quick else 24.0)
    budget = args.budget_mb or (5120 if quick else 16384)
    cluster_budget = budget // 2
    report: dict[str, Any] = {
        "benchmark": "capacity",
        "when": c.now_iso(),
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "quick": quick,
    }
    began = time.perf_counter()
    status = 0
    if not args.no_sim:
        duration = hours * 3600.0
        profiles = traces.generate_profiles(functions, args.seed)
        trace = traces.events(profiles, duration, args.seed, args.max_daily_calls)
        described = traces.describe(profiles, trace, duration)
        print(
            f"trace: {functions} functions, {hours:g} h, {len(trace):,} events standing for "
            f"{described['real_calls']:,.0f} calls; daily calls "
            f"{described['daily_calls']['min']:.0f}..{described['daily_calls']['max']:,.0f} "
            f"({described['daily_calls']['decades_covered']:.1f} decades)"
        )
        chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else VARIANTS
        caches = {"off": (False,), "on": (True,), "both": (False, True)}[args.cache]
        runs: list[tuple[Variant, int, bool | None, int]] = []
        if args.sim_nodes in ("1", "both"):
            runs += [(v, 1, None, budget) for v in chosen]
            if not args.variants:
                runs.append((UNBOUNDED, 1, None, UNBOUNDED_MB))
        if args.sim_nodes in ("cluster", "both"):
            runs += [(v, args.nodes, cache, cluster_budget) for v in chosen for cache in caches]
        results: list[dict[str, Any]] = []
        for variant, nodes, cache, node_budget in runs:
            settings = node_settings(variant, cache, args.memory_accounting)
            if nodes > 1 and not isinstance(settings, str):
                settings["cold_starts"] = args.cold_starts
            if args.cold_start_worth_mb_s and not isinstance(settings, str):
                settings["cold_start_worth_mb_s"] = args.cold_start_worth_mb_s
            entry: dict[str, Any] = {
                "variant": variant.name,
                "nodes": nodes,
                "cluster_cache": cache,
                "budget_mb_per_node": node_budget,
            }
            if isinstance(settings, str):
                entry["skipped"] = settings
                print(f"  {variant.name}, {nodes} node(s), cluster cache {cache}: {settings}")
            else:
                result = asyncio.run(
                    simulate(
                        profiles,
                        trace,
                        duration,
                        variant=variant,
                        settings={**settings, **tick_settings(args.tick_s)},
                        nodes=nodes,
                        cluster_cache=cache,
                        budget_mb=node_budget,
                        seed=args.seed,
                        history=args.history,
                    )
                )
                entry.update(dataclasses.asdict(result))
                print(
                    f"  {variant.name}, {nodes} node(s): {result.cold_calls:,} cold, "
                    f"{result.declared_gib_h:.1f} GiB·h, {result.wall_s:.1f} s\n"
                    f"    cold by trigger {result.cold_by_trigger}, by daily calls "
                    f"{result.cold_by_decade}"
                )
                if result.note:
                    print(f"    note: {result.note}")
            results.append(entry)
        report["simulation"] = {
            "trace": {
                "functions": functions,
                "hours": hours,
                "seed": args.seed,
                "max_daily_calls": args.max_daily_calls,
                "described": described,
            },
            "budget_mb_one_node": budget,
            "budget_mb_per_cluster_node": cluster_budget,
            "keep_alive_s_fixed": FIXED_KEEP_ALIVE_S,
            "tick_settings": tick_settings(args.tick_s),
            "memory_accounting": args.memory_accounting,
            "cold_starts": args.cold_starts,
            "history": args.history,
            "cold_start_worth_mb_s": args.cold_start_worth_mb_s
            or NodeConfig.default_of("cold_start_worth_mb_s"),
            "results": results,
        }
        rows, notes = sim_rows(results)
        c.print_table("Simulation (real Runtime on a FakeClock)", SIM_COLUMNS, rows)
        print("\n".join(notes))
        if args.markdown:
            print(c.markdown_table(SIM_COLUMNS, rows))
            print("\n".join(notes))
    if not args.no_cluster:
        seconds = args.cluster_seconds or (25.0 if quick else 150.0)
        warmup = args.cluster_warmup_s or (10.0 if quick else 60.0)
        try:
            cluster = run_cluster(
                seconds,
                args.cluster_rate,
                warmup,
                args.seed,
                args.first_host,
                args.cluster_in_flight,
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report["cluster"] = {"error": str(exc)}
            print(f"real cluster: {exc}")
            status = 1
        else:
            report["cluster"] = cluster
            columns = ("cluster", "calls", "cold % after warm-up", "cold % all", "errors",
                       "p50 ms", "p99 ms")  # fmt: skip
            lat = cluster["latency_ms_after_warmup"]
            shape = f"Zipf 1.0, {args.cluster_rate:g}/s, {seconds:g} s"
            row = [
                f"3 nodes, {CLUSTER_FUNCTIONS} fns, {shape}",
                f"{cluster['calls']:,}",
                _fmt(cluster["cold_pct_after_warmup"], 2),
                _fmt(cluster["cold_pct_all"], 2),
                str(cluster["errors_after_warmup"]),
                _fmt(lat.get("p50", math.nan), 1),
                _fmt(lat.get("p99", math.nan), 1),
            ]
            c.print_table(f"Real cluster (after the first {warmup:g} s)", columns, [row])
            if args.markdown:
                print(c.markdown_table(columns, [row]))
    report["wall_s"] = time.perf_counter() - began
    # A run with measured accounting, or of the real cluster alone, keeps its own results
    # (and figure) beside the default's.
    name = "capacity" + ("-measured" if args.memory_accounting == "measured" else "")
    name += "-home" if args.cold_starts == "home" and not args.no_sim else ""
    path = c.write_results(name + ("-cluster" if args.no_sim else ""), report)
    if not args.no_plot:
        print("\n".join(capacity_plots.draw(report)))
    print(f"results: {path} ({report['wall_s']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
