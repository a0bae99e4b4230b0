"""Rolling a cluster to a new release under load: how long it takes, and what clients see.

    .venv/bin/python benchmarks/rollout.py            # full: 3, 5, 10 nodes x 3 runs, ~6 min
    .venv/bin/python benchmarks/rollout.py --quick    # 3 nodes, 1 run, ~30 s
    # --nodes 3,5 --repetitions 5 --markdown; PYTHONPATH=OTHER/src runs another checkout's nodes

Each run starts a fresh local cluster the way a user does (``tierfaas up --detach``, built-in
front door on 127.0.0.1, its own registry in a fresh temp state folder, registry poll 0.5 s,
drain timeout 10 s, node addresses in 127.0.8.10-127.0.9.254, a fresh block per run since a
rollout counts addresses upward), then:

1. a client (aiohttp, 20 keep-alive connections through the front door) sends ``POST
   /function/hello`` at about 100 requests/s and records every request: its send time, its
   latency, its status (a 2xx, a typed error status, or the name of the connection error)
   and which version answered (v2's ``hello`` greets differently);
2. after a warm-up and a 5 s **baseline** window, ``tierfaas publish`` makes release 2.0.0
   desired (a copy of examples/demo with its version and greeting changed);
3. the master rolls the cluster (canaries, Handover of the routing table, drains one node
   at a time while launching new ones); the run waits for the history entry of the rollout
   in ``registry/rollout.json`` and keeps the load for a few seconds more;
4. ``tierfaas down`` stops everything, in a ``finally``, whatever happened.

Measured per run: the rollout's duration from publish to the history entry's ``finished_at``
(and the master's own ``seconds``, from noticing the new version to done), the handover's
time and route count, the requests sent during the rollout with their outcomes, p50/p99
latency during the rollout against the baseline window of the same run, and the share of v2
answers after the rollout. The report quotes medians over the runs of each size; failed
requests are summed. The status file is also sampled every 50 ms during the rollout (the
history entry is only the last writer's view; a handover missing from it is taken from the
samples and marked). A cluster that fails to start is started once more on fresh addresses
(recorded, not measured). When a run has a failed request or an anomaly, its node logs and
rollout.json are copied to benchmarks/results/rollout-logs/ for a look. Results: tables on
stdout and benchmarks/results/rollout.json (rollout-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

import _common as c
from tierfaas import procs

DEMO = c.REPO_ROOT / "examples" / "demo"
V2 = "2.0.0"
V2_GREETING = "Hello from v2"
FIRST_ADDRESS = ipaddress.IPv4Address("127.0.8.10")
LAST_ADDRESS = ipaddress.IPv4Address("127.0.9.254")
LOGS_DIR = c.RESULTS_DIR / "rollout-logs"
COLUMNS = ["nodes", "runs", "rollout s (publish→done)", "master's s", "handover ms", "routes",
           "requests", "failed", "p50 ms base → roll", "p99 ms base → roll",
           "v2 after"]  # fmt: skip
RUN_COLUMNS = ["run", "result", "rollout s", "master's s", "handover ms", "routes", "requests",
               "failed", "p50 ms base → roll", "p99 ms base → roll", "v2 after",
               "load avg"]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    mode: str
    sizes: tuple[int, ...]
    repetitions: int
    rate: float  # requests/s, all connections together
    connections: int
    warmup_s: float  # load before the baseline window: every node's instances start
    baseline_s: float
    after_s: float  # load kept after the rollout is done


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings("quick", (3,), 1, 100.0, 20, 2.0, 5.0, 2.0)
    return Settings("full", (3, 5, 10), 3, 100.0, 20, 3.0, 5.0, 3.0)


# -- the client load ---------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    sent: float  # Unix s
    latency_s: float
    status: str  # the HTTP status, or the exception's class name
    version: str  # v1 | v2 | "" (no answer, or not a hello greeting)
    served_by: str
    detail: str = ""  # failures only: the body or the exception's text


@dataclass
class Load:
    """About ``rate`` requests/s of ``POST /function/hello`` through ``url`` from
    ``connections`` workers, each on its own schedule, one request at a time, over a pool of
    keep-alive connections; every request's outcome is recorded."""

    url: str
    rate: float
    connections: int
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.connections)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session, i) for i in range(self.connections)))

    async def _worker(self, session: aiohttp.ClientSession, index: int) -> None:
        period = self.connections / self.rate
        due = time.monotonic() + period * index / self.connections  # spread the workers
        while not self.stopping.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due + period, time.monotonic() - period)  # late: no burst to catch up
            sent = time.time()
            began = time.perf_counter()
            try:
                async with session.post(f"{self.url}/function/hello", data=b"load") as r:
                    body = (await r.read()).decode(errors="replace")
                    took = time.perf_counter() - began
                    ok = 200 <= r.status < 300
                    version = "v2" if V2_GREETING in body else "v1" if "Hello," in body else ""
                    self.outcomes.append(
                        Outcome(sent, took, str(r.status), version,
                                r.headers.get("x-tierfaas-served-by", ""),
                                "" if ok else body[:300])
                    )  # fmt: skip
            except (aiohttp.ClientError, TimeoutError) as exc:
                took = time.perf_counter() - began
                self.outcomes.append(
                    Outcome(sent, took, exc.__class__.__name__, "", "", str(exc)[:300])
                )


