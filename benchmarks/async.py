"""Asynchronous calls against synchronous calls of the same function, in one run (issue 20).

    .venv/bin/python benchmarks/async.py            # full: 3 rounds of 5 s, ~1 min
    .venv/bin/python benchmarks/async.py --quick    # 2 rounds of 2 s, fewer samples, < 60 s

A 2-node cluster of real node processes on 127.0.3.60-61 (local gossip preset, ``--isolation
process``, each node its own ``--data-dir`` in a temporary directory), serving a release
written here with one function, ``echo`` (a Python handler returning its body; 2 instances x
32 calls per node). Every call goes to the first node, where ``echo`` is warm; the second
node holds the copies. In rounds that alternate their order:

- **sync** (the baseline): ``POST /function/echo`` (5-byte body) under wrk, 64 connections:
  calls/s, p50/p99;
- **async**: ``POST /async-function/echo``, the same wrk: *accepted* calls/s (202s: each
  persisted in the node's call log and copied to the other node before its answer),
  and the accept latency p50/p99 under that load. The accepted calls then run; the next round
  starts once both nodes' queues are empty again (the time that takes is reported: the calls
  that ran per second while draining).

Then, at low load (one call at a time, interleaved): the sync call's latency on one keep-alive
connection, and for an async call the time from sending the POST until a receiver run by this
benchmark (127.0.0.1, allowed by the default callback allow-list) got its callback, plus the
202's own latency.

Targets (issue 20): accepted calls/s with replication >= 50 % of sync calls/s (medians);
end-to-end async latency at low load (p50) <= sync p50 + 10 ms. If the node exposes a setting
for the store's ``synchronous`` (``--store-synchronous``), the async rounds run again
on a second cluster with FULL (informational: NORMAL is the default; the second copy covers a
power loss). Nothing is pinned: wrk, the nodes and this script share the machine's cores;
compare within one run. Results: a table and benchmarks/results/async.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common as c
from tierfaas.procs import free_port

FUNCTION = "echo"
BODY = b"world"
ACCEPT_TARGET = 0.50  # async accepted calls/s / sync calls/s, at least
E2E_EXTRA_MS = 10.0  # async end-to-end p50 - sync p50 at low load, at most
HOSTS = ("127.0.3.60", "127.0.3.61")  # no test uses 127.0.3.x
SYNC_FLAG = "--store-synchronous"
COLUMNS = ["measure", "async", "sync (baseline)", "ratio / difference", "target", "result"]

RELEASE = """
[release]
name = "asyncbench"
version = "1.0.0"

[defaults]
timeout_s = 10
memory_mb = 128
keep_alive_s = 600

