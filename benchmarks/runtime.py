"""The function runtime against its baselines, in one run: cold starts and warm HTTP calls.

    .venv/bin/python benchmarks/runtime.py            # full: ~3.5 min
    .venv/bin/python benchmarks/runtime.py --quick    # < 60 s, fewer samples, 1 s rounds
    .venv/bin/python benchmarks/runtime.py --quick --warm-only   # part 2 alone

1. Cold starts, measured in this process with ``tierfaas.runtime.Runtime`` (one per kind,
   all started before the first sample): the wall time of a cold ``invoke`` of ``hello`` end
   to end (spawn request, fork, sandbox set-up, handler import, READY, the call and its
   answer); the instance is then killed and reaped, so the next invoke is cold again. Kinds,
   sampled in interleaved rounds (one sample of each per round, the order rotating from round
   to round) so that noise hits them alike:

   - ``sandbox``: examples/demo with ``isolation = "sandbox"`` (the default: the zygote in the
     release's namespaces, each instance in namespaces and a cgroup of its own; a cold start
     takes the instance the spawner prepared ahead, settled in its cgroup);
   - ``unprepared``: the same with nothing prepared, as the later starts of a burst: the
     instance is forked and joins its cgroup on the way (informational);
   - ``process``: examples/demo with ``isolation = "process"`` (plain forked processes);
   - ``bwrap``: a fresh interpreter running ``import handlers; handlers.hello(b'x')`` inside
     bubblewrap, in namespaces equivalent to an instance's (user, mount, pid, ipc, uts and
     cgroup; the host's network, as ``network = "host"``) and a read-only root built from the
     same plan as the release's sandbox (``bwrap_argv``). bubblewrap is a benchmark-only tool:
     tierfaas does not use it and CI does not install it; without ``bwrap`` on PATH (or when it
     cannot create namespaces) this row and its target are skipped, with the reason;
   - ``fresh`` and ``bare``: the same fresh interpreter without a sandbox, and
     ``python -c pass`` for scale;
   - ``preloaded`` and ``not_preloaded``: benchmarks/fixtures/preload, whose handler module
     imports ``heavy`` (~100 ms of CPU to import), sandboxed, with the release's
     ``preload = ("heavy",)`` (the zygote imports it once) and without;
   - ``exec_node``: ``hello-node`` of benchmarks/fixtures/exec (``runtime = "exec"``,
     ``node hello.js``, http on a Unix socket), sandboxed: a cold invoke as above, the
     instance ready once its socket accepts; against ``node_fresh``, the same hello.js spawned
     by hand (no sandbox, the environment an instance gets, a TCP port) timed to its first
     answer of ``POST /``, and ``node -e ""`` (``node_bare``) for scale. No target: the issue
     names none;
   - ``exec_c``: ``hello-c`` of the same fixture (hello.c, stdio), for scale.

   Targets: sandboxed p50 <= 1.5 x process isolation's; sandboxed p50 <= 1/4 of the bwrap
   fresh interpreter's; process isolation p50 <= 1/4 of the bare fresh interpreter's;
   preloaded p50 <= 25 ms.
2. Warm ``POST /function/hello`` (5-byte body) on a real node process (default isolation:
   sandboxed), against a bare ASGI echo app on uvicorn (httptools, uvloop) configured the same:
   p50/p99 at one connection (a raw-socket keep-alive client) and requests/s at 64 connections
   under wrk. The same for two exec functions of benchmarks/fixtures/exec on a second node:
   ``hello-node`` (hello.js, http; ``concurrency = 64`` on one instance, as one Node.js
   process serves any number of connections; the node reaches it on a Unix socket, ``listen =
   "unix"``) against the same hello.js started by hand on a TCP port and hit directly by wrk,
   and ``hello-c`` (hello.c, stdio; 2 instances x 32, as the demo's ``hello``)
   against the Python ``hello`` above. Every round runs echo, node, hello.js direct,
   hello-node, hello-c; the report quotes medians (``--warm-only``: this part alone).
   Targets: node req/s >= 50% of echo's; hello-node >= 50% of hello.js direct; hello-c >= 70%
   of the Python hello's.

The exec fixture's C hello is compiled first (gcc -O2, into its gitignored build/); node and
gcc must be installed.

Sandboxing needs root or unprivileged user namespaces, and a writable cgroup hierarchy.
Nothing is pinned: wrk (2 threads), the server and, for the node, its instance processes share
the machine's cores; compare numbers within one run only. Every process started here is
stopped on exit, error, Ctrl-C or SIGTERM. Results: a table on stdout and
benchmarks/results/runtime.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvloop

import _common as c
from tierfaas import errors
from tierfaas.clock import LoopScheduler
from tierfaas.config import NodeConfig
from tierfaas.manifest import Release, check_commands, load_release
from tierfaas.procs import free_port
from tierfaas.runtime import InstanceStopped, Runtime, RuntimeEvent
from tierfaas.runtime.spawner import ZygoteSpawner, release_identities, release_sandbox
from tierfaas.runtime.zygote_client import zygote_environment
from tierfaas.sandbox.filesystem import Bind, Symlink

FUNCTION = "hello"
BODY = b"world"  # 5 bytes, as in the wrk script
EXPECTED = b"Hello, world!\n"
NODE_FUNCTION = "hello-node"  # benchmarks/fixtures/exec: hello.js, exec runtime, http
C_FUNCTION = "hello-c"  # benchmarks/fixtures/exec: hello.c, exec runtime, stdio
NODE_SCRIPT = "hello.js"
C_SOURCE = "hello.c"
C_BINARY = Path("build") / "hello"  # in the fixture, gitignored; the manifest's command
PRELOAD_MODULE = "heavy"  # of benchmarks/fixtures/preload: ~100 ms of CPU to import
COLD_TARGET = 0.25  # cold start p50 / a fresh interpreter's p50 (bwrap'd or not) at most
SANDBOX_TARGET = 1.5  # sandboxed cold start p50 / process isolation's p50 at most
PRELOAD_TARGET_MS = 25.0  # sandboxed cold start p50 with the slow module preloaded at most
THROUGHPUT_TARGET = 0.50  # node req/s / bare echo req/s at least
EXEC_HTTP_TARGET = 0.50  # Node.js hello through a node req/s / the same server hit directly
EXEC_STDIO_TARGET = 0.70  # C stdio hello through a node req/s / Python hello through a node


@dataclass(frozen=True)
class Settings:
    mode: str
    cold_starts: int  # measured cold starts of each kind
    cold_warmup: int  # discarded first cold starts of each kind (page cache, first fork)
    latency_requests: int  # one-connection requests per target, over all rounds
    rounds: int
    round_s: float
    connections: int
    inprocess_s: float  # in-process Runtime.invoke throughput run (informational)


def settings_for(quick: bool, connections: int) -> Settings:
    if quick:
        return Settings("quick", 10, 1, 600, 3, 1.0, connections, 1.0)
    return Settings("full", 30, 2, 2000, 5, 5.0, connections, 3.0)


# -- 1. cold starts (in process) ---------------------------------------------------------------


@dataclass
class ColdKind:
    """One way of starting ``hello`` cold, sampled once per round: ``sample`` returns the
    wall seconds of one start and, for a Runtime, its spawn-to-READY seconds."""

    name: str
    sample: Callable[[int], Awaitable[tuple[float, float | None]]]
    e2e: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cold_ms": c.summarize(self.e2e, 1e3)}
        if self.ready:
            out["spawn_to_ready_ms"] = c.summarize(self.ready, 1e3)
        return out


async def cold_invoke(
    runtime: Runtime, number: int, function: str = FUNCTION
) -> tuple[float, float | None]:
    """One cold invoke; returns (end-to-end seconds, spawn-to-READY seconds), then kills the
    instance and waits until its process has exited, so the next invoke is cold too."""
    pool = runtime.pools[function]
    assert not pool.instances, "a previous instance is still alive"
    began = time.perf_counter()
    result = await runtime.invoke(function, BODY, request_id=f"cold-{number}")
    elapsed = time.perf_counter() - began
    if not result.cold or result.body != EXPECTED:
        raise RuntimeError(f"expected a cold {EXPECTED!r}, got {result!r}")
    (instance,) = pool.instances
    ready_s = instance.start_s
    instance.kill("idle")
    await instance.closed
    assert isinstance(runtime.spawner, ZygoteSpawner)
    await runtime.spawner.zygote.exit_status(instance.pid, wait_s=2.0)
    while pool.instances:  # the pool hears of the close one loop iteration later
        await asyncio.sleep(0.001)
    return elapsed, ready_s


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of running ``argv`` to its end (its output discarded)."""
    began = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - began