def ok(outcome: Outcome) -> bool:
    return outcome.status.isdigit() and 200 <= int(outcome.status) < 300


def window(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start <= o.sent < end]


def latency_ms(outcomes: list[Outcome]) -> dict[str, float]:
    return c.summarize([o.latency_s for o in outcomes if ok(o)], 1e3)


# -- the cluster -------------------------------------------------------------------------------


class Addresses:
    """A fresh block of node addresses for each run, in 127.0.8.10-127.0.9.254: a rollout
    of N nodes uses about 2N + 2 (new nodes take new addresses), the block leaves room."""

    def __init__(self) -> None:
        self.next = FIRST_ADDRESS

    def block(self, nodes: int) -> str:
        size = 2 * nodes + 10
        start = self.next
        if start.packed[3] + nodes - 1 > 254:  # `up` wants its first nodes in one /24
            start = ipaddress.IPv4Address(int(start) - start.packed[3] + 256 + 10)
        if int(start) + size > int(LAST_ADDRESS):
            start = FIRST_ADDRESS  # earlier clusters are down by now
        self.next = start + size
        return str(start)


async def tierfaas(*args: str, timeout_s: float = 120.0) -> tuple[int, str]:
    """Runs the tierfaas command line; returns (exit code, output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tierfaas.cli", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"},
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"tierfaas {' '.join(args)}: no answer in {timeout_s:g} s"
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    return process.returncode or 0, out.decode(errors="replace")


def down(state_dir: Path) -> str:
    """``tierfaas down``; then, as a backstop, kills (by pid) any node the provider still
    lists. Synchronous, so it runs even while the run is being cancelled."""
    done = subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", "down", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"},
    )  # fmt: skip
    report = (done.stdout + done.stderr).strip()
    for path in (state_dir / "provider" / "nodes").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            if procs.alive(int(record["pid"]), record.get("start_time")):
                os.kill(int(record["pid"]), signal.SIGKILL)
                report += f"\nkilled {record['name']} (pid {record['pid']}), left by down"
    return report


def make_v2(folder: Path) -> Path:
    """examples/demo as version 2.0.0, whose hello answers 'Hello from v2, NAME!'."""
    release = folder / "release-v2"
    shutil.copytree(DEMO, release, ignore=shutil.ignore_patterns("__pycache__"))
    toml = release / "tierfaas.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{V2}"'))
    handlers = release / "handlers.py"
    code = handlers.read_text().replace('f"Hello, {name}!', f'f"{V2_GREETING}, {{name}}!')
    if V2_GREETING not in code:
        raise SystemExit(f"cannot change the greeting of {DEMO / 'handlers.py'}")
    handlers.write_text(code)
    return release


def read_status(registry: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((registry / "rollout.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


async def wait_finished(
    registry: Path, published: float, timeout_s: float, trace: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The history entry of the rollout to V2 once it is done or aborted (None: timed out).
    Meanwhile every change of the status file seen (master, phase, step, events, handover)
    is appended to ``trace``: the history entry is the last writer's view only."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Any, ...] = ()
    while time.monotonic() < deadline:
        status = read_status(registry)
        current = status.get("rollout") or {}
        seen = (status.get("master"), status.get("phase"), current.get("step"),
                len(current.get("events", [])), json.dumps(current.get("handover")))  # fmt: skip
        if status and seen != last:
            last = seen
            trace.append(
                {
                    "s": round(time.time() - published, 3),
                    "written_s": round(status.get("updated_at", 0) / 1000 - published, 3),
                    "master": seen[0],
                    "phase": seen[1],
                    "step": seen[2],
                    "events": seen[3],
                    "handover": current.get("handover"),
                }
            )
        for entry in status.get("history", []):
            if entry.get("to") == V2 and entry.get("result") in ("done", "aborted"):
                return dict(entry)
        await asyncio.sleep(0.05)
    return None


# -- one run -----------------------------------------------------------------------------------


async def one_run(
    settings: Settings, nodes: int, first_host: str, release: Path, work: Path, label: str
) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    registry = state_dir / "registry"
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    run: dict[str, Any] = {"label": label, "nodes": nodes, "first_host": first_host,
                           "loadavg_1min_before": os.getloadavg()[0]}  # fmt: skip
    load = Load(url, settings.rate, settings.connections)
    load_task: asyncio.Task[None] | None = None
    keep = False
    trace: list[dict[str, Any]] = []
    try:
        run["stage"] = "up"
        began = time.monotonic()
        code, out = await tierfaas(
            "up", "--detach", "--nodes", str(nodes), "--port", str(port),
            "--release", str(DEMO), "--state-dir", str(state_dir), "--first-host", first_host,
            "--registry-poll-s", "0.5", "--drain-timeout-s", "10", "--log-level", "info",
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"tierfaas up failed ({code}):\n{out[-2000:]}")
        run["up_s"] = time.monotonic() - began
        run["stage"] = "load"
        load_task = asyncio.create_task(load.run())
        await asyncio.sleep(settings.warmup_s + settings.baseline_s)
        run["stage"] = "rollout"
        published = time.time()
        code, out = await tierfaas("publish", str(release), "--registry", str(registry))
        run["publish_cli_s"] = time.time() - published
        if code != 0:
            raise RuntimeError(f"tierfaas publish failed ({code}):\n{out[-2000:]}")
        entry = await wait_finished(registry, published, 60.0 + 15.0 * nodes, trace)
        if entry is None:
            run["status_at_timeout"] = read_status(registry)
            raise RuntimeError(f"the rollout to {V2} did not finish in {60 + 15 * nodes} s")
        finished = entry["finished_at"] / 1000
        await asyncio.sleep(settings.after_s)
        load.stopping.set()
        await load_task
        run["entry"] = entry
        records = [
            json.loads(p.read_text()) for p in (state_dir / "provider" / "nodes").glob("*.json")
        ]
        run["nodes_after"] = dict(Counter(f"{r['version']} {r['phase']}" for r in records))
        run.update(analyse(settings, load.outcomes, entry, published, finished))
        run["stage"] = "finished"
        if run["handover_ms"] is None:  # the entry lost it: take what the status file showed
            seen = next((t["handover"] for t in trace if t["handover"]), None) or {}
            run["handover_missing_from_history"] = True
            run["handover_ms"], run["handover_routes"] = seen.get("ms"), seen.get("routes")
            run["handover_target"] = seen.get("target")
        keep = run["failed"] > 0 or entry["result"] != "done"
        keep = keep or "handover_missing_from_history" in run
    except Exception as exc:
        run["error"] = f"{exc.__class__.__name__}: {exc}"
        keep = True
    finally:
        load.stopping.set()
        if load_task is not None and not load_task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(load_task, 25)
        run["down"] = down(state_dir)
        run["outcomes_total"] = len(load.outcomes)
        run["status_trace"] = trace
        if keep:
            run["logs"] = str(save_logs(state_dir, label))
            if "failures" not in run:
                run["failures"] = [asdict(o) for o in load.outcomes if not ok(o)]
        shutil.rmtree(state_dir, ignore_errors=True)
    return run


def analyse(
    settings: Settings,
    outcomes: list[Outcome],
    entry: dict[str, Any],
    published: float,
    finished: float,
) -> dict[str, Any]:
    """The run's figures from the client's outcomes and the rollout's history entry."""
    baseline = window(outcomes, published - settings.baseline_s, published)
    during = window(outcomes, published, finished)
    after = window(outcomes, finished, finished + settings.after_s)
    failed = [o for o in during if not ok(o)]
    answered_after = [o for o in after if ok(o)]
    v1_after = [o.sent - finished for o in answered_after if o.version == "v1"]
    events = [
        {"s": round(e["at"] / 1000 - published, 3), "text": e["text"]}
        for e in entry.get("events", [])
    ]
    handover = entry.get("handover") or {}
    return {
        "result": entry["result"],
        "rollout_s": finished - published,
        "master_s": entry.get("seconds"),
        "noticed_s": entry["started_at"] / 1000 - published,
        "handover_ms": handover.get("ms"),
        "handover_routes": handover.get("routes"),
        "handover_target": handover.get("target"),
        "handover_at_s": next((e["s"] for e in events if e["text"].startswith("handed")), None),
        "events": events,
        "baseline": {
            "requests": len(baseline),
            "rate_per_s": len(baseline) / settings.baseline_s,
            "failed": sum(not ok(o) for o in baseline),
            "latency_ms": latency_ms(baseline),
        },
        "during": {
            "requests": len(during),
            "ok": len(during) - len(failed),
            "failed": len(failed),
            "failed_typed": sum(o.status.isdigit() for o in failed),
            "failed_connection": sum(not o.status.isdigit() for o in failed),
            "outcomes": dict(Counter(o.status for o in during)),
            "served_by": dict(Counter(o.served_by for o in during)),
            "latency_ms": latency_ms(during),
        },
        "after": {
            "requests": len(after),
            "failed": len(after) - len(answered_after),
            "v2_share": c.ratio(
                sum(o.version == "v2" for o in answered_after), len(answered_after)
            ),
            "v1_answers": len(v1_after),
            "last_v1_answer_after_done_s": max(v1_after, default=None),
        },
        "failed": sum(not ok(o) for o in outcomes),  # the whole run, warm-up included
        "failures": [
            {**asdict(o), "at_s": round(o.sent - published, 3)} for o in outcomes if not ok(o)
        ],
    }


