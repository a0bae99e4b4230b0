"""What tracing costs a warm call: the runtime benchmark's warm HTTP rounds, for three nodes
in one run.

    .venv/bin/python benchmarks/tracing.py            # 5 rounds of 3 s
    .venv/bin/python benchmarks/tracing.py --quick    # 3 rounds of 1 s, < 60 s

Three node processes serve examples/demo (default isolation, as benchmarks/runtime.py's
node), each on its own port:

- ``main``: the code of git ref ``--baseline`` (default ``main``), exported to a temporary
  folder and run with it first on PYTHONPATH: the node before tracing existed;
- ``off``: this checkout, no ``--otlp-endpoint`` (tracing off: one check per call);
- ``on``: this checkout with ``--otlp-endpoint`` pointing at a sink in this process (an
  HTTP server that reads each post and answers 200: a collector that costs the node
  nothing), every call sampled (``--trace-sample 1``).

Each round, in an order that rotates from round to round, runs for each node: sequential
``POST /function/hello`` on one keep-alive connection (p50/p99), then wrk at 64 connections
(requests/s, and the node's CPU per request from its process tree's CPU time). Target:
``off`` costs what ``main`` costs, judged by CPU per request (median over rounds, at most
1.10 x main's), which the machines' load moves far less than requests/s or latency (those
swing +-20-30 % from round to round here: compare the paired rounds). ``on`` is reported, not
judged. Results: a table and benchmarks/results/tracing.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common as c
from runtime import Server, latency_loop, node_argv
from tierfaas.procs import free_port

OFF_TARGET = 1.10  # off CPU per request median / main's at most


class Sink:
    """A collector that takes every post: reads the body, answers 200, counts."""

    def __init__(self, host: str) -> None:
        self.posts = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.posts += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def export_ref(ref: str, into: Path) -> str:
    """Writes ``src/`` of git ``ref`` under ``into``; returns its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], capture_output=True, text=True, check=True,
        cwd=c.REPO_ROOT,
    ).stdout.strip()  # fmt: skip
    archive = into / "src.tar"
    subprocess.run(["git", "archive", "-o", str(archive), ref, "src"], check=True, cwd=c.REPO_ROOT)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return commit