def instance_environment(port: int | None = None) -> dict[str, str]:
    """The environment an exec instance's program gets (the sandboxed zygote's, and PORT): a
    program started by hand here would inherit variables that change its start (Node.js reads
    every certificate of NODE_EXTRA_CA_CERTS, ~50 ms, when that is set)."""
    env = zygote_environment(dict(os.environ), sandboxed=True)
    return env if port is None else {**env, "PORT": str(port)}


def node_fresh(release: Release, host: str) -> float:
    """Wall time from spawning ``node hello.js`` (no tierfaas, no sandbox, the environment an
    instance gets) to its first answer of ``POST /`` (the port tried every 0.5 ms until it
    accepts); the process is then killed."""
    port = free_port(host)
    env = instance_environment(port)
    request = c.build_request("POST", host, port, "/", BODY, [("Content-Type", "text/plain")])
    began = time.perf_counter()
    process = subprocess.Popen(
        ["node", NODE_SCRIPT],
        cwd=release.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                client = c.KeepAliveClient(host, port, timeout_s=10.0)
            except ConnectionRefusedError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"node {NODE_SCRIPT} exited with {process.returncode}"
                    ) from None
                time.sleep(0.0005)
                continue
            with client:
                status, body = client.request(request)
            elapsed = time.perf_counter() - began
            if status != 200 or body != EXPECTED:
                raise RuntimeError(f"node {NODE_SCRIPT} answered {status} {body[:200]!r}")
            return elapsed
    finally:
        process.kill()
        process.wait()


def build_exec_fixture(fixture_dir: Path) -> Release:
    """The exec fixture with its C hello compiled (gcc -O2, into the gitignored build/), its
    commands checked; SystemExit when node or gcc is missing."""
    for tool in ("node", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: the exec rows need Node.js and gcc")
    binary = fixture_dir / C_BINARY
    binary.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(binary), str(fixture_dir / C_SOURCE)], check=True
    )
    release = load_release(fixture_dir)
    check_commands(release)
    return release


def handler_code(release: Release, module: str = "handlers") -> str:
    return (
        f"import sys; sys.path.insert(0, {str(release.root)!r}); "
        f"import {module}; {module}.{FUNCTION}(b'x')"
    )


