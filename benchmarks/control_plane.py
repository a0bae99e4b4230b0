"""The control plane against Redis, in one run: Query latency, Register throughput, propagation.

    .venv/bin/python benchmarks/control_plane.py            # full: ~1.5 min
    .venv/bin/python benchmarks/control_plane.py --quick    # < 60 s

1. ``Query`` latency, one request in flight, from this process (the worker) to a replica
   server in its own process (``tierfaas.control.ControlServer`` over a ``TableBackend``
   fed by a master process), for each transport: gRPC unary ``Query``; one open
   ``QueryStream`` with request ids; the raw TCP query lane (same protobuf messages,
   length-prefixed). Baseline: ``GET`` of a small key (the same bytes as a QueryReply with 3
   routes) through ``redis.asyncio`` on a ``redis-server`` this script starts and stops.
   Rounds interleave the options; the report quotes the median of the rounds' p50 and p99.
   Target: Query p50 <= 2x Redis GET p50.
2. Master ``Register`` throughput: 64 calls in flight, each carrying ``--batch`` distinct
   (function, node) pairs, for a few seconds; registrations/s = pairs the master applied
   (its table size at the end, after the last flush) / time. Also 1 pair per call, for
   reference. Target >= 10,000/s.
3. Propagation: a master with 1, 3 and 10 replica processes; one Register, then this process
   polls every replica's query lane until all of them answer with the new route. Median over
   trials. Target: median <= batch window + 20 ms.
4. Anti-entropy's steady-state cost: ``--nodes`` write queues in this process (each its own
   connection, through a byte-counting TCP proxy) with ``--warm`` functions each, in step with
   a master process, idle for a while: bytes/s per node both ways (HTTP/2 frames, as TCP
   carries them; add ~52 bytes of TCP/IP header per segment), with the digest check every
   ``DIGEST_PERIOD_S`` and with it off (what the connection costs anyway: keep-alive pings),
   and the master's CPU. Also a warm set ten times larger (a check costs the same), and one
   lost run repaired (time from the drop until the master holds the run again).

Every process is on 127.0.0.x and is stopped on exit, error, Ctrl-C or SIGTERM. Results: a
table on stdout and benchmarks/results/control_plane.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Server processes are started (fork + exec, by _common.Processes) from this process while
# its gRPC channels are open: gRPC's fork handlers then abort the child now and then
# (SIGABRT). Nothing here uses gRPC across a fork, so they are off.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import _common as c
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import wire
from tierfaas.control.api import QueryResult, Write
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import DIGEST_PERIOD_S
from tierfaas.control.lane import QueryLaneClient
from tierfaas.control.replicator import Replicator
from tierfaas.control.server import ControlServer
from tierfaas.control.table import Op
from tierfaas.control.transport import Channels, ControlClient
from tierfaas.control.write_queue import WriteQueue
from tierfaas.procs import free_port

KEY = bytes(range(32))
WINDOW_S = 0.1
FUNCTION = "resize-image"
NODES = ("node-a", "node-b", "node-c")
SCRIPT = Path(__file__).resolve()


def resolve(name: str) -> NodeEndpoint:
    """Every name is a live member here: the benchmark measures the control plane, not
    membership."""
    return NodeEndpoint(name, 1, Address("127.0.0.1", 8080), Address("127.0.0.1", 9090))


# -- server processes ----------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    master = args.master is None
    backend = TableBackend(
        resolve, time.monotonic, master=master, master_rpc=args.master, window_s=args.window
    )
    server = ControlServer(
        backend,
        bind=Address.parse(args.bind),
        key=KEY,
        node=args.name,
        lane=Address.parse(args.lane) if args.lane else None,
    )
    await server.start()
    tasks = []
    channels = Channels(KEY)
    if backend.hub is not None:
        tasks.append(asyncio.create_task(backend.hub.run()))
    else:
        replicator = Replicator(
            backend.copy, master=lambda: args.master, channels=channels, replica=args.name
        )
        replicator.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(0)


def serve_command(name: str, bind: str, lane: str | None, master: str | None) -> list[str]:
    argv = [sys.executable, str(SCRIPT), "serve", "--name", name, "--bind", bind]
    argv += ["--window", str(WINDOW_S)]
    if lane:
        argv += ["--lane", lane]
    if master:
        argv += ["--master", master]
    return argv


async def wait_ready(client: ControlClient, proc: c.Managed, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.process.poll() is not None:
            code = proc.process.returncode
            raise RuntimeError(f"{proc.name} exited ({code}):\n{proc.log_tail()}")
        try:
            await client.info(timeout_s=0.5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready:\n{proc.log_tail()}") from None
            await asyncio.sleep(0.05)


async def wait_loaded(client: ControlClient, version: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.info()).version < version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client.address} did not reach version {version}")
        await asyncio.sleep(0.01)


# -- 1. query latency ----------------------------------------------------------------------------


async def sample(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm-up: connections, caches
        await call()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        began = clock()
        await call()
        out.append(clock() - began)
    return out


async def query_latency(procs: c.Processes, quick: bool) -> dict[str, Any]:
    import redis.asyncio as aioredis

    redis_port = free_port("127.0.0.5")
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    redis_proc = procs.start(
        "redis",
        [
            server,
            *("--bind", "127.0.0.5", "--port", str(redis_port)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
        ],
    )
    m_port, r_port, lane_port = free_port("127.0.0.2"), free_port("127.0.0.3"), 0
    lane_port = free_port("127.0.0.3")
    master_addr = f"127.0.0.2:{m_port}"
    master = procs.start("master", serve_command("m", master_addr, None, None))
    replica = procs.start(
        "replica",
        serve_command("r", f"127.0.0.3:{r_port}", f"127.0.0.3:{lane_port}", master_addr),
    )
    channels = Channels(KEY)
    mc, rc = channels.get(master_addr), channels.get(f"127.0.0.3:{r_port}")
    await wait_ready(mc, master)
    await wait_ready(rc, replica)
    await mc.register([Write(Op.ADD, FUNCTION, n) for n in NODES])
    await wait_loaded(rc, 1)

    lane = QueryLaneClient(Address("127.0.0.3", lane_port), key=KEY)
    stream = rc.query_stream()
    expected = await rc.query(FUNCTION)
    assert len(expected.routes) == 3
    reply_bytes = wire.query_reply(expected).SerializeToString()
    r = aioredis.Redis(host="127.0.0.5", port=redis_port)
    for _ in range(100):
        try:
            await r.set("route:" + FUNCTION, reply_bytes)
            break
        except Exception:
            if redis_proc.process.poll() is not None:
                raise RuntimeError(f"redis exited:\n{redis_proc.log_tail()}") from None
            await asyncio.sleep(0.05)

    async def check(result: QueryResult) -> None:
        if result.routes != expected.routes:
            raise AssertionError("wrong answer")

    async def via_unary() -> None:
        await check(await rc.query(FUNCTION))

    async def via_stream() -> None:
        await check(await stream.query(FUNCTION))

    async def via_lane() -> None:
        await check(await lane.query(FUNCTION))

    async def via_redis() -> None:
        if await r.get("route:" + FUNCTION) != reply_bytes:
            raise AssertionError("wrong answer")

    options = {
        "redis GET (redis.asyncio)": via_redis,
        "gRPC unary Query": via_unary,
        "gRPC QueryStream (request ids)": via_stream,
        "query lane (raw TCP, protobuf)": via_lane,
    }
    rounds, n = (3, 600) if quick else (3, 2500)
    per: dict[str, list[dict[str, float]]] = {k: [] for k in options}
    for _ in range(rounds):
        for name, call in options.items():
            per[name].append(c.summarize(await sample(call, n), 1e6))
    await stream.close()
    await lane.close()
    await r.aclose()
    await channels.close()
    procs.stop(replica)
    procs.stop(master)
    procs.stop(redis_proc)
    result = {}
    redis_p50 = c.median([s["p50"] for s in per["redis GET (redis.asyncio)"]])
    for name, rounds_ in per.items():
        p50 = c.median([s["p50"] for s in rounds_])
        result[name] = {
            "p50_us": p50,
            "p99_us": c.median([s["p99"] for s in rounds_]),
            "vs_redis": c.ratio(p50, redis_p50),
            "rounds": rounds_,
        }
    return result


# -- 2. register throughput ----------------------------------------------------------------------


async def register_throughput(
    procs: c.Processes, batch: int, duration_s: float, in_flight: int = 64
) -> dict[str, Any]:
    m_port = free_port("127.0.0.2")
    address = f"127.0.0.2:{m_port}"
    master = procs.start(f"master-tp-{batch}", serve_command("m", address, None, None))
    channels = Channels(KEY)
    client = channels.get(address)
    await wait_ready(client, master)
    counter = 0
    sent = 0
    stop_at = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        nonlocal counter, sent
        node = f"node-{w}"
        while time.perf_counter() < stop_at:
            writes = [Write(Op.ADD, f"fn-{counter + i}", node) for i in range(batch)]
            counter += batch
            reply = await client.register(writes, timeout_s=10)
            sent += reply.accepted

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    elapsed = time.perf_counter() - began
    # Applied = in the master's table after its last flush (every pair is a distinct route).
    await asyncio.sleep(WINDOW_S * 2)
    applied_version = (await client.info()).version
    stream = client.subscribe(0, "")
    snapshot = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    applied = sum(len(routes) for routes in snapshot.routes.values())  # type: ignore[union-attr]
    if applied != sent:
        raise AssertionError(f"master accepted {sent} registrations but applied {applied}")
    await channels.close()
    procs.stop(master)
    return {
        "batch": batch,
        "in_flight": in_flight,
        "accepted": sent,
        "seconds": elapsed,
        "applied": applied,
        "registrations_per_s": applied / elapsed,
        "calls_per_s": sent / batch / elapsed,
        "table_versions": applied_version,
    }


# -- 3. propagation ------------------------------------------------------------------------------


async def propagation(procs: c.Processes, replicas: int, trials: int) -> dict[str, Any]:
    m_port = free_port("127.0.0.2")
    master_addr = f"127.0.0.2:{m_port}"
    master = procs.start(f"master-p{replicas}", serve_command("m", master_addr, None, None))
    channels = Channels(KEY)
    mc = channels.get(master_addr)
    await wait_ready(mc, master)
    lanes = []
    started = []
    for i in range(replicas):
        host = f"127.0.0.{10 + i}"
        rpc, lane = f"{host}:{free_port(host)}", f"{host}:{free_port(host)}"
        proc = procs.start(
            f"replica-{replicas}-{i}", serve_command(f"r{i}", rpc, lane, master_addr)
        )
        started.append(proc)
        lanes.append((channels.get(rpc), proc, Address.parse(lane)))
    clients = []
    for rc, proc, lane in lanes:
        await wait_ready(rc, proc)
        clients.append(QueryLaneClient(lane, key=KEY))
    times = []
    for t in range(trials):
        function = f"prop-{replicas}-{t}"
        await asyncio.sleep(0.02 + (t % 7) * 0.013)  # not in phase with anything
        began = time.perf_counter()
        await mc.register([Write(Op.ADD, function, "node-a")])
        waiting = set(range(len(clients)))
        while waiting:
            results = await asyncio.gather(*(clients[i].query(function) for i in waiting))
            waiting = {i for i, res in zip(list(waiting), results, strict=True) if not res.routes}
            if waiting:
                await asyncio.sleep(0.0005)
        times.append(time.perf_counter() - began)
    for client in clients:
        await client.close()
    await channels.close()
    for proc in started:
        procs.stop(proc)
    procs.stop(master)
    s = c.summarize(times, 1e3)
    return {"replicas": replicas, "median_ms": s["p50"], "p90_ms": s["p90"], "max_ms": s["max"]}


# -- 4. anti-entropy cost ------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy to ``upstream`` that counts the bytes (and reads, about one per segment
    here) it forwards both ways."""

    def __init__(self, upstream: Address) -> None:
        self.upstream = upstream
        self.bytes = 0
        self.reads = 0
        self.address: Address | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str) -> Address:
        self._server = await asyncio.start_server(self._serve, host, 0)
        self.address = Address(host, self._server.sockets[0].getsockname()[1])
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:  # both ends of every connection: the pipes see EOF
            writer.close()
        await asyncio.sleep(0.05)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream.host, self.upstream.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    self.bytes += len(data)
                    self.reads += 1
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        # Connections still open when the benchmark's loop ends are cancelled with it: they
        # end quietly (asyncio's stream callback logs a cancelled connection task as an error).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _constant(address: str | None) -> Callable[[], str | None]:
    return lambda: address