[functions.echo]
handler = "fns:echo"
concurrency = 32
max_instances = 2
"""


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int
    round_s: float
    connections: int
    low_load_samples: int  # of each kind
    drain_timeout_s: float


def settings_for(quick: bool, connections: int) -> Settings:
    if quick:
        return Settings("quick", 2, 2.0, connections, 40, 40.0)
    return Settings("full", 3, 5.0, connections, 200, 120.0)


# -- the cluster ----------------------------------------------------------------------------


Node = c.ClusterNode


def node_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tierfaas.cli", "node", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    return done.stdout + done.stderr


def start_cluster(
    procs: c.Processes,
    release: Path,
    data: Path,
    extra: list[str],
    label: str,
    profile: Path | None = None,
) -> list[Node]:
    gossip = free_port(HOSTS[0])
    seeds = ",".join(f"{h}:{gossip}" for h in HOSTS)
    nodes = []
    for host in HOSTS:
        port = free_port(host)
        runner = ["-m", "tierfaas.cli"]
        if profile is not None:  # cProfile around the node: see profiled_node.py
            runner = [str(Path(__file__).with_name("profiled_node.py")), str(profile / host)]
        argv = [
            sys.executable, *runner, "node",
            "--release", str(release), "--http", f"{host}:{port}",
            "--gossip", f"{host}:{gossip}", "--rpc", f"{host}:{gossip + 1}", "--join", seeds,
            "--gossip-preset", "local", "--isolation", "process", "--log-level", "warning",
            "--data-dir", str(data / label / host), "--async-queue-max", "1000000",
            *extra,
        ]  # fmt: skip
        nodes.append(Node(host, port, procs.start(f"{label}-{host}", argv)))
        time.sleep(0.05)  # the first is the oldest: the master
    for node in nodes:
        c.wait_http(node.host, node.port, "/readyz", 60, node.managed)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = get_json(nodes[0], "/v1/cluster")
        if len(view["members"]) == len(nodes):
            return nodes
        time.sleep(0.1)
    raise RuntimeError(f"the nodes did not form a cluster:\n{nodes[0].managed.log_tail()}")


def get_json(node: Node, path: str) -> Any:
    with urllib.request.urlopen(f"{node.url}{path}", timeout=5) as response:
        return json.loads(response.read())


def unfinished(nodes: list[Node]) -> int:
    """Calls queued or running over the nodes (``GET /v1/calls?state=...``, at most 1 each)."""
    found = 0
    for node in nodes:
        for state in ("queued", "running"):
            data = get_json(node, f"/v1/calls?state={state}&limit=1")
            records = data if isinstance(data, list) else data.get("calls", [])
            found += len(records)
    return found


def drain(nodes: list[Node], timeout_s: float) -> float:
    """Waits until no call is queued or running; returns the seconds it took."""
    began = time.perf_counter()
    while unfinished(nodes) > 0:
        if time.perf_counter() - began > timeout_s:
            raise RuntimeError(f"the async queues did not drain in {timeout_s:g} s")
        time.sleep(0.05)
    return time.perf_counter() - began


# -- the callback receiver ------------------------------------------------------------------


class Receiver:
    """Notes when each call's callback arrived (time.perf_counter()) and answers 200."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.events: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                now = time.perf_counter()
                self.rfile.read(int(self.headers.get("content-length") or 0))
                call_id = self.headers.get("x-call-id") or ""
                with receiver.lock:
                    receiver.arrived.setdefault(call_id, now)
                    event = receiver.events.setdefault(call_id, threading.Event())
                event.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port("127.0.0.1")
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/done"

    def wait(self, call_id: str, timeout_s: float) -> float:
        with self.lock:
            event = self.events.setdefault(call_id, threading.Event())
        if not event.wait(timeout_s):
            raise RuntimeError(f"no callback for {call_id} in {timeout_s:g} s")
        return self.arrived[call_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- measures ---------------------------------------------------------------------------------


@dataclass
class Rounds:
    sync: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)


def nodes_cpu(nodes: list[Node]) -> float:
    """CPU seconds so far of the node processes and everything below them (instances)."""
    return sum(c.tree_cpu_seconds(node.managed.pid) for node in nodes)


def loop_cpu(node: Node) -> float:
    """CPU seconds so far of the node's main thread, its event loop: the one core that
    bounds what one node serves (the other threads and the instances may use the other)."""
    pid = node.managed.pid
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/task/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / tick


def accept_round(nodes: list[Node], settings: Settings) -> dict[str, Any]:
    cpu_before = nodes_cpu(nodes)
    loop_before = loop_cpu(nodes[0])
    holder_before = loop_cpu(nodes[1])
    result = c.run_wrk(
        f"{nodes[0].url}/async-function/{FUNCTION}",
        duration_s=settings.round_s,
        connections=settings.connections,
        lua=c.post_lua(BODY),
    )
    accepted = result.requests - result.non_2xx
    drain_s = drain(nodes, settings.drain_timeout_s)
    cpu = nodes_cpu(nodes) - cpu_before
    loop = loop_cpu(nodes[0]) - loop_before
    holder = loop_cpu(nodes[1]) - holder_before
    return {
        **result.as_dict(),
        "nodes_cpu_us_per_call": cpu / max(1, accepted) * 1e6,
        "origin_loop_cpu_us_per_call": loop / max(1, accepted) * 1e6,
        "holder_loop_cpu_us_per_call": holder / max(1, accepted) * 1e6,
        "accepted": accepted,
        "accepted_per_s": accepted / result.duration_s,
        "drain_s": drain_s,
        "ran_per_s": accepted / (result.duration_s + drain_s),
    }