def bwrap_argv(bwrap: str, release: Release, config: NodeConfig, code: str) -> list[str]:
    """``python -c CODE`` in namespaces like a sandboxed instance's: new user (a uid of its
    own, no capability), mount, pid, ipc, uts and cgroup namespaces, the host's network (the
    default ``network = "host"``), and a root holding exactly what the release's sandbox
    binds, read-only (the same plan: ``release_sandbox``), with a fresh /proc, /dev, /tmp and
    /dev/shm, and the zygote's environment."""
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--hostname",
        FUNCTION,
        "--clearenv",
    ]
    for name, value in zygote_environment(dict(os.environ), sandboxed=True).items():
        argv += ["--setenv", name, value]
    for op in release_sandbox(release, config, release_identities(release, config)).ops:
        if isinstance(op, Symlink):
            argv += ["--symlink", op.target, op.path]
        elif isinstance(op, Bind):
            argv += ["--ro-bind", op.path, op.path]
        elif op.is_dir:  # a Mask: an empty directory or file over a secret
            argv += ["--tmpfs", op.path, "--remount-ro", op.path]
        else:
            argv += ["--ro-bind", os.devnull, op.path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    return [*argv, "--chdir", str(release.root), sys.executable, "-c", code]


def probe_bwrap(release: Release, config: NodeConfig, code: str) -> tuple[list[str] | None, str]:
    """The bwrap command line, or None and why the bwrap row is skipped."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "skipped: not installed (a benchmark-only tool: apt-get install bubblewrap)"
    argv = bwrap_argv(bwrap, release, config, code)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=30
        )
    except subprocess.TimeoutExpired:
        return None, "skipped: it did not finish within 30 s here"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return None, f"skipped: it failed here ({why[0][:120]})"
    return argv, ""


def import_cpu_ms(release: Release, module: str) -> float:
    """CPU milliseconds of importing ``module`` of ``release`` in a fresh interpreter."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(release.root)!r}); "
        f"began = time.process_time(); import {module}; "
        "print((time.process_time() - began) * 1e3)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, check=True
    )
    return float(done.stdout)


class UnpreparedSpawner(ZygoteSpawner):
    """A sandboxed spawner that never prepares an instance ahead: every cold start forks one
    and joins its cgroup on the way, as the later cold starts of a burst do."""

    def _prepare_soon(self) -> None:
        return


async def start_runtime(
    stack: contextlib.AsyncExitStack,
    release: Release,
    isolation: Literal["sandbox", "process"],
    listeners: list[Callable[[RuntimeEvent], None]] | None = None,
    prepared: bool = True,
) -> tuple[Runtime, float]:
    """A started Runtime (closed when ``stack`` closes) and the seconds its zygote took."""
    # No reaping during the run, and no prewarm: this benchmark decides when instances start
    # and die.
    config = NodeConfig(
        release_dir=release.root,
        reap_interval_s=3600.0,
        keep_alive_policy="fixed",
        log_level="warning",
        isolation=isolation,
    )
    scheduler = LoopScheduler()
    spawner = None if prepared else UnpreparedSpawner(release, config, scheduler)
    runtime = Runtime(
        release, config, scheduler=scheduler, listeners=listeners or [], spawner=spawner
    )
    began = time.perf_counter()
    stack.push_async_callback(runtime.close)
    await runtime.start()
    return runtime, time.perf_counter() - began


async def measure_runtime(
    settings: Settings, release_dir: Path, preload_dir: Path, exec_release: Release, host: str
) -> dict[str, Any]:
    demo = load_release(release_dir)
    fixture = load_release(preload_dir)
    stops: list[str] = []

    def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, InstanceStopped):
            stops.append(event.reason)

    code = handler_code(demo)
    bwrap, bwrap_note = probe_bwrap(demo, NodeConfig(release_dir=release_dir), code)
    heavy_ms = c.median([import_cpu_ms(fixture, PRELOAD_MODULE) for _ in range(3)])
    async with contextlib.AsyncExitStack() as stack:
        sandboxed, sandbox_start_s = await start_runtime(stack, demo, "sandbox", [on_event])
        process, process_start_s = await start_runtime(stack, demo, "process")
        unprepared, _ = await start_runtime(stack, demo, "sandbox", prepared=False)
        preloaded, _ = await start_runtime(
            stack, replace(fixture, preload=(PRELOAD_MODULE,)), "sandbox"
        )
        plain, _ = await start_runtime(stack, replace(fixture, preload=()), "sandbox")
        polyglot, _ = await start_runtime(stack, exec_release, "sandbox")

        async def run(
            argv: list[str], env: dict[str, str] | None = None
        ) -> tuple[float, float | None]:
            return run_timed(argv, env), None

        async def node_started(number: int) -> tuple[float, float | None]:
            return node_fresh(exec_release, host), None

        kinds = [
            ColdKind("sandbox", lambda n: cold_invoke(sandboxed, n)),
            ColdKind("process", lambda n: cold_invoke(process, n)),
            ColdKind("unprepared", lambda n: cold_invoke(unprepared, n)),
            ColdKind("fresh", lambda n: run([sys.executable, "-c", code])),
            ColdKind("bare", lambda n: run([sys.executable, "-c", "pass"])),
            ColdKind("preloaded", lambda n: cold_invoke(preloaded, n)),
            ColdKind("not_preloaded", lambda n: cold_invoke(plain, n)),
            ColdKind("exec_node", lambda n: cold_invoke(polyglot, n, NODE_FUNCTION)),
            ColdKind("node_fresh", node_started),
            ColdKind("node_bare", lambda n: run(["node", "-e", ""], instance_environment())),
            ColdKind("exec_c", lambda n: cold_invoke(polyglot, n, C_FUNCTION)),
        ]
        if bwrap is not None:
            argv = bwrap
            kinds.append(ColdKind("bwrap", lambda n: run(argv)))
        for number in range(settings.cold_warmup + settings.cold_starts):
            shift = number % len(kinds)  # each kind takes every place in the order in turn
            for kind in kinds[shift:] + kinds[:shift]:
                e2e, ready = await kind.sample(number)
                if number >= settings.cold_warmup:
                    kind.e2e.append(e2e)
                    if ready is not None:
                        kind.ready.append(ready)
        stops.clear()
        warm = await warm_inprocess(sandboxed, settings)
        warm["instance_stops"] = {reason: stops.count(reason) for reason in set(stops)}

    by_name = {kind.name: kind for kind in kinds}
    cold: dict[str, Any] = {name: kind.summary() for name, kind in by_name.items()}
    cold["zygote_start_ms"] = {"sandbox": sandbox_start_s * 1e3, "process": process_start_s * 1e3}
    cold["fresh_interpreter_code"] = code
    cold["bwrap_argv"] = bwrap
    cold["bwrap_note"] = bwrap_note
    cold["preload_module_import_cpu_ms"] = heavy_ms
    cold["warmup_discarded"] = settings.cold_warmup
    cold["node_fresh_command"] = (
        f"PORT=<a free port> node {NODE_SCRIPT} in {exec_release.root}, "
        "timed from spawn to its first answer of POST /"
    )
    cold["targets"] = cold_targets(by_name)
    return {"cold_start": cold, "inprocess_warm": warm}