async def entropy_cost(
    procs: c.Processes,
    nodes: int,
    warm: int,
    seconds: float,
    period_s: float | None,
    via_replica: bool = True,
) -> dict[str, Any]:
    """``nodes`` idle write queues in step with a master (and a replica they check with,
    unless ``via_replica`` is False) for ``seconds``; ``period_s`` None: no checks (what the
    connections cost anyway)."""
    m_addr = f"127.0.0.2:{free_port('127.0.0.2')}"
    r_addr = f"127.0.0.3:{free_port('127.0.0.3')}"
    tag = f"{nodes}-{warm}-{period_s}-{via_replica}"
    master = procs.start(f"master-ae-{tag}", serve_command("m", m_addr, None, None))
    replica = procs.start(f"replica-ae-{tag}", serve_command("r", r_addr, None, m_addr))
    channels = Channels(KEY)
    await wait_ready(channels.get(m_addr), master)
    await wait_ready(channels.get(r_addr), replica)
    proxies: list[CountingProxy] = []
    queues = []
    for i in range(nodes):
        to_master, to_replica = (
            CountingProxy(Address.parse(m_addr)),
            CountingProxy(Address.parse(r_addr)),
        )
        proxies += [to_master, to_replica]
        via_master = str(await to_master.start("127.0.0.7"))
        via_copy = str(await to_replica.start("127.0.0.7")) if via_replica else None
        queue = WriteQueue(
            f"node-{i}", 1, master=_constant(via_master),
            replica=_constant(via_copy), channels=Channels(KEY),
            digest_period_s=period_s or 1e9,
        )  # fmt: skip
        queue.start()
        for f in range(warm):
            queue.warm(f"fn-{f:04d}")
        queues.append(queue)
    for queue in queues:
        await queue.flushed()
    await asyncio.sleep(max(2.0, 2 * (period_s or 0)))  # every queue past its first check
    before = sum(p.bytes for p in proxies), sum(p.reads for p in proxies)
    cpu = c.cpu_seconds([master.pid]), c.cpu_seconds([replica.pid])
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - began
    cpu = c.cpu_seconds([master.pid]) - cpu[0], c.cpu_seconds([replica.pid]) - cpu[1]
    after = sum(p.bytes for p in proxies), sum(p.reads for p in proxies)
    repair_ms = None
    if period_s is not None:
        # One run lost (declared dead and back): how long until the master holds it again.
        client = channels.get(m_addr)
        await client.announce("node-0", 1, [])  # as the master's drop leaves it
        began = time.perf_counter()
        while (await client.digest("node-0", 1)).digest.count != warm:
            if time.perf_counter() - began > 10 * period_s:
                raise RuntimeError("the lost run was not repaired")
            await asyncio.sleep(0.005)
        repair_ms = (time.perf_counter() - began) * 1e3
    repairs = sum(q.repairs for q in queues)
    for queue in queues:
        await queue.stop()
    for proxy in proxies:
        await proxy.stop()
    await channels.close()
    procs.stop(replica)
    procs.stop(master)
    return {
        "nodes": nodes,
        "warm": warm,
        "period_s": period_s,
        "checks_with": "replica" if via_replica else "master",
        "seconds": elapsed,
        "bytes_per_s_per_node": (after[0] - before[0]) / elapsed / nodes,
        "segments_per_s_per_node": (after[1] - before[1]) / elapsed / nodes,
        "master_cpu_pct": 100 * cpu[0] / elapsed,
        "replica_cpu_pct": 100 * cpu[1] / elapsed,
        "repairs": repairs,
        "repair_ms": repair_ms,
    }