def sync_round(nodes: list[Node], settings: Settings) -> dict[str, Any]:
    cpu_before = nodes_cpu(nodes)
    loop_before = loop_cpu(nodes[0])
    result = c.run_wrk(
        f"{nodes[0].url}/function/{FUNCTION}",
        duration_s=settings.round_s,
        connections=settings.connections,
        lua=c.post_lua(BODY),
    )
    cpu = nodes_cpu(nodes) - cpu_before
    loop = loop_cpu(nodes[0]) - loop_before
    calls = max(1, result.requests)
    return {**result.as_dict(), "nodes_cpu_us_per_call": cpu / calls * 1e6,
            "origin_loop_cpu_us_per_call": loop / calls * 1e6}  # fmt: skip


def throughput(nodes: list[Node], settings: Settings, label: str, sync: bool = True) -> Rounds:
    rounds = Rounds()
    for index in range(settings.rounds):
        kinds = ["sync", "async"] if sync else ["async"]
        if index % 2:
            kinds.reverse()
        for kind in kinds:
            if kind == "sync":
                rounds.sync.append(sync_round(nodes, settings))
                figure = f"{rounds.sync[-1]['requests_per_s']:8.0f} calls/s"
            else:
                rounds.accepted.append(accept_round(nodes, settings))
                last = rounds.accepted[-1]
                figure = (
                    f"{last['accepted_per_s']:8.0f} accepted/s, drained in {last['drain_s']:.1f} s"
                )
            print(f"  {label} round {index + 1}/{settings.rounds} {kind:5}: {figure}", flush=True)
    return rounds


def low_load(
    nodes: list[Node], settings: Settings, receiver: Receiver | None
) -> dict[str, list[float]]:
    """Interleaved single calls: sync latency, accept latency, and accept -> callback
    received (``receiver``), or with no receiver accept -> ``GET /v1/calls/{id}`` first
    answering succeeded (polled back to back on a second connection)."""
    node = nodes[0]
    sync_request = c.build_request("POST", node.host, node.port, f"/function/{FUNCTION}", BODY)
    headers = [("X-Callback-Url", receiver.url)] if receiver is not None else []
    async_request = c.build_request(
        "POST", node.host, node.port, f"/async-function/{FUNCTION}", BODY, headers
    )
    out: dict[str, list[float]] = {"sync": [], "accept": [], "end_to_end": []}
    with (
        c.KeepAliveClient(node.host, node.port) as client,
        c.KeepAliveClient(node.host, node.port) as poller,
    ):
        for _ in range(settings.low_load_samples):
            began = time.perf_counter()
            status, _ = client.request(sync_request)
            out["sync"].append(time.perf_counter() - began)
            if status != 200:
                raise RuntimeError(f"sync call answered {status}")
            began = time.perf_counter()
            status, body = client.request(async_request)
            out["accept"].append(time.perf_counter() - began)
            if status != 202:
                raise RuntimeError(f"async call answered {status}: {body[:200]!r}")
            call_id = json.loads(body)["call_id"]
            if receiver is not None:
                arrived = receiver.wait(call_id, 30)
            else:
                arrived = poll_succeeded(poller, node, call_id, 30)
            out["end_to_end"].append(arrived - began)
            time.sleep(0.01)  # low load: the previous call's outcome and copy are done
    return out


def poll_succeeded(poller: c.KeepAliveClient, node: Node, call_id: str, timeout_s: float) -> float:
    """When ``GET /v1/calls/{id}`` first answered succeeded (time.perf_counter())."""
    request = c.build_request("GET", node.host, node.port, f"/v1/calls/{call_id}")
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        status, body = poller.request(request)
        if status == 200 and json.loads(body)["state"] == "succeeded":
            return time.perf_counter()
    raise RuntimeError(f"{call_id} not succeeded in {timeout_s:g} s")