def cold_targets(kinds: dict[str, ColdKind]) -> dict[str, dict[str, Any]]:
    """Each cold-start target: its ratio (or figure), limit and verdict; None when its
    baseline was skipped."""

    def p50(name: str) -> float:
        kind = kinds.get(name)
        return c.percentile(kind.e2e, 50) if kind else math.nan

    def check(value: float, limit: float, what: str) -> dict[str, Any]:
        known = not math.isnan(value)
        return {"value": value, "limit": limit, "target": what, "pass": known and value <= limit}

    targets = {
        "sandbox_vs_process": check(
            c.ratio(p50("sandbox"), p50("process")),
            SANDBOX_TARGET,
            f"sandboxed cold invoke p50 <= {SANDBOX_TARGET:g} x process isolation p50",
        ),
        "sandbox_vs_bwrap": check(
            c.ratio(p50("sandbox"), p50("bwrap")),
            COLD_TARGET,
            f"sandboxed cold invoke p50 <= {COLD_TARGET:g} x bwrap fresh interpreter p50",
        ),
        "process_vs_fresh": check(
            c.ratio(p50("process"), p50("fresh")),
            COLD_TARGET,
            f"process isolation cold invoke p50 <= {COLD_TARGET:g} x fresh interpreter p50",
        ),
        "preloaded": check(
            p50("preloaded") * 1e3,
            PRELOAD_TARGET_MS,
            f"sandboxed cold invoke p50, ~100 ms module preloaded, <= {PRELOAD_TARGET_MS:g} ms",
        ),
    }
    if "bwrap" not in kinds:
        targets["sandbox_vs_bwrap"]["pass"] = None
    return targets


async def warm_inprocess(runtime: Runtime, settings: Settings) -> dict[str, Any]:
    """Runtime.invoke without HTTP (informational): the dispatch's share of a warm call."""
    latencies: list[float] = []
    for number in range(settings.latency_requests):
        began = time.perf_counter()
        await runtime.invoke(FUNCTION, BODY, request_id=f"warm-{number}")
        latencies.append(time.perf_counter() - began)
    calls = failed = 0
    deadline = 0.0
    failures: dict[str, int] = {}

    async def worker() -> None:
        nonlocal calls, failed
        while time.perf_counter() < deadline:
            try:
                await runtime.invoke(FUNCTION, BODY, request_id="load")
            except errors.HttpError as exc:  # counted and reported, not fatal
                failed += 1
                failures[exc.code] = failures.get(exc.code, 0) + 1
            else:
                calls += 1

    for measured in (False, True):  # the first pass starts the second instance
        calls = failed = 0
        failures.clear()
        began = time.perf_counter()
        deadline = began + (settings.inprocess_s if measured else 0.5)
        await asyncio.gather(*(worker() for _ in range(settings.connections)))
        elapsed = time.perf_counter() - began
    return {
        "latency_us_1_in_flight": c.summarize(latencies, 1e6),
        "calls_per_s": calls / elapsed,
        "errors": failed,
        "errors_by_code": dict(failures),
        "in_flight": settings.connections,
        "duration_s": elapsed,
        "instances": len(runtime.pools[FUNCTION].instances),
    }


# -- 2. warm HTTP: node against a bare echo ----------------------------------------------------


@dataclass
class Server:
    """One target of the warm rounds: a server and the path its POSTs go to."""

    name: str
    host: str
    port: int
    managed: c.Managed
    function: str | None = FUNCTION  # None: not a node (its path is "/")

    @property
    def path(self) -> str:
        return "/" if self.function is None else f"/function/{self.function}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


def latency_loop(server: Server, count: int) -> list[float]:
    """``count`` sequential POSTs on one keep-alive connection; seconds each."""
    request = c.build_request(
        "POST", server.host, server.port, server.path, BODY, [("Content-Type", "text/plain")]
    )
    samples: list[float] = []
    with c.KeepAliveClient(server.host, server.port) as client:
        for _ in range(count):
            began = time.perf_counter()
            status, body = client.request(request)
            samples.append(time.perf_counter() - began)
            if status != 200:
                raise RuntimeError(f"{server.name} answered {status}: {body[:300]!r}")
    return samples