def trace_metric(server: Server, outcome: str) -> float:
    with c.KeepAliveClient(server.host, server.port) as client:
        _, body = client.request(c.build_request("GET", server.host, server.port, "/metrics"))
    for line in body.decode().splitlines():
        if line.startswith(f'tierfaas_trace_spans_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s, < 60 s")
    parser.add_argument("--baseline", default="main", help="git ref of the 'main' node")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--release", type=Path, default=c.REPO_ROOT / "examples" / "demo")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    rounds, round_s, requests = (3, 1.0, 300) if args.quick else (5, 3.0, 1000)
    lua = c.post_lua(b"world")
    c.require_wrk()
    host = args.host
    began = time.perf_counter()
    sink = Sink(host)
    with tempfile.TemporaryDirectory(prefix="tierfaas-baseline-") as tmp, c.Processes() as procs:
        baseline = export_ref(args.baseline, Path(tmp))
        release = args.release.resolve()
        env_main = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        ports = {name: free_port(host) for name in ("main", "off", "on")}
        servers = {
            "main": Server(
                "main", host, ports["main"],
                procs.start("main", node_argv(release, host, ports["main"]), env=env_main),
            ),
            "off": Server(
                "off", host, ports["off"],
                procs.start("off", node_argv(release, host, ports["off"])),
            ),
            "on": Server(
                "on", host, ports["on"],
                procs.start(
                    "on",
                    [*node_argv(release, host, ports["on"]), "--otlp-endpoint", sink.url,
                     "--trace-sample", "1"],
                ),
            ),
        }  # fmt: skip
        for server in servers.values():
            c.wait_http(host, server.port, "/healthz", timeout_s=30, process=server.managed)
        for server in servers.values():  # warm: the instance, connections, caches
            latency_loop(server, 200)
            c.run_wrk(server.url, duration_s=1, connections=args.connections, lua=lua)
        order = list(servers)
        latency: dict[str, list[float]] = {n: [] for n in servers}
        p50s: dict[str, list[float]] = {n: [] for n in servers}
        rps: dict[str, list[float]] = {n: [] for n in servers}
        cpu: dict[str, list[float]] = {n: [] for n in servers}
        for number in range(rounds):
            for name in order[number % 3 :] + order[: number % 3]:
                server = servers[name]
                samples = latency_loop(server, requests // rounds)
                latency[name] += samples
                p50s[name].append(c.percentile(samples, 50) * 1e6)
                before = c.tree_cpu_seconds(server.managed.pid)
                result = c.run_wrk(
                    server.url, duration_s=round_s, connections=args.connections, lua=lua
                )
                used = c.tree_cpu_seconds(server.managed.pid) - before
                rps[name].append(result.requests_per_s)
                cpu[name].append(used / max(1, result.requests) * 1e6)
                print(
                    f"  round {number + 1}/{rounds} {name:4}: {result.requests_per_s:7.0f} req/s, "
                    f"p50 {p50s[name][-1]:5.0f} µs at 1 conn",
                    flush=True,
                )
        time.sleep(1.5)  # the last batch of spans is posted
        exported = trace_metric(servers["on"], "exported")
        dropped = trace_metric(servers["on"], "dropped")
        failed = trace_metric(servers["on"], "failed")
        for server in servers.values():
            if server.managed.process.poll() is not None:
                raise RuntimeError(f"{server.name} died:\n{server.managed.log_tail()}")
    sink.close()
    out: dict[str, Any] = {
        "benchmark": "tracing",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "baseline": {"ref": args.baseline, "commit": baseline},
        "machine": c.machine_info(),
        "settings": {"rounds": rounds, "round_s": round_s, "requests": requests,
                     "connections": args.connections},
        "spans": {"exported": exported, "dropped": dropped, "failed": failed,
                  "posts": sink.posts, "bytes": sink.bytes},
    }  # fmt: skip
    for name in servers:
        out[name] = {
            "latency_us_1_conn": c.summarize(latency[name], 1e6),
            "p50_us_rounds": p50s[name],
            "requests_per_s_rounds": rps[name],
            "requests_per_s_median": c.median(rps[name]),
            "cpu_us_per_request_rounds": cpu[name],
            "cpu_us_per_request_median": c.median(cpu[name]),
        }
    paired_off = [c.ratio(o, m) for o, m in zip(rps["off"], rps["main"], strict=True)]
    paired_on = [c.ratio(o, m) for o, m in zip(rps["on"], rps["off"], strict=True)]
    off_ratio = c.ratio(out["off"]["requests_per_s_median"], out["main"]["requests_per_s_median"])
    off_cpu = c.ratio(
        out["off"]["cpu_us_per_request_median"], out["main"]["cpu_us_per_request_median"]
    )
    out["off_vs_main"] = {
        "requests_per_s": off_ratio, "paired_rounds": paired_off, "cpu_per_request": off_cpu,
        "limit": OFF_TARGET, "pass": off_cpu <= OFF_TARGET,
    }  # fmt: skip
    out["on_vs_off"] = {
        "requests_per_s": c.ratio(
            out["on"]["requests_per_s_median"], out["off"]["requests_per_s_median"]
        ),
        "paired_rounds": paired_on,
        "cpu_us_per_request_added": out["on"]["cpu_us_per_request_median"]
        - out["off"]["cpu_us_per_request_median"],
    }
    out["elapsed_s"] = time.perf_counter() - began
    path = c.write_results("tracing", out)
    rows = []
    for name in servers:
        side = out[name]
        rows.append([
            name,
            f"{side['latency_us_1_conn']['p50']:.0f}",
            f"{side['latency_us_1_conn']['p99']:.0f}",
            f"{side['requests_per_s_median']:.0f}",
            f"{side['cpu_us_per_request_median']:.0f}",
        ])  # fmt: skip
    c.print_table(
        f"tracing cost, {rounds} rounds of {round_s:g} s, baseline {args.baseline} ({baseline})",
        ["node", "p50 µs (1 conn)", "p99 µs (1 conn)", "req/s median", "CPU µs/req"],
        rows,
    )
    verdict = "pass" if out["off_vs_main"]["pass"] else "FAIL"
    print(
        f"off / main CPU per request: {off_cpu:.3f} (target <= {OFF_TARGET}: {verdict}); "
        f"req/s {off_ratio:.3f} (paired rounds {', '.join(f'{r:.2f}' for r in paired_off)})\n"
        f"on / off req/s: {out['on_vs_off']['requests_per_s']:.3f} (paired rounds "
        f"{', '.join(f'{r:.2f}' for r in paired_on)}); CPU per request "
        f"+{out['on_vs_off']['cpu_us_per_request_added']:.0f} µs\n"
        f"spans exported {exported:.0f}, dropped {dropped:.0f}, failed {failed:.0f}; "
        f"{sink.posts} posts, {sink.bytes} bytes\nresults: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
