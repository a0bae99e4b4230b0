"""The front doors against the nodes hit directly, in one run: ``hello`` under wrk.

    .venv/bin/python benchmarks/frontdoor.py            # full: 5 rounds of 5 s, ~2 min
    .venv/bin/python benchmarks/frontdoor.py --quick    # 3 rounds of 3 s, < 1 min

One cluster, started the way a user does (``tierfaas up --nodes N``, built-in front door on
127.0.0.1), and Debian's nginx in front of the same nodes with the config ``tierfaas up --lb
nginx`` writes (``lbconfig.nginx_config`` with ``up.nginx_backends``: each node's Unix
socket, as nginx runs on the nodes' machine). Five targets, in rounds that rotate their
order, each a wrk run of ``POST /function/hello`` (5-byte body):

- direct: wrk with one thread per node, each thread's connections to its own node (a Lua
  ``setup`` sets ``thread.addr``): the same spread of connections over the nodes as an L4
  round-robin gives, without anything in between;
- builtin: the same wrk (same threads and connections) through the built-in front door;
- nginx: the same through nginx in stream mode (L4) with the nodes' Unix sockets as
  upstreams, what ``tierfaas up --lb nginx`` runs;
- nginx-tcp: the same with the nodes' TCP addresses as upstreams, what ``tierfaas lb-config
  nginx`` prints for nodes on other machines (no target: it shows what the sockets save);
- nginx-http: nginx in http mode (L7), Unix-socket upstreams.

The nginx targets are skipped, with a note, when /usr/sbin/nginx (or, for the L4 ones, its
stream module) is missing. The report quotes medians over the rounds; targets: builtin >= 50%
of direct's req/s, nginx and nginx-http >= 80%. wrk's connections are long-lived, so an L4
front door spreads *connections*, not requests: with 64 connections over N nodes that is an
even spread either way. The CPU seconds the front door process used per request (the
supervisor's own process; nginx's master and workers) are reported too. Nothing is pinned:
wrk, the front door and the nodes share the machine's cores; compare within one run. Results:
a table and benchmarks/results/frontdoor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
from tierfaas.deploy.local import LocalProvider
from tierfaas.procs import free_port
from tierfaas.up.frontdoor import parse_hostport

NGINX = "/usr/sbin/nginx"
TARGETS = {"builtin": 0.50, "nginx": 0.80, "nginx-http": 0.80}
COLUMNS = ["target", "req/s (median)", "range", "p50 ms", "p99 ms", "vs direct", "goal",
           "LB CPU µs/req", "nodes CPU µs/req", "idle", "errors"]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int
    round_s: float
    warmup_s: float


def lua(addresses: list[tuple[str, int]]) -> str:
    """A wrk script POSTing 'world', thread i connecting to ``addresses[i % len]``."""
    table = ", ".join(f'{{"{h}", "{p}"}}' for h, p in addresses)
    return (
        c.post_lua(b"world")
        + f"local targets = {{{table}}}\n"
        + "local count = 0\n"
        + "function setup(thread)\n"
        + "  local t = targets[(count % #targets) + 1]\n"
        + "  thread.addr = wrk.lookup(t[1], t[2])[1]\n"
        + "  count = count + 1\n"
        + "end\n"
    )


def start_cluster(procs: c.Processes, nodes: int, state_dir: Path) -> tuple[dict[str, Any], int]:
    port = free_port()
    argv = [
        sys.executable, "-m", "tierfaas.cli", "up", "--nodes", str(nodes),
        "--release", str(c.REPO_ROOT / "examples" / "demo"), "--port", str(port),
        "--state-dir", str(state_dir), "--first-host", "127.0.2.10", "--log-level", "warning",
    ]  # fmt: skip
    supervisor = procs.start("up", argv)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if supervisor.process.poll() is not None:
            raise RuntimeError(f"tierfaas up exited:\n{supervisor.log_tail()}")
        try:
            state: dict[str, Any] = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("status") == "ready":
            return state, port
        time.sleep(0.1)
    raise RuntimeError(f"the cluster was not ready in 60 s:\n{supervisor.log_tail()}")


def start_nginx(
    procs: c.Processes, nodes: list[str], prefix: Path, mode: str
) -> tuple[c.Managed, int]:
    from tierfaas.up.nginx_config import nginx_config

    port = free_port()
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    user = "root" if os.geteuid() == 0 else None
    conf.write_text(
        nginx_config(
            nodes,
            listen=f"127.0.0.1:{port}",
            prefix=prefix,
            user=user,
            mode=mode,  # type: ignore[arg-type]
        )
    )
    argv = [NGINX, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    managed = procs.start(f"nginx-{mode}", argv)
    c.wait_http("127.0.0.1", port, "/healthz", 10, managed)
    return managed, port


def _idle_seconds() -> float:
    """Idle CPU seconds of the whole machine so far (/proc/stat: idle + iowait)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def measure(settings: Settings, nodes: int) -> dict[str, Any]:
    with c.Processes(grace_s=40.0) as procs:
        state, door_port = start_cluster(procs, nodes, procs.log_dir / "state")
        addresses = [parse_hostport(n["http"]) for n in state["nodes"]]
        threads = len(addresses)
        cpu_pids: dict[str, list[int]] = {"direct": [], "builtin": [state["supervisor"]["pid"]]}
        targets: dict[str, list[tuple[str, int]]] = {
            "direct": addresses,
            "builtin": [("127.0.0.1", door_port)],
        }
        notes = []
        records = LocalProvider(procs.log_dir / "state" / "provider").records()
        if os.access(NGINX, os.X_OK):
            from tierfaas.up.nginx import nginx_backends
            from tierfaas.up.nginx_config import STREAM_MODULE

            # the upstreams `tierfaas up --lb nginx` writes: each node's Unix socket
            https = nginx_backends(records)
            if not all(b.startswith("unix:") for b in https):
                notes.append("some nodes have no Unix socket (state path too long): TCP to them")
            tcp = [r.http for r in records if r.phase == "running"]
            # nginx-tcp: the same L4 nginx with TCP upstreams, as `tierfaas lb-config nginx`
            # prints for nodes on other machines; it shows what the Unix sockets save
            modes = {"nginx": ("stream", https), "nginx-tcp": ("stream", tcp)}
            modes["nginx-http"] = ("http", https)
            if not os.path.exists(STREAM_MODULE):
                del modes["nginx"], modes["nginx-tcp"]
                notes.append(f"nginx L4 skipped: {STREAM_MODULE} missing (libnginx-mod-stream)")
            for name, (mode, upstreams) in modes.items():
                nginx, nginx_port = start_nginx(procs, upstreams, procs.log_dir / name, mode)
                targets[name] = [("127.0.0.1", nginx_port)]
                cpu_pids[name] = c.process_tree(nginx.pid)
        else:
            notes.append(f"nginx skipped: {NGINX} is not installed")

        node_pids = [pid for r in records for pid in c.process_tree(r.pid)]

        def run(name: str, seconds: float) -> dict[str, Any]:
            host, port = targets[name][0]
            pids = cpu_pids[name]
            cpu_before = c.cpu_seconds(pids)
            nodes_before = c.cpu_seconds(node_pids)
            idle_before = _idle_seconds()
            result = c.run_wrk(
                f"http://{host}:{port}/function/hello",
                duration_s=seconds,
                connections=64,
                threads=threads,
                lua=lua(targets[name] * threads if name != "direct" else targets[name]),
            )
            cpu = c.cpu_seconds(pids) - cpu_before
            nodes_cpu = c.cpu_seconds(node_pids) - nodes_before
            idle = _idle_seconds() - idle_before
            return {
                **result.as_dict(),
                "lb_cpu_us_per_req": cpu / result.requests * 1e6 if pids else None,
                "nodes_cpu_us_per_req": nodes_cpu / result.requests * 1e6,
                "idle_share": idle / (seconds * (os.cpu_count() or 1)),
            }

        for name in targets:  # warm every node's instances and every path
            run(name, settings.warmup_s)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        names = list(targets)
        for index in range(settings.rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                rounds[name].append(run(name, settings.round_s))
                print(
                    f"round {index + 1}/{settings.rounds} {name:8s} "
                    f"{rounds[name][-1]['requests_per_s']:9.0f} req/s",
                    file=sys.stderr,
                )
    return {
        "nodes": nodes,
        "threads": threads,
        "connections": 64 // threads * threads,
        "rounds": rounds,
        "notes": notes,
    }


def summarize(data: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
    rounds = data["rounds"]
    direct = c.median([r["requests_per_s"] for r in rounds["direct"]])
    summary: dict[str, Any] = {}
    rows = []
    for name, runs in rounds.items():
        rps = [r["requests_per_s"] for r in runs]
        med = c.median(rps)
        share = c.ratio(med, direct)
        cpu = [r["lb_cpu_us_per_req"] for r in runs if r["lb_cpu_us_per_req"] is not None]
        goal = TARGETS.get(name)
        summary[name] = {
            "requests_per_s": med,
            "vs_direct": share,
            "target": goal,
            "meets_target": None if goal is None else share >= goal,
            "p50_ms": c.median([r["latency_ms"].get("p50", float("nan")) for r in runs]),
            "p99_ms": c.median([r["latency_ms"].get("p99", float("nan")) for r in runs]),
            "lb_cpu_us_per_req": c.median(cpu) if cpu else None,
            "nodes_cpu_us_per_req": c.median([r["nodes_cpu_us_per_req"] for r in runs]),
            "idle_share": c.median([r["idle_share"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
        }
        s = summary[name]
        rows.append(
            [
                name,
                f"{med:,.0f}",
                f"{min(rps):,.0f}-{max(rps):,.0f}",
                f"{s['p50_ms']:.2f}",
                f"{s['p99_ms']:.2f}",
                f"{share:.0%}",
                "-" if goal is None else f">= {goal:.0%} " + ("ok" if share >= goal else "MISSED"),
                "-" if s["lb_cpu_us_per_req"] is None else f"{s['lb_cpu_us_per_req']:.0f}",
                f"{s['nodes_cpu_us_per_req']:.0f}",
                f"{s['idle_share']:.0%}",
                str(s["errors"]),
            ]
        )
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    c.require_wrk()
    settings = Settings("quick", 3, 3.0, 1.0) if args.quick else Settings("full", 5, 5.0, 2.0)
    if args.rounds:
        settings = Settings(settings.mode, args.rounds, settings.round_s, settings.warmup_s)
    began = c.now_iso()
    data = measure(settings, args.nodes)
    summary, rows = summarize(data)
    results = {
        "benchmark": "frontdoor",
        "started": began,
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "settings": settings.__dict__,
        "summary": summary,
        **data,
    }
    path = c.write_results("frontdoor", results)
    title = (
        f"hello under wrk ({data['connections']} connections, {data['threads']} threads), "
        f"{args.nodes} nodes, {settings.rounds} rounds of {settings.round_s:g} s, medians"
    )
    c.show_table(title, COLUMNS, rows, notes=data["notes"], markdown=args.markdown)
    print(f"results: {path}")
    missed = [n for n, s in summary.items() if s["meets_target"] is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