def function_stats(server: Server, function: str) -> dict[str, Any]:
    """The node's view of ``function`` after the run: its instances, how many were started,
    and how many stopped and why (a crash during the run shows here)."""
    with c.KeepAliveClient(server.host, server.port) as client:
        status, body = client.request(
            c.build_request("GET", server.host, server.port, "/v1/functions")
        )
        _, metrics = client.request(c.build_request("GET", server.host, server.port, "/metrics"))
    stats: dict[str, Any] = {}
    if status == 200:
        for entry in json.loads(body)["functions"]:
            if entry["name"] == function:
                stats.update(entry)
    label = f'function="{function}"'
    stops: dict[str, float] = {}
    for line in metrics.decode().splitlines():
        if line.startswith("#") or label not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("tierfaas_cold_start_seconds_count"):
            stats["instances_started"] = int(float(value))
        elif name.startswith("tierfaas_instance_stops_total"):
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            stops[reason] = float(value)
        elif name.startswith("tierfaas_invocations_total"):
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            stats.setdefault("invocations", {})[outcome] = float(value)
    stats["instance_stops"] = stops
    return stats


def node_argv(release_dir: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tierfaas.cli",
        "node",
        "--release",
        str(release_dir),
        "--http",
        f"{host}:{port}",
        "--log-level",
        "warning",
    ]


def throughput_target(
    out: dict[str, Any], name: str, baseline: str, limit: float, what: str
) -> dict[str, Any]:
    """``name``'s req/s median against ``baseline``'s, with the paired ratio of each round;
    passes at ``limit`` or more, with no error on ``name``'s side."""
    value = c.ratio(out[name]["requests_per_s_median"], out[baseline]["requests_per_s_median"])
    paired = [
        c.ratio(n, b)
        for n, b in zip(
            out[name]["requests_per_s_rounds"], out[baseline]["requests_per_s_rounds"], strict=True
        )
    ]
    return {
        "value": value,
        "limit": limit,
        "paired_rounds": paired,
        "paired_median": c.median(paired),
        "target": what,
        "pass": bool(value >= limit and out[name]["errors"] == 0),
    }


def measure_http(
    settings: Settings, release_dir: Path, exec_dir: Path, host: str
) -> dict[str, Any]:
    lua = c.post_lua(BODY)
    c.require_wrk()
    with c.Processes() as processes:
        echo_port = free_port(host)
        echo = Server(
            "echo", host, echo_port, processes.start("echo", c.echo_command(host, echo_port))
        )
        node_port = free_port(host)
        managed = processes.start("node", node_argv(release_dir, host, node_port))
        node = Server("node", host, node_port, managed)
        exec_port = free_port(host)
        managed = processes.start("exec_node", node_argv(exec_dir, host, exec_port))
        exec_js = Server("exec_js", host, exec_port, managed, NODE_FUNCTION)
        exec_c = Server("exec_c", host, exec_port, managed, C_FUNCTION)
        direct_port = free_port(host)
        managed = processes.start(
            "js_direct",
            ["node", str(exec_dir / NODE_SCRIPT)],
            env=instance_environment(direct_port),
        )
        js_direct = Server("js_direct", host, direct_port, managed, None)
        servers = [echo, node, js_direct, exec_js, exec_c]  # the order of every round
        for server in servers:
            path = "/" if server.function is None else "/healthz"
            c.wait_http(host, server.port, path, timeout_s=30, process=server.managed)
        first_request_ms = latency_loop(node, 1)[0] * 1e3  # the node's cold start over HTTP
        for server in servers:  # warm each: connections, caches, the second instances
            latency_loop(server, 200)
            c.run_wrk(server.url, duration_s=1, connections=settings.connections, lua=lua)

        per_round = max(1, settings.latency_requests // settings.rounds)
        latency: dict[str, list[list[float]]] = {s.name: [] for s in servers}
        wrk: dict[str, list[c.WrkResult]] = {s.name: [] for s in servers}
        cpu_us: dict[str, list[float]] = {s.name: [] for s in servers}
        for round_number in range(settings.rounds):
            for server in servers:
                latency[server.name].append(latency_loop(server, per_round))
                cpu_before = c.tree_cpu_seconds(server.managed.pid)
                result = c.run_wrk(
                    server.url,
                    duration_s=settings.round_s,
                    connections=settings.connections,
                    lua=lua,
                )
                cpu_used = c.tree_cpu_seconds(server.managed.pid) - cpu_before
                wrk[server.name].append(result)
                cpu_us[server.name].append(cpu_used / max(1, result.requests) * 1e6)
                print(
                    f"  round {round_number + 1}/{settings.rounds} {server.name:9}: "
                    f"{result.requests_per_s:9.0f} req/s, "
                    f"p50 {c.percentile(latency[server.name][-1], 50) * 1e6:6.0f} µs at 1 conn"
                    + (f", {result.errors} errors" if result.errors else ""),
                    flush=True,
                )
        time.sleep(0.5)  # let the calls wrk left in flight finish before reading busy counts
        stats = function_stats(node, FUNCTION)
        exec_stats = {
            NODE_FUNCTION: function_stats(exec_js, NODE_FUNCTION),
            C_FUNCTION: function_stats(exec_c, C_FUNCTION),
        }
        for server in servers:
            if server.managed.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} died during the run:\n{server.managed.log_tail()}"
                )

    out: dict[str, Any] = {
        "node_first_request_ms": first_request_ms,
        "node_function": stats,
        "exec_functions": exec_stats,
    }
    for server in servers:
        pooled = [x for chunk in latency[server.name] for x in chunk]
        rps = [r.requests_per_s for r in wrk[server.name]]
        out[server.name] = {
            "url": server.url,
            "latency_us_1_conn": c.summarize(pooled, 1e6),
            "latency_us_1_conn_rounds": [c.summarize(x, 1e6) for x in latency[server.name]],
            "requests_per_s_median": c.median(rps),
            "server_cpu_us_per_request_median": c.median(cpu_us[server.name]),
            "server_cpu_us_per_request_rounds": cpu_us[server.name],
            "requests_per_s_rounds": rps,
            "wrk_rounds": [r.as_dict() for r in wrk[server.name]],
            "errors": sum(r.errors for r in wrk[server.name]),
        }
    python = throughput_target(
        out,
        "node",
        "echo",
        THROUGHPUT_TARGET,
        f"node req/s median >= {THROUGHPUT_TARGET:g} x bare echo req/s median",
    )
    out["throughput_ratio"] = python["value"]
    out["throughput_ratio_paired_rounds"] = python["paired_rounds"]
    out["throughput_ratio_paired_median"] = python["paired_median"]
    out["target"] = python["target"]
    out["pass"] = python["pass"]
    out["exec_http"] = throughput_target(
        out,
        "exec_js",
        "js_direct",
        EXEC_HTTP_TARGET,
        f"Node.js http hello through a node req/s median >= {EXEC_HTTP_TARGET:g} x "
        "the same server hit directly",
    )
    out["exec_stdio"] = throughput_target(
        out,
        "exec_c",
        "node",
        EXEC_STDIO_TARGET,
        f"C stdio hello through a node req/s median >= {EXEC_STDIO_TARGET:g} x "
        "the Python hello through a node",
    )
    return out