def save_logs(state_dir: Path, label: str) -> Path:
    """Copies the run's node logs, up.log and rollout.json where they outlive the run."""
    target = LOGS_DIR / label
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with contextlib.suppress(OSError):
        shutil.copytree(state_dir / "provider" / "logs", target / "nodes")
    for name in ("up.log", "registry/rollout.json"):
        with contextlib.suppress(OSError):
            shutil.copy(state_dir / name, target / Path(name).name)
    return target


# -- the whole benchmark -----------------------------------------------------------------------


async def measure(settings: Settings, work: Path) -> list[dict[str, Any]]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # down runs
    release = make_v2(work)
    addresses = Addresses()
    runs = []
    # Repetition-major order: each size meets the machine's moods of the whole benchmark.
    for rep in range(settings.repetitions):
        for nodes in settings.sizes:
            label = f"n{nodes}-r{rep + 1}"
            print(f"{label}: {nodes} nodes ...", flush=True)
            run = await one_run(settings, nodes, addresses.block(nodes), release, work, label)
            if run.get("stage") == "up":  # the cluster did not start: not what is measured
                print(f"    {describe(run)}\n    starting again", flush=True)
                again = await one_run(
                    settings, nodes, addresses.block(nodes), release, work, label + "-again"
                )
                again["failed_starts"] = [run]
                run = again
            runs.append(run)
            print("    " + describe(run), flush=True)
    return runs