def callbacks_work(node: Node, receiver: Receiver) -> bool:
    """Whether the node takes a callback URL on this machine (400 bad_callback: it does not
    send callbacks, or its allow-list refuses loopback)."""
    request = urllib.request.Request(
        f"{node.url}/async-function/{FUNCTION}",
        data=BODY,
        method="POST",
        headers={"X-Callback-Url": receiver.url},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            call_id = json.loads(response.read())["call_id"]
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            return False
        raise
    receiver.wait(call_id, 30)
    return True


def measure(settings: Settings) -> dict[str, Any]:
    help_text = node_help()
    has_sync_flag = SYNC_FLAG in help_text
    notes = []
    with c.Processes(grace_s=20.0) as procs, tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "rel"
        release.mkdir()
        (release / "tierfaas.toml").write_text(RELEASE)
        (release / "fns.py").write_text("def echo(body):\n    return body\n")
        nodes = start_cluster(procs, release, Path(tmp), [], "normal")
        # Warm: instances, connections, the store's file and the peer's copy channel.
        c.run_wrk(f"{nodes[0].url}/function/{FUNCTION}", duration_s=1, lua=c.post_lua(BODY))
        c.run_wrk(f"{nodes[0].url}/async-function/{FUNCTION}", duration_s=1, lua=c.post_lua(BODY))
        drain(nodes, settings.drain_timeout_s)
        print(f"throughput: {settings.rounds} rounds of {settings.round_s:g} s", flush=True)
        normal = throughput(nodes, settings, "NORMAL")
        print(f"low load: {settings.low_load_samples} calls of each kind", flush=True)
        receiver = Receiver()
        try:
            used: Receiver | None = receiver
            if not callbacks_work(nodes[0], receiver):
                used = None
                notes.append(
                    "the node refused the callback URL (400 bad_callback): end-to-end is "
                    "measured to the first GET /v1/calls/{id} answering succeeded instead"
                )
            low_load(nodes, settings, used)  # warm the path
            latency = low_load(nodes, settings, used)
        finally:
            receiver.close()
        for node in nodes:
            procs.stop(node.managed)
        full: Rounds | None = None
        if has_sync_flag:
            nodes = start_cluster(procs, release, Path(tmp), [SYNC_FLAG, "FULL"], "full")
            c.run_wrk(
                f"{nodes[0].url}/async-function/{FUNCTION}", duration_s=1, lua=c.post_lua(BODY)
            )
            drain(nodes, settings.drain_timeout_s)
            full = throughput(nodes, settings, "FULL", sync=False)
        else:
            notes.append(
                f"the node has no {SYNC_FLAG} setting: FULL vs NORMAL is measured on the store "
                "alone by benchmarks/call_store.py"
            )
    return {"normal": asdict(normal), "full": asdict(full) if full else None,
            "low_load_s": latency, "end_to_end_until": "callback" if used else "poll",
            "notes": notes}  # fmt: skip


def profile(settings: Settings, folder: Path, top: int, kind: str = "async") -> None:
    """The async rounds alone (or the sync ones), both nodes under cProfile (their event
    loops' threads); then each node's functions with the most own time, and the count of
    calls to divide by."""
    import pstats

    folder.mkdir(parents=True, exist_ok=True)
    with c.Processes(grace_s=20.0) as procs, tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "rel"
        release.mkdir()
        (release / "tierfaas.toml").write_text(RELEASE)
        (release / "fns.py").write_text("def echo(body):\n    return body\n")
        nodes = start_cluster(procs, release, Path(tmp), [], "profile", profile=folder)
        c.run_wrk(f"{nodes[0].url}/async-function/{FUNCTION}", duration_s=1, lua=c.post_lua(BODY))
        drain(nodes, settings.drain_timeout_s)
        for node in nodes:
            os.kill(node.managed.pid, signal.SIGUSR1)
        if kind == "sync":
            rounds = Rounds(sync=[sync_round(nodes, settings) for _ in range(settings.rounds)])
            rounds.accepted = [{**r, "accepted": r["requests"]} for r in rounds.sync]
        else:
            rounds = throughput(nodes, settings, "profiled", sync=False)
        for node in nodes:
            os.kill(node.managed.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not all((folder / h).exists() for h in HOSTS) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the stats written in full
        for node in nodes:
            procs.stop(node.managed)
    accepted = sum(r["accepted"] for r in rounds.accepted)
    cpu = c.median([r["nodes_cpu_us_per_call"] for r in rounds.accepted])
    print(
        f"{accepted} calls accepted (and run) under the profiler, warm-up not counted; "
        f"{cpu:.0f} µs of the two nodes' CPU (all threads, instances) per call"
    )
    for host in HOSTS:
        print(f"\n== {host} ({'origin' if host == HOSTS[0] else 'holder'}): own time, top {top}")
        stats = pstats.Stats(str(folder / host))
        total = sum(tt for _, _, tt, _, _ in stats.stats.values())  # type: ignore[attr-defined]
        print(f"   {total / max(1, accepted) * 1e6:.0f} µs of the loop thread's CPU per call")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


# -- report -----------------------------------------------------------------------------------


def summarize(data: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
    normal = data["normal"]
    sync_rps = c.median([r["requests_per_s"] for r in normal["sync"]])
    accepted_rps = c.median([r["accepted_per_s"] for r in normal["accepted"]])
    share = c.ratio(accepted_rps, sync_rps)
    lat = data["low_load_s"]
    sync_ms = c.summarize(lat["sync"], 1e3)
    accept_ms = c.summarize(lat["accept"], 1e3)
    e2e_ms = c.summarize(lat["end_to_end"], 1e3)
    extra_ms = e2e_ms["p50"] - sync_ms["p50"]
    until = "callback" if data["end_to_end_until"] == "callback" else "GET succeeded"
    accept_p50 = c.median([r["latency_ms"].get("p50", float("nan")) for r in normal["accepted"]])
    accept_p99 = c.median([r["latency_ms"].get("p99", float("nan")) for r in normal["accepted"]])
    sync_p50 = c.median([r["latency_ms"].get("p50", float("nan")) for r in normal["sync"]])
    sync_p99 = c.median([r["latency_ms"].get("p99", float("nan")) for r in normal["sync"]])
    ran_per_s = c.median([r["ran_per_s"] for r in normal["accepted"]])
    async_cpu = c.median([r["nodes_cpu_us_per_call"] for r in normal["accepted"]])
    sync_cpu = c.median([r["nodes_cpu_us_per_call"] for r in normal["sync"]])
    async_loop = c.median([r["origin_loop_cpu_us_per_call"] for r in normal["accepted"]])
    sync_loop = c.median([r["origin_loop_cpu_us_per_call"] for r in normal["sync"]])
    holder_loop = c.median(
        [r.get("holder_loop_cpu_us_per_call", float("nan")) for r in normal["accepted"]]
    )
    accepts_pass = bool(share >= ACCEPT_TARGET)
    e2e_pass = bool(extra_ms <= E2E_EXTRA_MS)
    targets = {
        "accepts_per_s": {"value": share, "limit": ACCEPT_TARGET, "pass": accepts_pass},
        "end_to_end_extra_ms": {"value": extra_ms, "limit": E2E_EXTRA_MS, "pass": e2e_pass},
    }
    verdict = {True: "PASS", False: "FAIL"}
    rows = [
        ["calls/s, 64 connections (median)", f"{accepted_rps:,.0f} accepted",
         f"{sync_rps:,.0f}", f"{share:.0%}", f">= {ACCEPT_TARGET:.0%}",
         verdict[accepts_pass]],
        ["p50 / p99 under that load, ms", f"{accept_p50:.1f} / {accept_p99:.1f} (accept)",
         f"{sync_p50:.1f} / {sync_p99:.1f}", "-", "-", "-"],
        ["async calls run/s while draining", f"{ran_per_s:,.0f}", "-", "-", "-", "-"],
        ["nodes' CPU µs per call (both nodes)", f"{async_cpu:,.0f} (accept, copy, run)",
         f"{sync_cpu:,.0f}", f"{c.ratio(async_cpu, sync_cpu):.1f} x", "-", "-"],
        ["first node's event loop, CPU µs per call", f"{async_loop:,.0f}",
         f"{sync_loop:,.0f}", f"{c.ratio(async_loop, sync_loop):.1f} x", "-", "-"],
        ["second node's (holder's) loop, CPU µs per call", f"{holder_loop:,.0f}", "-", "-",
         "-", "-"],
        ["low load p50 / p99, ms", f"{e2e_ms['p50']:.1f} / {e2e_ms['p99']:.1f} (to {until})",
         f"{sync_ms['p50']:.1f} / {sync_ms['p99']:.1f}", f"{extra_ms:+.1f} ms",
         f"<= +{E2E_EXTRA_MS:g} ms", verdict[e2e_pass]],
        ["low load accept (202) p50 / p99, ms", f"{accept_ms['p50']:.1f} / {accept_ms['p99']:.1f}",
         "-", "-", "-", "-"],
    ]  # fmt: skip
    summary: dict[str, Any] = {
        "sync_calls_per_s": sync_rps,
        "accepted_per_s": accepted_rps,
        "accepted_vs_sync": share,
        "accept_p50_ms_under_load": accept_p50,
        "accept_p99_ms_under_load": accept_p99,
        "sync_p50_ms_under_load": sync_p50,
        "sync_p99_ms_under_load": sync_p99,
        "ran_per_s_while_draining": ran_per_s,
        "nodes_cpu_us_per_call": {"async": async_cpu, "sync": sync_cpu},
        "origin_loop_cpu_us_per_call": {"async": async_loop, "sync": sync_loop},
        "holder_loop_cpu_us_per_call": holder_loop,
        "low_load_ms": {"sync": sync_ms, "accept": accept_ms, "end_to_end": e2e_ms},
        "end_to_end_extra_ms": extra_ms,
        "targets": targets,
    }
    if data["full"]:
        full_rps = c.median([r["accepted_per_s"] for r in data["full"]["accepted"]])
        full_p99 = c.median([r["latency_ms"].get("p99", float("nan"))
                             for r in data["full"]["accepted"]])  # fmt: skip
        summary["full_accepted_per_s"] = full_rps
        rows.append(
            ["accepted/s with synchronous=FULL", f"{full_rps:,.0f} (p99 {full_p99:.1f} ms)",
             f"{accepted_rps:,.0f} (NORMAL)", f"{c.ratio(full_rps, accepted_rps):.0%}", "-", "-"]
        )  # fmt: skip
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s, < 60 s")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the async rounds alone with both nodes under cProfile (stats in DIR) and "
        "print where their CPU went; no table",
    )
    parser.add_argument("--profile-top", type=int, default=40)
    parser.add_argument("--profile-kind", choices=["async", "sync"], default="async")
    args = parser.parse_args(argv)
    c.require_wrk()
    settings = settings_for(args.quick, args.connections)
    if args.profile is not None:
        profile(settings, args.profile, args.profile_top, args.profile_kind)
        return 0
    began = time.perf_counter()
    started = c.now_iso()
    data = measure(settings)
    summary, rows = summarize(data)
    results = {
        "benchmark": "async",
        "date": started,
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "settings": asdict(settings),
        "function": FUNCTION,
        "summary": summary,
        **data,
        "elapsed_s": time.perf_counter() - began,
    }
    path = c.write_results("async", results)
    title = (
        f"async calls vs sync calls of the same function, 2 nodes, {settings.mode} mode, "
        f"{results['elapsed_s']:.0f} s"
    )
    c.show_table(title, COLUMNS, rows, notes=data["notes"], markdown=args.markdown)
    print(f"results: {path}")
    passed = all(t["pass"] for t in summary["targets"].values())
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