# -- report ------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _target_cells(target: dict[str, Any], digits: int = 3, unit: str = "") -> list[str]:
    """The ratio (or figure), target and result cells of a cold-start target."""
    verdict = "skipped" if target["pass"] is None else _verdict(target["pass"])
    return [f"{target['value']:.{digits}f}{unit}", f"≤ {target['limit']:g}{unit}", verdict]


def cold_rows(cold: dict[str, Any]) -> list[list[str]]:
    targets = cold["targets"]
    sandbox = cold["sandbox"]["cold_ms"]
    process = cold["process"]["cold_ms"]
    fresh, bare = cold["fresh"]["cold_ms"], cold["bare"]["cold_ms"]
    preloaded, plain = cold["preloaded"]["cold_ms"], cold["not_preloaded"]["cold_ms"]
    s_ready, p_ready = cold["sandbox"]["spawn_to_ready_ms"], cold["process"]["spawn_to_ready_ms"]
    zygote = cold["zygote_start_ms"]
    n = sandbox["n"]
    blank = ["", ""]
    unprepared = cold["unprepared"]["cold_ms"]
    rows = [
        [
            f"cold start p50, sandboxed (n={n})",
            _ms(sandbox["p50"]),
            f"{_ms(process['p50'])} process isolation",
            *_target_cells(targets["sandbox_vs_process"], 2),
        ],
        [
            "cold start p95, sandboxed",
            _ms(sandbox["p95"]),
            f"{_ms(process['p95'])} process isolation",
            f"{c.ratio(sandbox['p95'], process['p95']):.2f}",
            *blank,
        ],
        [
            "  p50 / p95 with nothing prepared (a burst)",
            f"{unprepared['p50']:.1f} / {unprepared['p95']:.1f} ms",
            f"{_ms(process['p50'])} / {_ms(process['p95'])} process isolation",
            f"{c.ratio(unprepared['p50'], process['p50']):.2f}",
            *blank,
        ],
    ]
    if "bwrap" in cold:
        bwrap = cold["bwrap"]["cold_ms"]
        rows += [
            [
                "cold start p50, sandboxed",
                _ms(sandbox["p50"]),
                f"{_ms(bwrap['p50'])} fresh python in bwrap",
                *_target_cells(targets["sandbox_vs_bwrap"]),
            ],
            [
                "cold start p95, sandboxed",
                _ms(sandbox["p95"]),
                f"{_ms(bwrap['p95'])} fresh python in bwrap",
                f"{c.ratio(sandbox['p95'], bwrap['p95']):.3f}",
                *blank,
            ],
        ]
    else:
        rows.append(
            [
                "cold start p50, sandboxed",
                _ms(sandbox["p50"]),
                "fresh python in bwrap: " + cold["bwrap_note"].removeprefix("skipped: "),
                "",
                f"≤ {COLD_TARGET:g}",
                "skipped",
            ]
        )
    rows += [
        [
            "cold start p50, process isolation",
            _ms(process["p50"]),
            f"{_ms(fresh['p50'])} fresh python",
            *_target_cells(targets["process_vs_fresh"]),
        ],
        [
            "cold start p95, process isolation",
            _ms(process["p95"]),
            f"{_ms(fresh['p95'])} fresh python",
            f"{c.ratio(process['p95'], fresh['p95']):.3f}",
            *blank,
        ],
        [
            "  spawn→READY p50 / p95, sandboxed",
            f"{s_ready['p50']:.1f} / {s_ready['p95']:.1f} ms",
            f"{p_ready['p50']:.1f} / {p_ready['p95']:.1f} ms process isolation",
            f"{c.ratio(s_ready['p50'], p_ready['p50']):.2f}",
            *blank,
        ],
        [
            "  zygote start, once per release",
            f"{zygote['sandbox']:.0f} ms sandboxed",
            f"{zygote['process']:.0f} ms process isolation",
            "",
            *blank,
        ],
        ["  `python -c pass`, for scale", "", _ms(bare["p50"]), "", *blank],
        [
            f"cold start p50, {cold['preload_module_import_cpu_ms']:.0f} ms import, preloaded",
            _ms(preloaded["p50"]),
            f"{_ms(plain['p50'])} not preloaded",
            *_target_cells(targets["preloaded"], 1, " ms"),
        ],
        [
            "cold start p95, preloaded",
            _ms(preloaded["p95"]),
            f"{_ms(plain['p95'])} not preloaded",
            f"{c.ratio(preloaded['p95'], plain['p95']):.2f}",
            *blank,
        ],
        *exec_cold_rows(cold),
    ]
    return rows