def describe(run: dict[str, Any]) -> str:
    if "error" in run:
        lines = [line.strip() for line in run["error"].splitlines() if line.strip()]
        tail = f" ... {lines[-1]}" if len(lines) > 1 else ""
        return f"ERROR at {run['stage']}: {lines[0]}{tail} (logs: {run.get('logs')})"
    during = run["during"]
    lost = " (missing from the history entry)" if run.get("handover_missing_from_history") else ""
    return (
        f"{run['result']} in {run['rollout_s']:.1f} s (master {run['master_s']} s), handover "
        f"{run['handover_routes']} routes in {run['handover_ms']} ms{lost}, "
        f"{during['requests']} requests during, {during['failed']} failed, "
        f"v2 after {_num(run['after']['v2_share'], '.0%')}"
    )


def _num(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _pair(base: float, roll: float) -> str:
    return f"{_ms(base)} → {_ms(roll)}"


def summarize(runs: list[dict[str, Any]], sizes: tuple[int, ...]) -> dict[str, Any]:
    """Per size: medians over the runs that finished, failed requests summed over all."""
    summary: dict[str, Any] = {}
    for nodes in sizes:
        mine = [r for r in runs if r["nodes"] == nodes]
        good = [r for r in mine if "error" not in r]

        def med(get: Any, good: list[dict[str, Any]] = good) -> float:
            values = [get(r) for r in good]
            return c.median([v for v in values if v is not None])

        summary[str(nodes)] = {
            "runs": len(mine),
            "done": sum(r.get("result") == "done" for r in mine),
            "errors": [r["error"] for r in mine if "error" in r],
            "rollout_s": med(lambda r: r["rollout_s"]),
            "rollout_s_range": [
                min((r["rollout_s"] for r in good), default=None),
                max((r["rollout_s"] for r in good), default=None),
            ],
            "master_s": med(lambda r: r["master_s"]),
            "handover_ms": med(lambda r: r["handover_ms"]),
            "handover_routes": med(lambda r: r["handover_routes"]),
            "requests_during": med(lambda r: r["during"]["requests"]),
            "failed_during_total": sum(r["during"]["failed"] for r in good),
            "failed_total": sum(r.get("failed", 0) for r in good),
            "p50_base_ms": med(lambda r: r["baseline"]["latency_ms"].get("p50")),
            "p50_roll_ms": med(lambda r: r["during"]["latency_ms"].get("p50")),
            "p99_base_ms": med(lambda r: r["baseline"]["latency_ms"].get("p99")),
            "p99_roll_ms": med(lambda r: r["during"]["latency_ms"].get("p99")),
            "v2_share_after": med(lambda r: r["after"]["v2_share"]),
        }
    return summary


def rows(summary: dict[str, Any]) -> list[list[str]]:
    out = []
    for nodes, s in summary.items():
        low, high = s["rollout_s_range"]
        spread = f" ({low:.1f}-{high:.1f})" if low is not None and low != high else ""
        out.append(
            [
                nodes,
                f"{s['done']}/{s['runs']} done",
                f"{_num(s['rollout_s'], '.1f')}{spread}",
                _num(s["master_s"], ".1f"),
                _num(s["handover_ms"]),
                _num(s["handover_routes"]),
                _num(s["requests_during"], ",.0f"),
                str(s["failed_during_total"]),
                _pair(s["p50_base_ms"], s["p50_roll_ms"]),
                _pair(s["p99_base_ms"], s["p99_roll_ms"]),
                _num(s["v2_share_after"], ".1%"),
            ]
        )
    return out


def run_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in runs:
        if "error" in r:
            out.append([r["label"], "ERROR", *["-"] * 9, f"{r['loadavg_1min_before']:.1f}"])
            continue
        base, roll = r["baseline"]["latency_ms"], r["during"]["latency_ms"]
        out.append(
            [
                r["label"],
                r["result"],
                f"{r['rollout_s']:.1f}",
                _num(r["master_s"], ".1f"),
                _num(r["handover_ms"]) + ("*" if r.get("handover_missing_from_history") else ""),
                _num(r["handover_routes"]),
                f"{r['during']['requests']:,}",
                str(r["during"]["failed"]),
                _pair(base.get("p50"), roll.get("p50")),
                _pair(base.get("p99"), roll.get("p99")),
                _num(r["after"]["v2_share"], ".1%"),
                f"{r['loadavg_1min_before']:.1f}",
            ]
        )
    return out


def code_under_test() -> dict[str, Any]:
    """Where the nodes' tierfaas comes from (``PYTHONPATH`` can point at another checkout),
    and the uncommitted changes to it when it is this working tree."""
    source = Path(procs.__file__).resolve().parent.parent
    dirty: list[str] | None = None
    if source == c.REPO_ROOT / "src":
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=c.REPO_ROOT, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        dirty = [line[3:] for line in done.stdout.splitlines()]
    return {"source": str(source), "uncommitted_in_src": dirty}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 nodes, 1 run, < 60 s")
    parser.add_argument("--nodes", help="comma-separated cluster sizes (default 3,5,10)")
    parser.add_argument("--repetitions", type=int, help="runs per size (default 3)")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    args = parser.parse_args(argv)
    settings = settings_for(args.quick)
    if args.nodes:
        settings = Settings(**{**asdict(settings), "sizes": tuple(
            int(n) for n in args.nodes.split(","))})  # fmt: skip
    if args.repetitions:
        settings = Settings(**{**asdict(settings), "repetitions": args.repetitions})
    code = code_under_test()
    commit = c.git_commit()  # now: others may commit while this runs
    began_at = c.now_iso()
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tierfaas-rollout-bench-"))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runs = runner.run(measure(settings, work))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: the cluster of the current run was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    summary = summarize(runs, settings.sizes)
    machine = c.machine_info()
    data = {
        "benchmark": "rollout",
        "started": began_at,
        "commit": commit,
        "machine": machine,
        "settings": asdict(settings),
        "code": code,
        "elapsed_s": elapsed,
        "summary": summary,
        "runs": runs,
    }
    path = c.write_results("rollout" if not args.quick else "rollout-quick", data)
    c.print_table(f"each run ({settings.mode} mode)", RUN_COLUMNS, run_rows(runs))
    title = (
        f"rollout 1.0.0 → 2.0.0 under {settings.rate:g} req/s of hello through the front door "
        f"({settings.connections} keep-alive connections), medians of {settings.repetitions} "
        f"run(s), failed summed; {machine['nproc']} cores, {elapsed:.0f} s"
    )
    c.print_table(title, COLUMNS, rows(summary))
    if any(r.get("handover_missing_from_history") for r in runs):
        print("* the history entry had no handover; the figure is the one rollout.json showed")
    for run in runs:
        for failed in run.get("failed_starts", []):
            print(f"failed start before {run['label']}: {describe(failed)}")
    for run in runs:
        for failure in run.get("failures", []):
            print(f"failed: {run['label']}: {failure}")
        if run.get("logs"):
            print(f"logs of {run['label']}: {run['logs']}")
    if args.markdown:
        print()
        print(c.markdown_table(RUN_COLUMNS, run_rows(runs)))
        print()
        print(c.markdown_table(COLUMNS, rows(summary)))
    print(f"tierfaas under test: {code['source']}")
    if code["uncommitted_in_src"]:
        print(f"note: uncommitted changes in src/: {', '.join(code['uncommitted_in_src'])}")
    print(f"results: {path}")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
