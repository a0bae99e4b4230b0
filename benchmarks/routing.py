"""Routing strategies against one workload, in one run: cold starts, latency, throughput.

    .venv/bin/python benchmarks/routing.py                  # full: 4 x 60 s, ~5 min
    .venv/bin/python benchmarks/routing.py --quick          # 4 x 5 s, 20 functions, < 60 s
    .venv/bin/python benchmarks/routing.py --workload io    # ~100 ms calls instead of ~1 ms

The workload: 5 node processes on 127.0.0.240-244 (local gossip preset), 50 functions
f00..f49, each with an init of ~100 ms, and a round-robin client (aiohttp, 32 calls in
flight) picking each call's function with Zipf popularity (exponent 1.0, seeded: every
strategy gets the same sequence). Two kinds of call (``--workload``):

- ``short`` (the default, tests/fixtures/zipf): ~1 ms of blocking work, concurrency 1, at
  most 4 instances per node. The nodes' HTTP and routing work is most of a call and the two
  cores saturate: this measures what routing costs in CPU.
- ``io`` (tests/fixtures/zipf-io): ~100 ms of awaited I/O, 8 calls at once per instance. A
  call costs about what an init costs, as for the many sub-second functions of a real FaaS:
  this measures what routing is for.

The same workload runs against four clusters, one after the other, each started fresh
(nothing warm):

(a) no routing: nodes started with ``--hop-limit 0``: every node runs every call itself;
(b) tierfaas: tiered routing with the defaults (replica lookups, route cache, forwarding);
(c) home-node hashing (OpenWhisk's ShardingContainerPoolBalancer idea), and
(d) the warm table in a Redis server (started and stopped here, on 127.0.0.245) that every
    node reads and writes: for both, benchmarks/_strategies.py runs the production node and
    router and replaces only the router's table source (see its docstring).

Reported for each: cold starts (instances started, from every node's
``tierfaas_cold_start_seconds_count``), p50/p99 latency and errors seen by the client,
throughput, the share of calls served warm / forwarded, and the routing overhead: the median
latency of forwarded-warm calls minus that of local-warm calls, under the load and in an
idle probe after it (300 sequential round-robin calls of a function warm on one node only).

Targets for (b): cold starts <= 1/4 of (a)'s; p99 below (a)'s; cold starts <= (d)'s + 10%;
forwarded warm call <= 1 ms more than a local warm call at the median (idle probe). Every
process started here is stopped on exit, error, Ctrl-C or SIGTERM. Results: a table on stdout,
benchmarks/results/routing.json and, when matplotlib is installed, docs/routing.png
(``--workload io``: routing-io.*; a quick run's go to benchmarks/results/ only).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

import _common as c
from tierfaas.procs import free_port

# The workloads: the same 50 functions, the same init of ~100 ms; what differs is a call.
WORKLOADS = {
    # ~1 ms of blocking work per call, one call at a time per instance: the nodes' HTTP and
    # routing work is most of a call, so the 2 cores saturate and the routing's CPU shows.
    "short": c.REPO_ROOT / "tests" / "fixtures" / "zipf",
    # ~100 ms of awaited I/O per call, 8 calls at once per instance: a call costs about as
    # much as an init, as for the many sub-second functions of a real FaaS.
    "io": c.REPO_ROOT / "tests" / "fixtures" / "zipf-io",
}
STRATEGIES_SCRIPT = c.BENCHMARKS_DIR / "_strategies.py"
SUBNET = "127.0.0"
FIRST_HOST = 240
REDIS_HOST = f"{SUBNET}.245"
NODES = 5
RAMP_S = 5.0  # the start of a run, when every function is still cold somewhere
PROBE_FUNCTION = "probe"  # not in the workload: started on one node just before the probe
SETTLE_S = 2.0  # before the idle probe
STRATEGIES = {
    "a": "no routing (--hop-limit 0)",
    "b": "tierfaas tiered routing",
    "c": "home-node hashing",
    "d": "warm table in Redis",
}
SHORT = {"a": "none", "b": "tierfaas", "c": "hash", "d": "Redis"}


@dataclass(frozen=True)
class Settings:
    mode: str
    workload: str
    duration_s: float  # per strategy
    functions: int
    in_flight: int
    zipf_s: float
    probe_calls: int
    seed: int = 7


def settings_for(quick: bool, workload: str = "short") -> Settings:
    if quick:
        return Settings("quick", workload, 5.0, 20, 32, 1.0, 100)
    return Settings("full", workload, 60.0, 50, 32, 1.0, 300)


def result_name(settings: Settings) -> str:
    """routing, routing-quick, routing-io, routing-io-quick: one file per kind of run."""
    name = "routing" if settings.workload == "short" else f"routing-{settings.workload}"
    return name if settings.mode == "full" else f"{name}-quick"


# -- the cluster -----------------------------------------------------------------------------


Node = c.ClusterNode


def node_argv(
    strategy: str, host: str, port: int, gossip_port: int, redis: str | None, release: Path
) -> list[str]:
    seeds = ",".join(f"{SUBNET}.{FIRST_HOST + i}:{gossip_port}" for i in range(2))
    options = [
        "--release", str(release),
        "--http", f"{host}:{port}",
        "--gossip", f"{host}:{gossip_port}",
        "--rpc", f"{host}:{gossip_port + 1}",
        "--join", seeds,
        "--gossip-preset", "local",
        "--log-level", "warning",
    ]  # fmt: skip
    if strategy == "a":
        options += ["--hop-limit", "0"]
    if strategy in ("a", "b"):
        return [sys.executable, "-m", "tierfaas.cli", "node", *options]
    argv = [sys.executable, str(STRATEGIES_SCRIPT)]
    argv += ["--strategy", "hash" if strategy == "c" else "redis"]
    if redis is not None:
        argv += ["--redis", redis]
    return [*argv, "--", *options]


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        return await response.json()


async def wait_cluster(session: aiohttp.ClientSession, nodes: list[Node]) -> None:
    """Until every node is ready and sees all five with the same master."""
    deadline = time.monotonic() + 30
    while True:
        try:
            views = [await get_json(session, f"{n.url}/v1/cluster") for n in nodes]
            if (
                all(len(v["members"]) == NODES for v in views)
                and len({v["master"] for v in views}) == 1
            ):
                return
        except (aiohttp.ClientError, OSError, KeyError):
            pass
        for n in nodes:
            if n.managed.process.poll() is not None:
                raise RuntimeError(f"{n.managed.name} exited:\n{n.managed.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not form within 30 s")
        await asyncio.sleep(0.1)


_SAMPLE = re.compile(r'^tierfaas_cold_start_seconds_count\{function="([^"]+)"\} (\S+)$', re.M)
_ROUTING = re.compile(
    r"^(tierfaas_route_lookup_seconds_(?:count|sum)|tierfaas_route_lookup_failures_total"
    r"|tierfaas_route_cache_total|tierfaas_forwards_total|tierfaas_hot_starts_total)"
    r"(?:\{(.*)\})? (\S+)$",
    re.M,
)


async def node_metrics(
    session: aiohttp.ClientSession, nodes: list[Node]
) -> tuple[dict[str, int], dict[str, float]]:
    """Instances started by function, and the routing counters, summed over every node."""
    started: dict[str, int] = {}
    routing: dict[str, float] = {}
    for node in nodes:
        async with session.get(f"{node.url}/metrics") as response:
            text = await response.text()
        for function, value in _SAMPLE.findall(text):
            started[function] = started.get(function, 0) + int(float(value))
        for name, labels, value in _ROUTING.findall(text):
            key = name + (f"{{{labels}}}" if labels else "")
            routing[key] = routing.get(key, 0.0) + float(value)
    return started, routing


# -- the load --------------------------------------------------------------------------------


@dataclass
class Sample:
    latency_s: float
    status: int
    route: str
    function: str
    at_s: float = 0.0  # when it was sent, from the start of the load


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def zipf_sequence(settings: Settings, count: int) -> list[str]:
    names = [f"f{i:02d}" for i in range(settings.functions)]
    weights = [1.0 / (rank + 1) ** settings.zipf_s for rank in range(settings.functions)]
    rng = random.Random(settings.seed)
    return rng.choices(names, weights, k=count)


async def load(session: aiohttp.ClientSession, nodes: list[Node], settings: Settings) -> Run:
    """``in_flight`` workers, each call to the next node in turn, for ``duration_s``."""
    sequence = zipf_sequence(settings, 2_000_000)
    turn = itertools.count()
    run = Run()
    start = time.perf_counter()
    deadline = start + settings.duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            n = next(turn)
            function = sequence[n % len(sequence)]
            url = f"{nodes[n % len(nodes)].url}/function/{function}"
            began = time.perf_counter()
            try:
                async with session.post(url, data=b"x") as response:
                    await response.read()
                    status = response.status
                    route = response.headers.get("x-tierfaas-route", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                key = type(exc).__name__
                run.errors[key] = run.errors.get(key, 0) + 1
                continue
            run.samples.append(
                Sample(time.perf_counter() - began, status, route, function, began - start)
            )
            if status != 200:
                key = f"http_{status}"
                run.errors[key] = run.errors.get(key, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(settings.in_flight)))
    run.elapsed_s = time.perf_counter() - began
    return run


async def probe(session: aiohttp.ClientSession, nodes: list[Node], calls: int) -> dict[str, Any]:
    """Sequential round-robin calls of a function warm on one node: forwarded vs local."""
    # An idle probe: the load's last calls and connection closes settle first.
    await asyncio.sleep(SETTLE_S)
    first = f"{nodes[0].url}/function/{PROBE_FUNCTION}"
    async with session.post(first, data=b"x") as response:
        await response.read()
    await asyncio.sleep(0.5)  # batch window + propagation
    by_route: dict[str, list[float]] = {}
    for n in range(calls):
        url = f"{nodes[n % len(nodes)].url}/function/{PROBE_FUNCTION}"
        began = time.perf_counter()
        async with session.post(url, data=b"x") as response:
            await response.read()
            route = response.headers.get("x-tierfaas-route", "") if response.status == 200 else ""
        by_route.setdefault(route or f"http_{response.status}", []).append(
            time.perf_counter() - began
        )
    medians = {route: c.median(v) * 1e3 for route, v in by_route.items()}
    return {
        "calls": {route: len(v) for route, v in by_route.items()},
        "median_ms": medians,
        "overhead_ms": medians.get("forwarded-warm", float("nan"))
        - medians.get("local-warm", float("nan")),
    }


async def measure(strategy: str, settings: Settings, procs: c.Processes) -> dict[str, Any]:
    redis = redis_proc = None
    if strategy == "d":
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
        redis_port = free_port(REDIS_HOST)
        redis = f"{REDIS_HOST}:{redis_port}"
        redis_proc = procs.start(
            "redis",
            [
                server,
                *("--bind", REDIS_HOST, "--port", str(redis_port)),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            ],
        )
    hosts = [f"{SUBNET}.{FIRST_HOST + i}" for i in range(NODES)]
    gossip_port = free_port(hosts[0])
    nodes = []
    for host in hosts:
        port = free_port(host)
        argv = node_argv(strategy, host, port, gossip_port, redis, WORKLOADS[settings.workload])
        nodes.append(Node(host, port, procs.start(f"{strategy}-{host}", argv)))
        time.sleep(0.05)  # oldest first: the first node becomes the master
    try:
        for node in nodes:
            await asyncio.to_thread(
                c.wait_http, node.host, node.port, "/readyz", 30.0, node.managed
            )
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await wait_cluster(session, nodes)
            run = await load(session, nodes, settings)
            started, routing = await node_metrics(session, nodes)
            probed = await probe(session, nodes, settings.probe_calls) if strategy != "a" else {}
        for node in nodes:
            if node.managed.process.poll() is not None:
                raise RuntimeError(f"{node.managed.name} died:\n{node.managed.log_tail()}")
    finally:
        for node in nodes:
            procs.stop(node.managed)
        if redis_proc is not None:
            procs.stop(redis_proc)
    result = summarize(strategy, run, started, probed)
    result["routing_metrics"] = routing
    lookups = routing.get("tierfaas_route_lookup_seconds_count", 0.0)
    result["lookups"] = lookups
    result["lookup_mean_ms"] = c.ratio(
        routing.get("tierfaas_route_lookup_seconds_sum", 0.0) * 1e3, lookups
    )
    return result


def summarize(
    strategy: str, run: Run, started: dict[str, int], probed: dict[str, Any]
) -> dict[str, Any]:
    ok = [s for s in run.samples if s.status == 200]
    latencies = [s.latency_s for s in ok]
    routes: dict[str, list[float]] = {}
    for s in ok:
        routes.setdefault(s.route, []).append(s.latency_s)
    local = c.median(routes.get("local-warm", [])) * 1e3
    forwarded = c.median(routes.get("forwarded-warm", [])) * 1e3
    total = len(run.samples) + sum(v for k, v in run.errors.items() if not k.startswith("http_"))
    return {
        "strategy": strategy,
        "label": STRATEGIES[strategy],
        "calls": total,
        "ok": len(ok),
        "errors": dict(run.errors),
        "elapsed_s": run.elapsed_s,
        "throughput_per_s": len(ok) / run.elapsed_s,
        "latency_ms": c.summarize(latencies, 1e3),
        "cold_starts": sum(v for f, v in started.items() if f != PROBE_FUNCTION),
        # Calls that waited for a cold start, sent in the first RAMP_S (everything is cold at
        # the start) and after it (scale-out under load, or a function called late).
        "cold_calls_ramp": sum(s.route.endswith("-cold") and s.at_s < RAMP_S for s in ok),
        "cold_calls_after_ramp": sum(s.route.endswith("-cold") and s.at_s >= RAMP_S for s in ok),
        "cold_starts_by_function": started,
        "routes": {route: len(v) for route, v in sorted(routes.items())},
        "warm_share": c.ratio(
            len(routes.get("local-warm", [])) + len(routes.get("forwarded-warm", [])), len(ok)
        ),
        "forwarded_share": c.ratio(len(routes.get("forwarded-warm", [])), len(ok)),
        "median_ms_by_route": {route: c.median(v) * 1e3 for route, v in sorted(routes.items())},
        "overhead_under_load_ms": forwarded - local,
        "tail": tail(ok),
        "probe": probed,
    }


def tail(ok: list[Sample]) -> dict[str, Any]:
    """Where the slowest 1% of calls (those at or above p99) came from: by function, by
    route, and by when they were sent (5 s windows)."""
    if not ok:
        return {}
    line = c.percentile([s.latency_s for s in ok], 99)
    slow = [s for s in ok if s.latency_s >= line]

    def top(keys: list[str], n: int = 8) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:n])

    return {
        "calls": len(slow),
        "by_function": top([s.function for s in slow]),
        "by_route": top([s.route for s in slow]),
        "by_window_s": top([f"{int(s.at_s // 5) * 5}-{int(s.at_s // 5) * 5 + 5}" for s in slow]),
    }


# -- report ----------------------------------------------------------------------------------


def targets(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    a, b, d = results["a"], results["b"], results["d"]
    overhead = b["probe"].get("overhead_ms", float("nan"))
    return {
        "cold_starts_vs_no_routing": {
            "value": c.ratio(b["cold_starts"], a["cold_starts"]),
            "limit": "<= 0.25",
            "pass": b["cold_starts"] <= a["cold_starts"] / 4,
        },
        "p99_below_no_routing": {
            "value": f"{b['latency_ms']['p99']:.1f} vs {a['latency_ms']['p99']:.1f} ms",
            "limit": "(b) < (a)",
            "pass": b["latency_ms"]["p99"] < a["latency_ms"]["p99"],
        },
        "cold_starts_vs_redis": {
            "value": f"{b['cold_starts']} vs {d['cold_starts']}",
            "limit": "(b) <= 1.1 x (d)",
            "pass": b["cold_starts"] <= 1.1 * d["cold_starts"],
        },
        "forwarded_overhead_idle": {
            "value": overhead,
            "limit": "<= 1 ms",
            "pass": overhead <= 1.0,
        },
    }


COLUMNS = [
    "strategy",
    "cold starts",
    "p50 ms",
    "p99 ms",
    "calls/s",
    "warm",
    "forwarded",
    "errors",
    "fwd - local, load",
    "fwd - local, idle",
]


TARGET_COLUMNS = ["target for (b)", "value", "limit", "result"]


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.2f} ms"  # NaN: no such calls


def rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    out = []
    for key, r in results.items():
        errors = sum(r["errors"].values())
        out.append(
            [
                f"({key}) {r['label']}",
                f"{r['cold_starts']}",
                f"{r['latency_ms']['p50']:.1f}",
                f"{r['latency_ms']['p99']:.1f}",
                f"{r['throughput_per_s']:,.0f}",
                f"{r['warm_share']:.1%}",
                f"{r['forwarded_share']:.1%}",
                f"{errors}" + (f" ({errors / max(1, r['calls']):.2%})" if errors else ""),
                _ms(r["overhead_under_load_ms"]),
                _ms(r["probe"].get("overhead_ms", float("nan"))) if r["probe"] else "—",
            ]
        )
    return out


def target_rows(checks: dict[str, dict[str, Any]]) -> list[list[str]]:
    out = []
    for name, t in checks.items():
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        out.append([name, shown, t["limit"], "PASS" if t["pass"] else "FAIL"])
    return out


def plot(results: dict[str, dict[str, Any]], title: str, name: str) -> str:
    """The four panels as a PNG: docs/<name>.png for a full run; a quick run's goes to
    benchmarks/results/ (it must not replace the documented one)."""
    quick = name.endswith("-quick")
    target = c.REPO_ROOT / ("benchmarks/results" if quick else "docs") / f"{name}.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install -e '.[bench]')"
    keys = list(results)
    labels = [f"({k}) {SHORT[k]}" for k in keys]
    colors = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#d62728"][: len(keys)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    panels = [
        ("cold starts (instances started)", [results[k]["cold_starts"] for k in keys]),
        ("p50 latency (ms)", [results[k]["latency_ms"]["p50"] for k in keys]),
        ("p99 latency (ms)", [results[k]["latency_ms"]["p99"] for k in keys]),
        ("throughput (calls/s)", [results[k]["throughput_per_s"] for k in keys]),
    ]
    for ax, (panel, values) in zip(axes, panels, strict=True):
        bars = ax.bar(range(len(keys)), values, color=colors)
        ax.set_title(panel, fontsize=10)
        ax.set_xticks(range(len(keys)), labels, fontsize=9)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{value:,.0f}" if value >= 100 or isinstance(value, int) else f"{value:.1f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    fig.suptitle(
        f"{title}: (a) no routing, (b) tierfaas tiered routing, (c) home-node hashing, "
        "(d) warm table in Redis",
        fontsize=10,
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return f"plot: {target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 x 5 s, 20 functions, < 60 s")
    parser.add_argument(
        "--strategies", default="abcd", help="which of a, b, c, d to run (targets need all)"
    )
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="short",
        help="short: ~1 ms calls that saturate the CPU; io: ~100 ms of awaited I/O per call",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write docs/routing.png")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="only redraw the plot from a results file"
    )
    args = parser.parse_args(argv)
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        mode = saved["settings"]["mode"]
        workload = saved["settings"].get("workload", "short")
        title = f"tierfaas routing benchmark ({workload} calls, {mode}, {saved['date']})"
        replotted = Settings(mode, workload, 0, 0, 0, 0, 0)
        print(plot(saved["results"], title, result_name(replotted)))
        return 0
    settings = settings_for(args.quick, args.workload)
    chosen = [k for k in "abcd" if k in args.strategies]
    began = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with c.Processes() as procs:
        for key in chosen:
            print(
                f"({key}) {STRATEGIES[key]}: {settings.duration_s:g} s, {settings.functions} "
                f"functions, {settings.in_flight} in flight ...",
                flush=True,
            )
            load_before = os.getloadavg()[0]
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results[key] = runner.run(measure(key, settings, procs))
            # Other work on the machine shows here: compare strategies only within one run.
            results[key]["loadavg_1min_before"] = load_before
            r = results[key]
            print(
                f"    {r['cold_starts']} cold starts, p50 {r['latency_ms']['p50']:.1f} ms, "
                f"p99 {r['latency_ms']['p99']:.1f} ms, {r['throughput_per_s']:,.0f} calls/s",
                flush=True,
            )
    elapsed = time.perf_counter() - began
    checks = targets(results) if set(chosen) == set("abcd") else {}
    machine = c.machine_info()
    data = {
        "benchmark": "routing",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "machine": machine,
        "settings": asdict(settings),
        "release": str(WORKLOADS[settings.workload]),
        "results": results,
        "targets": checks,
        "elapsed_s": elapsed,
    }
    path = c.write_results(result_name(settings), data)
    title = (
        f"tierfaas routing benchmark — {data['date']}, {settings.workload} calls, "
        f"{settings.mode} mode, "
        f"{settings.duration_s:g} s per strategy, {settings.functions} functions (Zipf "
        f"{settings.zipf_s:g}), {settings.in_flight} in flight, {machine['nproc']} cores, "
        f"{elapsed:.0f} s"
    )
    c.print_table(title, COLUMNS, rows(results))
    if checks:
        c.print_table(
            "targets for (b)", ["target", "value", "limit", "result"], target_rows(checks)
        )
    if args.markdown:
        print()
        print(c.markdown_table(COLUMNS, rows(results)))
        if checks:
            print()
            print(c.markdown_table(TARGET_COLUMNS, target_rows(checks)))
    if not args.no_plot:
        title = (
            f"tierfaas routing benchmark ({settings.workload} calls, {settings.mode}, "
            f"{data['date']})"
        )
        print(plot(results, title, result_name(settings)))
    print(f"\nresults: {path}")
    passed = all(t["pass"] for t in checks.values())
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