def exec_cold_rows(cold: dict[str, Any]) -> list[list[str]]:
    node, fresh = cold["exec_node"]["cold_ms"], cold["node_fresh"]["cold_ms"]
    ready = cold["exec_node"]["spawn_to_ready_ms"]
    stdio, stdio_ready = cold["exec_c"]["cold_ms"], cold["exec_c"]["spawn_to_ready_ms"]
    blank = ["", ""]
    return [
        [
            "cold start p50, Node.js http hello (exec)",
            _ms(node["p50"]),
            f"{_ms(fresh['p50'])} the same hello.js started fresh",
            f"{c.ratio(node['p50'], fresh['p50']):.2f}",
            *blank,
        ],
        [
            "cold start p95, Node.js http hello",
            _ms(node["p95"]),
            f"{_ms(fresh['p95'])} started fresh",
            f"{c.ratio(node['p95'], fresh['p95']):.2f}",
            *blank,
        ],
        [
            "  spawn→ready p50 / p95, Node.js (port accepts)",
            f"{ready['p50']:.1f} / {ready['p95']:.1f} ms",
            "",
            "",
            *blank,
        ],
        ['  `node -e ""`, for scale', "", _ms(cold["node_bare"]["cold_ms"]["p50"]), "", *blank],
        [
            "cold start p50 / p95, C stdio hello (exec)",
            f"{stdio['p50']:.1f} / {stdio['p95']:.1f} ms",
            f"spawn→READY {stdio_ready['p50']:.1f} / {stdio_ready['p95']:.1f} ms",
            "",
            *blank,
        ],
    ]


def report_rows(results: dict[str, Any]) -> list[list[str]]:
    http = results["http"]
    echo, node = http["echo"], http["node"]
    el, nl = echo["latency_us_1_conn"], node["latency_us_1_conn"]
    rounds = len(node["requests_per_s_rounds"])
    node_cpu = node["server_cpu_us_per_request_median"]
    echo_cpu = echo["server_cpu_us_per_request_median"]
    cold = cold_rows(results["cold_start"]) if "cold_start" in results else []  # --warm-only
    warm = results.get("inprocess_warm")
    inprocess = []
    if warm is not None:
        inprocess = [
            [
                "in-process Runtime.invoke p50, 1 in flight",
                f"{warm['latency_us_1_in_flight']['p50']:.0f} µs",
                "",
                "",
                "",
                "",
            ],
            [
                f"in-process Runtime.invoke calls/s, {warm['in_flight']} in flight",
                f"{warm['calls_per_s']:,.0f}"
                + (f" ({warm['errors']} errors)" if warm["errors"] else ""),
                "",
                "",
                "",
                "",
            ],
        ]

    return [
        *cold,
        [
            "warm p50, 1 connection",
            f"{nl['p50']:.0f} µs",
            f"{el['p50']:.0f} µs echo",
            f"{c.ratio(nl['p50'], el['p50']):.2f}",
            "",
            "",
        ],
        [
            "warm p99, 1 connection",
            f"{nl['p99']:.0f} µs",
            f"{el['p99']:.0f} µs echo",
            f"{c.ratio(nl['p99'], el['p99']):.2f}",
            "",
            "",
        ],
        [
            f"req/s, {http['node']['wrk_rounds'][0]['connections']} conns (median of {rounds})",
            f"{node['requests_per_s_median']:,.0f}",
            f"{echo['requests_per_s_median']:,.0f} echo",
            f"{http['throughput_ratio']:.2f}",
            f"≥ {THROUGHPUT_TARGET:g}",
            _verdict(http["pass"]),
        ],
        [
            "  req/s range over rounds",
            _spread(node["requests_per_s_rounds"]),
            _spread(echo["requests_per_s_rounds"]) + " echo",
            f"{http['throughput_ratio_paired_median']:.2f} paired",
            "",
            "",
        ],
        [
            "  wrk p50 / p99 latency (median round)",
            _wrk_latency(node),
            _wrk_latency(echo) + " echo",
            "",
            "",
            "",
        ],
        [
            "  server CPU per request under wrk (median)",
            f"{node_cpu:.0f} µs",
            f"{echo_cpu:.0f} µs echo",
            f"{c.ratio(node_cpu, echo_cpu):.2f}",
            "",
            "",
        ],
        [
            "  node instance stops during the run",
            _stops(http["node_function"]),
            "",
            "",
            "",
            "",
        ],
        *exec_warm_rows(http),
        *inprocess,
    ]