# -- main ----------------------------------------------------------------------------------------


async def bench(quick: bool, batch: int, nodes: int, warm: int) -> dict[str, Any]:
    with c.Processes() as procs:
        latency = await query_latency(procs, quick)
        duration = 2.0 if quick else 5.0
        throughput = [
            await register_throughput(procs, batch, duration),
            await register_throughput(procs, 1, duration),
        ]
        trials = 10 if quick else 30
        spread = [await propagation(procs, k, trials) for k in (1, 3, 10)]
        idle_s = 3.0 if quick else 20.0  # three checks per node at least, in --quick
        entropy = [
            await entropy_cost(procs, nodes, warm, idle_s, None),
            await entropy_cost(procs, nodes, warm, idle_s, DIGEST_PERIOD_S),
            await entropy_cost(procs, nodes, warm * 10, idle_s, DIGEST_PERIOD_S),
            await entropy_cost(procs, nodes, warm, idle_s, DIGEST_PERIOD_S, via_replica=False),
        ]
    return {
        "query_latency": latency,
        "register": throughput,
        "propagation": spread,
        "anti_entropy": entropy,
    }


def report(data: dict[str, Any]) -> dict[str, Any]:
    rows = []
    lat = data["query_latency"]
    redis_p50 = lat["redis GET (redis.asyncio)"]["p50_us"]
    for name, s in lat.items():
        verdict = "" if name.startswith("redis") else ("PASS" if s["vs_redis"] <= 2 else "FAIL")
        rows.append(
            [name, f"{s['p50_us']:.0f}", f"{s['p99_us']:.0f}", f"{s['vs_redis']:.2f}x", verdict]
        )
    c.print_table(
        "Query latency, 1 in flight (µs); target p50 <= 2x Redis GET",
        ["transport", "p50", "p99", "p50 vs redis", "target"],
        rows,
    )
    rows = [
        [
            f"{r['batch']} pairs/call, {r['in_flight']} in flight",
            f"{r['registrations_per_s']:,.0f}",
            f"{r['calls_per_s']:,.0f}",
            ("PASS" if r["registrations_per_s"] >= 10_000 else "FAIL") if i == 0 else "(ref.)",
        ]
        for i, r in enumerate(data["register"])
    ]
    c.print_table(
        "Master Register throughput; target >= 10,000 registrations/s",
        ["calls", "registrations/s", "calls/s", "target"],
        rows,
    )
    limit_ms = WINDOW_S * 1e3 + 20
    rows = [
        [
            str(p["replicas"]),
            f"{p['median_ms']:.1f}",
            f"{p['p90_ms']:.1f}",
            f"{p['max_ms']:.1f}",
            "PASS" if p["median_ms"] <= limit_ms else "FAIL",
        ]
        for p in data["propagation"]
    ]
    c.print_table(
        f"Register -> visible on every replica (ms); window {WINDOW_S * 1e3:.0f} ms, "
        f"target median <= {limit_ms:.0f} ms",
        ["replicas", "median", "p90", "max", "target"],
        rows,
    )
    entropy = data["anti_entropy"]
    rows = [
        [
            f"every {e['period_s']:.1f} s, {e['checks_with']}" if e["period_s"] else "off",
            str(e["warm"]),
            f"{e['bytes_per_s_per_node']:.0f}",
            f"{e['segments_per_s_per_node']:.1f}",
            f"{e['master_cpu_pct']:.2f}",
            f"{e['replica_cpu_pct']:.2f}",
            f"{e['repair_ms']:.0f}" if e["repair_ms"] is not None else "-",
        ]
        for e in entropy
    ]
    c.print_table(
        f"Anti-entropy, {entropy[0]['nodes']} idle nodes in step: cost per node (both "
        "connections; 'off': keep-alive pings only)",
        ["digest check", "warm functions", "bytes/s", "segments/s", "master CPU %",
         "replica CPU %", "lost run repaired (ms)"],
        rows,
    )  # fmt: skip
    best = min((k for k in lat if not k.startswith("redis")), key=lambda k: lat[k]["p50_us"])
    verdicts = {
        "query_p50_within_2x_redis": lat[best]["p50_us"] <= 2 * redis_p50,
        "recommended_query_transport": best,
        "register_10k_per_s": data["register"][0]["registrations_per_s"] >= 10_000,
        "propagation_within_window_plus_20ms": all(
            p["median_ms"] <= limit_ms for p in data["propagation"]
        ),
        "anti_entropy_bytes_per_s_per_node": entropy[1]["bytes_per_s_per_node"]
        - entropy[0]["bytes_per_s_per_node"],
        "anti_entropy_repair_within_2s": all(
            e["repair_ms"] is None or e["repair_ms"] <= 2000 for e in entropy
        ),
    }
    print(f"recommended Query transport: {best}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="(internal) run one control server")
    s.add_argument("--name", required=True)
    s.add_argument("--bind", required=True)
    s.add_argument("--lane")
    s.add_argument("--master")
    s.add_argument("--window", type=float, default=WINDOW_S)
    parser.add_argument("--quick", action="store_true", help="fewer samples: < 60 s")
    parser.add_argument("--batch", type=int, default=64, help="pairs per Register call")
    parser.add_argument("--nodes", type=int, default=20, help="anti-entropy: idle nodes")
    parser.add_argument("--warm", type=int, default=50, help="anti-entropy: warm per node")
    args = parser.parse_args()
    if args.command == "serve":
        _run(serve(args))
        return
    began = time.perf_counter()
    data = _run(bench(args.quick, args.batch, args.nodes, args.warm))
    verdicts = report(data)
    path = c.write_results(
        "control_plane",
        {
            "machine": c.machine_info(),
            "when": c.now_iso(),
            "commit": c.git_commit(),
            "quick": args.quick,
            "window_s": WINDOW_S,
            **data,
            "verdicts": verdicts,
            "seconds": time.perf_counter() - began,
        },
    )
    print(f"results: {path.relative_to(c.REPO_ROOT)} ({time.perf_counter() - began:.0f} s)")


def _run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
