"""The node's whole call path in process, paired between source trees: the HTTP front, the
app's checks, the router, the runtime and the pool, on a fake instance that answers at once.

    .venv/bin/python benchmarks/node_path.py before=/tmp/old/src after=src   # 6 x 15 rounds
    .venv/bin/python benchmarks/node_path.py --quick before=/tmp/old/src after=src  # < 15 s

Each ``NAME=SRC`` is a source tree (``git archive REV src | tar -x -C /tmp/old`` makes one of
an older commit), run in a child process of this venv's Python with ``PYTHONPATH=SRC``; runs
alternate between the trees. A run is one ``NodeApp`` (standalone router) over a real
``Runtime`` whose function (``concurrency = 64``) has one warm ``FakeInstance``
(``tierfaas.testing``: no process, the answer resolved at once), and 64 connections of the
node's protocol class on fake transports, each fed the runtime benchmark's POST every loop
pass. Per round, CPU per call (``time.process_time``): everything the node does for a warm
call but the instance's side (its connection, its process) and the system calls. Reported per
tree: the best round and the median, over every run (the minimum is the figure least moved by
the machine's other load; on the shared 2-core VM a round varies by ±30 %). It answers "what
did this change to the layers cost or save", which ``node_cpu.py`` (a real node under wrk)
answers with the sockets and the instance's share in it. Results: a table and
benchmarks/results/node_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REQUEST = b"POST /function/hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 5\r\n\r\nworld"
CONNECTIONS = 64


async def measure(requests: int, rounds: int) -> list[float]:
    """CPU µs per call of each round, in this process (the tree on ``sys.path``)."""
    from http_front import cpu_per_request, fake_connections
    from tierfaas.config import NodeConfig
    from tierfaas.http.app import NodeApp
    from tierfaas.http.metrics import Metrics
    from tierfaas.http.protocol import bounded_protocol
    from tierfaas.testing import FakeClock, FakeSpawner, RuntimeHarness, fake_release

    release = fake_release({"hello": {"concurrency": 64, "max_instances": 1, "memory_mb": 64}})
    clock = FakeClock()
    spawner = FakeSpawner(clock, call_s=lambda body: 0.0)
    async with RuntimeHarness(release, clock=clock, spawner=spawner) as harness:
        first = harness.call("hello", b"")
        await harness.run_for(1.0)
        first.result()  # the instance is warm
        config = NodeConfig(release_dir=release.root)
        app = NodeApp(harness.runtime, config, Metrics(), "n1")
        protocol_class = bounded_protocol(config, lambda reason: None, app.serve_call)
        connections = fake_connections(app, protocol_class, CONNECTIONS)
        return await cpu_per_request(connections, REQUEST, requests, rounds)


def child(requests: int, rounds: int) -> int:
    import uvloop

    print(json.dumps(uvloop.run(measure(requests, rounds))))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="NAME=SRC: a source tree to measure")
    parser.add_argument("--runs", type=int, default=6, help="runs per tree, alternating")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per run")
    parser.add_argument("--requests", type=int, default=6_400, help="calls per round")
    parser.add_argument("--quick", action="store_true", help="2 runs of 8 rounds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.requests, args.rounds)
    if not args.trees:
        parser.error("name at least one tree: NAME=SRC")
    runs, rounds = (2, 8) if args.quick else (args.runs, args.rounds)
    trees: dict[str, Path] = {}
    for spec in args.trees:
        name, _, src = spec.partition("=")
        if not src or not (Path(src) / "tierfaas").is_dir():
            parser.error(f"{spec!r}: expected NAME=SRC, SRC holding the tierfaas package")
        trees[name] = Path(src).resolve()

    import _common as c

    per_tree: dict[str, list[float]] = {name: [] for name in trees}
    for number in range(runs):
        for name, src in trees.items():
            argv_ = [
                sys.executable, __file__, "--child", "--rounds", str(rounds),
                "--requests", str(args.requests),
            ]  # fmt: skip
            env = dict(os.environ, PYTHONPATH=str(src))
            done = subprocess.run(
                argv_, check=False, env=env, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{name}: the run failed")
            values = json.loads(done.stdout.strip().splitlines()[-1])
            per_tree[name] += values
            print(
                f"  run {number + 1}/{runs} {name:>10}: best {min(values):6.2f}, "
                f"median {c.median(values):6.2f} µs/call",
                flush=True,
            )
    rows = [
        [name, f"{min(v):.2f}", f"{c.median(v):.2f}", f"{max(v):.2f}"]
        for name, v in per_tree.items()
    ]
    c.print_table(
        "node's call path in process, CPU per warm call (a fake instance, no socket)",
        ["tree", "best µs/call", "median µs/call", "worst µs/call"],
        rows,
    )
    results: dict[str, Any] = {
        "machine": c.machine_info(),
        "when": c.now_iso(),
        "commit": c.git_commit(),
        "runs": runs,
        "rounds": rounds,
        "requests": args.requests,
        "trees": {
            name: {"src": str(trees[name]), "us_per_call": v} for name, v in per_tree.items()
        },
    }
    print(f"results: {c.write_results('node_path', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