def exec_warm_rows(http: dict[str, Any]) -> list[list[str]]:
    """The exec functions' warm rows: Node.js through a node against the same server hit
    directly, C through a node against the Python hello through a node."""
    rows: list[list[str]] = []
    for name, baseline, label, what, key, limit in (
        ("exec_js", "js_direct", "Node.js http hello", "direct", "exec_http", EXEC_HTTP_TARGET),
        ("exec_c", "node", "C stdio hello", "Python hello", "exec_stdio", EXEC_STDIO_TARGET),
    ):
        side, base, target = http[name], http[baseline], http[key]
        latency, base_latency = side["latency_us_1_conn"], base["latency_us_1_conn"]
        cpu = side["server_cpu_us_per_request_median"]
        base_cpu = base["server_cpu_us_per_request_median"]
        rows += [
            [
                f"req/s, {side['wrk_rounds'][0]['connections']} conns, {label} (exec)",
                f"{side['requests_per_s_median']:,.0f}"
                + (f" ({side['errors']} errors)" if side["errors"] else ""),
                f"{base['requests_per_s_median']:,.0f} {what}",
                f"{target['value']:.2f}",
                f"≥ {limit:g}",
                _verdict(target["pass"]),
            ],
            [
                "  req/s range over rounds",
                _spread(side["requests_per_s_rounds"]),
                f"{_spread(base['requests_per_s_rounds'])} {what}",
                f"{target['paired_median']:.2f} paired",
                "",
                "",
            ],
            [
                "  warm p50 / p99, 1 connection",
                f"{latency['p50']:.0f} / {latency['p99']:.0f} µs",
                f"{base_latency['p50']:.0f} / {base_latency['p99']:.0f} µs {what}",
                f"{c.ratio(latency['p50'], base_latency['p50']):.2f}",
                "",
                "",
            ],
            [
                "  wrk p50 / p99 latency (median round)",
                _wrk_latency(side),
                f"{_wrk_latency(base)} {what}",
                "",
                "",
                "",
            ],
            [
                "  server CPU per request under wrk (median)",
                f"{cpu:.0f} µs",
                f"{base_cpu:.0f} µs {what}",
                f"{c.ratio(cpu, base_cpu):.2f}",
                "",
                "",
            ],
        ]
    functions = http["exec_functions"]
    rows.append(
        [
            "  exec instance stops during the run",
            "; ".join(f"{name}: {_stops(stats)}" for name, stats in functions.items()),
            "",
            "",
            "",
            "",
        ]
    )
    return rows


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f} - {max(values):,.0f}"


def _stops(stats: dict[str, Any]) -> str:
    stops = stats.get("instance_stops", {})
    started = stats.get("instances_started", "?")
    detail = ", ".join(f"{int(n)} {reason}" for reason, n in stops.items()) or "none"
    return f"{detail} ({started} started)"


def _wrk_latency(side: dict[str, Any]) -> str:
    p50 = c.median([r["latency_ms"].get("p50", math.nan) for r in side["wrk_rounds"]])
    p99 = c.median([r["latency_ms"].get("p99", math.nan) for r in side["wrk_rounds"]])
    return f"{p50:.1f} / {p99:.1f} ms"


COLUMNS = ["measure", "tierfaas", "baseline", "ratio", "target", "result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 2 s rounds, < 60 s")
    parser.add_argument("--host", default="127.0.0.1", help="a 127.0.0.x address to serve on")
    parser.add_argument("--release", type=Path, default=c.REPO_ROOT / "examples" / "demo")
    parser.add_argument(
        "--preload-release",
        type=Path,
        default=c.BENCHMARKS_DIR / "fixtures" / "preload",
        help="a release whose `hello` imports the slow module `heavy`",
    )
    parser.add_argument(
        "--exec-release",
        type=Path,
        default=c.BENCHMARKS_DIR / "fixtures" / "exec",
        help="a release with the exec functions hello-node (hello.js) and hello-c (hello.c)",
    )
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="only the warm HTTP part (echo, the Python hello, the exec functions)",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.0.0."):
        parser.error("benchmarks serve on 127.0.0.x only")
    settings = settings_for(args.quick, args.connections)
    release_dir = args.release.resolve()
    preload_dir = args.preload_release.resolve()
    exec_release = build_exec_fixture(args.exec_release.resolve())

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    began = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "runtime",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "settings": asdict(settings),
        "function": FUNCTION,
        "release": str(release_dir),
        "preload_release": str(preload_dir),
        "exec_release": str(exec_release.root),
    }
    results["warm_only"] = args.warm_only
    if not args.warm_only:
        print(
            f"runtime benchmark ({settings.mode}): {settings.cold_starts} cold starts of each "
            "kind ...",
            flush=True,
        )
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results.update(
                runner.run(
                    measure_runtime(settings, release_dir, preload_dir, exec_release, args.host)
                )
            )
    print(
        f"warm HTTP: {settings.rounds} rounds of {settings.round_s:g} s, "
        f"{settings.connections} connections ...",
        flush=True,
    )
    results["http"] = measure_http(settings, release_dir, exec_release.root, args.host)
    results["elapsed_s"] = time.perf_counter() - began
    results["targets"] = {
        **(results["cold_start"]["targets"] if "cold_start" in results else {}),
        "throughput": {
            "value": results["http"]["throughput_ratio"],
            "limit": THROUGHPUT_TARGET,
            "target": results["http"]["target"],
            "pass": results["http"]["pass"],
        },
        "exec_http": results["http"]["exec_http"],
        "exec_stdio": results["http"]["exec_stdio"],
    }
    path = c.write_results("runtime", results)
    rows = report_rows(results)
    machine = results["machine"]
    title = (
        f"tierfaas runtime benchmark — {results['date']}, {settings.mode} mode, "
        f"{machine['nproc']} cores, Python {machine['python']}, {results['elapsed_s']:.0f} s"
    )
    c.show_table(title, COLUMNS, rows, markdown=args.markdown)
    print(f"\nresults: {path}")
    passed = all(t["pass"] is not False for t in results["targets"].values())
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
