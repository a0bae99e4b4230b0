"""The node's own CPU per warm call, paired between source trees: did a change to the call path
help?

    .venv/bin/python benchmarks/node_cpu.py before=/tmp/old/src after=src          # 6 x 2 s
    .venv/bin/python benchmarks/node_cpu.py --rounds 4 --secs 1 after=src         # one tree
    .venv/bin/python benchmarks/node_cpu.py --only hello-node before=... after=src  # one function
    .venv/bin/python benchmarks/node_cpu.py py=src:interpreted native=src  # compiled or not

Each ``NAME=SRC`` is a source tree (``git archive REV | tar -x -C /tmp/old`` makes one of an
older commit) run by this venv's Python with ``PYTHONPATH=SRC``; its call path is compiled
(``tierfaas.native``) when the venv's build matches its sources, and never with
``:interpreted``. Per tree, three nodes: two with the exec fixture (``hello-node``: hello.js,
http on a Unix socket, one call per connection; ``hello-node-pipelined``: the same with
``pipeline = 8``) and one with the demo release (``hello``, the Python runtime). Rounds alternate
over every node, each one wrk run (64 connections, the runtime benchmark's POST) measuring from
``/proc/PID/stat`` the CPU of the node's process alone (not its zygote or instances: what the
node's call path costs), and the CPU its garbage collector took (``gc.callbacks`` in
``node_cpu_gc.py``, which starts the node). Compare CPU per call within one round: the
machine's load moves every figure of a round together, and wrk's req/s far more than CPU per
call. ``cat /proc/loadavg`` is printed beside each figure. Every process started here is
stopped on exit. Results: a table and benchmarks/results/node_cpu.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
from tierfaas.procs import free_port

RELEASES = {
    "hello-node": (c.BENCHMARKS_DIR / "fixtures" / "exec", "hello-node"),
    "hello-node-pipelined": (c.BENCHMARKS_DIR / "fixtures" / "exec", "hello-node-pipelined"),
    "hello-py": (c.REPO_ROOT / "examples" / "demo", "hello"),
}
GC_WRAPPER = c.BENCHMARKS_DIR / "node_cpu_gc.py"


@dataclass
class Target:
    tree: str
    release: str
    port: int
    managed: c.Managed
    url: str
    gc_file: Path
    cpu_us: list[float] = field(default_factory=list)
    gc_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)


def gc_seconds(target: Target) -> float:
    """The node's GC CPU seconds so far (the wrapper writes them on SIGUSR1)."""
    os.kill(target.managed.pid, signal.SIGUSR1)
    for _ in range(50):
        time.sleep(0.02)
        try:
            text = target.gc_file.read_text()
        except OSError:
            continue
        stamp, _, seconds = text.partition(" ")
        if stamp and float(stamp) > 0:
            target.gc_file.unlink()
            return float(seconds)
    raise RuntimeError(f"{target.tree} {target.release}: no GC figure from the node")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "trees",
        nargs="+",
        help="NAME=SRC: a source tree to run nodes of; NAME=SRC:interpreted with its compiled "
        "call path off (TIERFAAS_NATIVE=0, tierfaas.native)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--secs", type=float, default=2.0, help="seconds of wrk per node and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--only",
        choices=sorted(RELEASES),
        action="append",
        help="run nodes of this function only (repeat it for several; default: all)",
    )
    args = parser.parse_args(argv)
    c.require_wrk()
    lua = c.post_lua(b"world")
    targets: list[Target] = []
    with c.Processes() as processes, tempfile.TemporaryDirectory(prefix="node-cpu-") as tmp:
        for spec in args.trees:
            tree, _, src = spec.partition("=")
            src, _, mode = src.partition(":")
            if not src or mode not in ("", "interpreted"):
                parser.error(f"{spec!r}: expected NAME=SRC or NAME=SRC:interpreted")
            for release, (release_dir, function) in RELEASES.items():
                if args.only is not None and release not in args.only:
                    continue
                port = free_port(args.host)
                gc_file = Path(tmp) / f"{tree}-{release}.gc"
                argv_ = [
                    sys.executable, str(GC_WRAPPER), str(gc_file), "node",
                    "--release", str(release_dir), "--http", f"{args.host}:{port}",
                    "--log-level", "warning",
                ]  # fmt: skip
                env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
                if mode == "interpreted":
                    env["TIERFAAS_NATIVE"] = "0"
                managed = processes.start(f"{tree}-{release}", argv_, env=env)
                url = f"http://{args.host}:{port}/function/{function}"
                targets.append(Target(tree, release, port, managed, url, gc_file))
        for target in targets:
            c.wait_http(args.host, target.port, "/healthz", timeout_s=60, process=target.managed)
            c.run_wrk(target.url, duration_s=1, connections=args.connections, lua=lua)  # warm
        for number in range(args.rounds):
            for target in targets:
                cpu_before, gc_before = c.cpu_seconds([target.managed.pid]), gc_seconds(target)
                result = c.run_wrk(
                    target.url, duration_s=args.secs, connections=args.connections, lua=lua
                )
                cpu = c.cpu_seconds([target.managed.pid]) - cpu_before
                gc = gc_seconds(target) - gc_before
                calls = max(1, result.requests)
                load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                target.cpu_us.append(cpu / calls * 1e6)
                target.gc_us.append(gc / calls * 1e6)
                target.rps.append(result.requests_per_s)
                target.loads.append(load)
                print(
                    f"  round {number + 1}/{args.rounds} {target.tree:>8} {target.release:10}: "
                    f"{result.requests_per_s:7.0f} req/s, node {target.cpu_us[-1]:6.1f} µs/call "
                    f"(GC {target.gc_us[-1]:5.2f}), load {load}"
                    + (f", {result.errors} errors" if result.errors else ""),
                    flush=True,
                )
    rows = [
        [
            t.tree, t.release, f"{c.median(t.cpu_us):.1f}", f"{c.median(t.gc_us):.2f}",
            f"{c.median(t.rps):.0f}", f"{min(t.cpu_us):.1f}-{max(t.cpu_us):.1f}",
        ]
        for t in targets
    ]  # fmt: skip
    c.print_table(
        "node CPU per warm call (medians over rounds)",
        ["tree", "function", "node µs/call", "GC µs/call", "req/s", "µs/call range"],
        rows,
    )
    results: dict[str, Any] = {
        "machine": c.machine_info(),
        "when": c.now_iso(),
        "commit": c.git_commit(),
        "rounds": args.rounds,
        "secs": args.secs,
        "connections": args.connections,
        "targets": [
            {
                "tree": t.tree, "release": t.release, "cpu_us_per_call": t.cpu_us,
                "gc_us_per_call": t.gc_us, "requests_per_s": t.rps, "loadavg": t.loads,
            }
            for t in targets
        ],
    }  # fmt: skip
    print(f"results: {c.write_results('node_cpu', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
