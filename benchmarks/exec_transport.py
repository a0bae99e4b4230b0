"""What the wire to an http exec function costs per call: TCP loopback against a Unix socket.

    .venv/bin/python benchmarks/exec_transport.py            # 6 rounds of 2 s, ~40 s
    .venv/bin/python benchmarks/exec_transport.py --quick    # 4 rounds of 1 s, ~15 s

The node's side of an http exec call without the rest of the node: one uvloop process holds
64 kept-alive connections (``runtime/exec_http.HttpConnection``, as ``HttpInstance`` does) to
the benchmark fixture's hello.js, each sending the request the node would send for the
runtime benchmark's ``POST /function/hello-node`` (``encode_request``) again as soon as the
answer is whole. Two hello.js processes: one on ``127.0.0.1:$PORT`` (``listen = "port"``),
one on ``$SOCKET_PATH`` (``listen = "unix"``); rounds alternate which goes first. Reported:
calls/s, this process's CPU per call (its event loop, the system calls of both directions,
parsing: what the node spends per call on the instance's side) and hello.js's CPU per call
(what the function spends, which on two shared cores is taken from the node too). CPU per
call is the figure to compare: the machine's load moves it far less than calls/s. No target:
this explains the exec http row of benchmarks/runtime.py. Nothing is pinned; every process
started here is stopped on exit. Results: a table and benchmarks/results/exec_transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

import _common as c
from tierfaas.procs import free_port
from tierfaas.runtime.exec_http import HttpConnection, connect, encode_request
from tierfaas.runtime.instance import Result

HELLO_JS = c.BENCHMARKS_DIR / "fixtures" / "exec" / "hello.js"
CONNECTIONS = 64
BODY = b"world"
# What the node sends for the runtime benchmark's wrk request (its headers but the dropped ones).
CONTEXT: dict[str, Any] = {
    "method": "POST",
    "path": "/",
    "query": "",
    "headers": {"content-type": "text/plain"},
    "request_id": "0123456789abcdef",
}


class Loop:
    """The connections' owner: each whole answer sends the connection's request again."""

    def __init__(self) -> None:
        self.answers = 0
        self.stopping = False
        self.requests: dict[HttpConnection, bytes] = {}

    def answered(self, connection: HttpConnection, number: int, result: Result) -> None:
        if result.status != 200:
            raise RuntimeError(f"hello.js answered {result.status}: {result.body[:200]!r}")
        self.answers += 1
        if not self.stopping:
            connection.send(number + 1, self.requests[connection], True)

    def refused(
        self, connection: HttpConnection, number: int, too_large: bool, detail: str
    ) -> None:
        raise RuntimeError(f"an answer was refused: {detail}")

    def lost(self, connection: HttpConnection, number: int, exc: Exception | None) -> None:
        if number and not self.stopping:
            raise RuntimeError(f"hello.js closed a connection mid-call: {exc}")


async def drive(
    address: int | str, host_line: str, seconds: float, pid: int
) -> tuple[int, float, float, float]:
    """Calls on ``CONNECTIONS`` connections to ``address`` for ``seconds`` after a warm-up;
    returns the calls, this thread's CPU seconds, the CPU seconds of process ``pid`` (the
    function) and the wall seconds of the measured part."""
    loop = Loop()
    request = encode_request(host_line, BODY, CONTEXT)
    connections = [await connect(loop, address, 1 << 20) for _ in range(CONNECTIONS)]
    for connection in connections:
        loop.requests[connection] = request
        connection.send(1, request, False)
    await asyncio.sleep(0.3)
    answers, cpu, wall = loop.answers, time.thread_time(), time.perf_counter()
    function = c.cpu_seconds([pid])
    await asyncio.sleep(seconds)
    answers, cpu = loop.answers - answers, time.thread_time() - cpu
    function = c.cpu_seconds([pid]) - function
    wall = time.perf_counter() - wall
    loop.stopping = True
    await asyncio.sleep(0.1)
    for connection in connections:
        connection.close()
    return answers, cpu, function, wall


def load_average() -> str:
    with open("/proc/loadavg") as file:
        return file.read().split()[0]


@dataclass
class Side:
    name: str
    address: int | str
    host_line: str
    managed: c.Managed
    calls_per_s: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)
    function_us: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "calls_per_s_median": c.median(self.calls_per_s),
            "client_cpu_us_per_call_median": c.median(self.client_us),
            "function_cpu_us_per_call_median": c.median(self.function_us),
            "calls_per_s_rounds": self.calls_per_s,
            "client_cpu_us_per_call_rounds": self.client_us,
            "function_cpu_us_per_call_rounds": self.function_us,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 1 s")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: this benchmark runs hello.js")
    rounds, seconds = (4, 1.0) if args.quick else (6, 2.0)
    folder = tempfile.mkdtemp(prefix="tierfaas-transport-")
    path, port = os.path.join(folder, "http.sock"), free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "SOCKET_PATH")}
    loads: list[str] = []
    try:
        with c.Processes() as processes:
            tcp = Side(
                "tcp",
                port,
                f"host: 127.0.0.1:{port}\r\n",
                processes.start("tcp", ["node", str(HELLO_JS)], {**env, "PORT": str(port)}),
            )
            unix = Side(
                "unix",
                path,
                "host: localhost\r\n",
                processes.start("unix", ["node", str(HELLO_JS)], {**env, "SOCKET_PATH": path}),
            )
            c.wait_http("127.0.0.1", port, "/", timeout_s=30, process=tcp.managed)
            deadline = time.monotonic() + 30
            while not os.path.exists(path):
                if time.monotonic() > deadline or unix.managed.process.poll() is not None:
                    raise RuntimeError(f"hello.js did not listen on {path}")
                time.sleep(0.01)
            for number in range(rounds):
                for side in (tcp, unix) if number % 2 == 0 else (unix, tcp):
                    calls, cpu, used, wall = uvloop.run(
                        drive(side.address, side.host_line, seconds, side.managed.pid)
                    )
                    side.calls_per_s.append(calls / wall)
                    side.client_us.append(cpu / calls * 1e6)
                    side.function_us.append(used / calls * 1e6)
                    loads.append(load_average())
                    print(
                        f"  round {number + 1}/{rounds} {side.name:4}: {calls / wall:8.0f} "
                        f"calls/s, {side.client_us[-1]:5.1f} µs CPU per call here, "
                        f"{side.function_us[-1]:5.1f} µs in hello.js",
                        flush=True,
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results = {
        "benchmark": "exec_transport",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "rounds": rounds,
        "round_s": seconds,
        "connections": CONNECTIONS,
        "load_average_1m_per_round": loads,
        "tcp": tcp.summary(),
        "unix": unix.summary(),
    }
    out = c.write_results("exec_transport", results)

    def cells(side: Side) -> list[str]:
        return [
            f"{c.median(side.calls_per_s):,.0f}",
            f"{c.median(side.client_us):.1f} µs",
            f"{c.median(side.function_us):.1f} µs",
        ]

    rows = [
        ['TCP loopback (listen = "port")', *cells(tcp)],
        ['Unix socket (listen = "unix")', *cells(unix)],
        [
            "unix / tcp",
            f"{c.ratio(c.median(unix.calls_per_s), c.median(tcp.calls_per_s)):.2f}",
            f"{c.ratio(c.median(unix.client_us), c.median(tcp.client_us)):.2f}",
            f"{c.ratio(c.median(unix.function_us), c.median(tcp.function_us)):.2f}",
        ],
    ]
    title = (
        f"exec http transport, {CONNECTIONS} connections, median of {rounds} rounds of "
        f"{seconds:g} s — {results['date']}, load average {min(loads)}-{max(loads)}"
    )
    columns = ["wire", "calls/s", "CPU per call, the node's side", "CPU per call, hello.js"]
    c.show_table(title, columns, rows, markdown=args.markdown)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
