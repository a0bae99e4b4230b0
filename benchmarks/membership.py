"""Membership benchmark: master failover time and idle gossip bytes.

For N = 5, 10, 20 node processes on loopback with the ``local`` gossip preset, and N = 10 with
the ``lan`` preset and a cluster key (``--quick``: N = 5 local only, 2 tries, 3 s of counting):

1. failover: once every node agrees (same ``agreement(view)``, N members), ``kill -9`` the
   master's process group and poll every survivor's ``GET /v1/cluster`` concurrently (one
   aiohttp loop per node, a request every ~20 ms) until all survivors name the new master
   (and, reported separately, until their whole ``agreement(view)`` is equal again with
   N - 1 members). Times are from just before the SIGKILL to the response that completed the
   agreement, so they include up to one polling interval plus one request.
   Tries reuse one cluster: after each try the killed node is restarted under the same name,
   host and ports (it rejoins as the youngest) and the next try starts once all N agree again
   and a short settle period has passed; each try thus kills the oldest node of that moment.
2. gossip bytes per node per second at steady state: before the first try, with the cluster
   idle and nobody polling, a raw ``AF_PACKET`` socket on ``lo`` counts the IPv4 bytes (IP
   header included, link header not) of every UDP and TCP packet to or from the gossip port
   of one of the cluster's hosts (kinship's TCP push-pull connects from 127.0.0.1, so the
   other end may be any address), each packet once (the loopback copy tagged PACKET_OUTGOING is
   dropped by an in-kernel BPF filter). Total bytes / N / seconds: what each node sends (and
   receives) per second on average. Bytes on the RPC port (gossip port + 1, the control
   plane's gRPC) are counted separately. Needs root (CAP_NET_RAW); without it the column is
   empty and a note says why.

Results: a table on stdout and benchmarks/results/membership.json with every raw sample.
Run alone: the machine has 2 shared cores and 40 processes for N = 20 are already a load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

import _common as c
from tierfaas.keys import KEY_ENV, generate_key
from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess

# Kinship's own figures on this machine (shared/reference/kinship-behaviour.md): kill -9 of the
# oldest of 10 nodes -> every survivor sees it dead, median / max of 3.
REFERENCE_DEAD_S = {"local": (1.33, 1.37), "lan": (6.23, 7.02)}

POLL_INTERVAL_S = 0.02
REQUEST_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Config:
    size: int
    preset: str
    first_host: int  # 127.0.0.<first_host> ... : ranges no test uses
    keyed: bool = False

    @property
    def label(self) -> str:
        return f"N={self.size} {self.preset}"


@dataclass
class Settings:
    mode: str
    configs: list[Config]
    tries: int
    count_s: float
    settle_s: float
    stagger_s: float
    failover_timeout_s: float
    agree_timeout_s: float


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(
            mode="quick",
            configs=[Config(5, "local", 100)],
            tries=2,
            count_s=3.0,
            settle_s=1.0,
            stagger_s=0.1,
            failover_timeout_s=20.0,
            agree_timeout_s=30.0,
        )
    return Settings(
        mode="full",
        configs=[
            Config(5, "local", 100),
            Config(10, "local", 110),
            Config(20, "local", 130),
            Config(10, "lan", 160, keyed=True),
        ],
        tries=5,
        count_s=10.0,
        settle_s=2.0,
        stagger_s=0.25,
        failover_timeout_s=40.0,
        agree_timeout_s=60.0,
    )


# -- counting gossip bytes on lo -------------------------------------------------------------

_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4
_SO_ATTACH_FILTER = 26
_SNAPLEN = 80  # IPv4 header (at most 60 bytes) and the ports


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def port_filter(ports: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program for an ``AF_PACKET``/``SOCK_DGRAM`` socket (data starts at the IP
    header): keeps the first ``_SNAPLEN`` bytes of IPv4 UDP or TCP packets whose source or
    destination port is in ``ports``, except the PACKET_OUTGOING copies of loopback packets
    (fragments are not expected: lo's MTU is 64 KiB)."""
    ld_w_abs, ld_b_abs, ld_h_ind, ldx_b_msh, jeq, ret = 0x20, 0x30, 0x48, 0xB1, 0x15, 0x06
    pkttype = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE
    # (code, jump if true, jump if false, k): jumps name a label, None is the next instruction.
    ops: list[tuple[int, str | None, str | None, int] | str] = [
        (ld_w_abs, None, None, pkttype),
        (jeq, "drop", None, _PACKET_OUTGOING),
        (ld_b_abs, None, None, 9),  # the IP protocol
        (jeq, "ports", None, socket.IPPROTO_UDP),
        (jeq, "ports", "drop", socket.IPPROTO_TCP),
        "ports",
        (ldx_b_msh, None, None, 0),  # X = the IP header's length
    ]
    for offset in (0, 2):  # source port, destination port
        ops.append((ld_h_ind, None, None, offset))
        ops += [(jeq, "accept", None, port) for port in ports]
    ops += ["drop", (ret, None, None, 0), "accept", (ret, None, None, _SNAPLEN)]
    labels: dict[str, int] = {}
    for op in ops:
        if isinstance(op, str):
            labels[op] = sum(1 for o in ops[: ops.index(op)] if not isinstance(o, str))
    prog: list[tuple[int, int, int, int]] = []
    for op in ops:
        if isinstance(op, str):
            continue
        code, true, false, k = op
        here = len(prog)
        jt = 0 if true is None else labels[true] - here - 1
        jf = 0 if false is None else labels[false] - here - 1
        prog.append((code, jt, jf, k))
    return prog


class LoopbackCounter:
    """Counts, in a thread, the IPv4 bytes of UDP/TCP packets on ``lo`` to or from one of
    ``ports`` on one of ``hosts``; each packet once."""

    def __init__(self, hosts: Sequence[str], ports: dict[str, int]) -> None:
        self.hosts = {socket.inet_aton(h) for h in hosts}
        self.ports = ports  # label -> port
        self.by_port = {port: label for label, port in ports.items()}
        self.bytes: dict[str, int] = {label: 0 for label in ports}
        self.packets: dict[str, int] = {label: 0 for label in ports}
        self.by_proto: dict[str, int] = {}
        self.foreign = 0  # packets on those port numbers but not to/from a cluster host
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        try:
            self._attach(port_filter(list(ports.values())))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.sock.bind(("lo", _ETH_P_IP))
            self.sock.settimeout(0.1)
        except BaseException:
            self.sock.close()
            raise

    def _attach(self, prog: list[tuple[int, int, int, int]]) -> None:
        array = (_SockFilter * len(prog))(*(_SockFilter(*ins) for ins in prog))
        fprog = _SockFprog(len(prog), array)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))

    def _drain(self) -> None:
        """Drops what was queued between bind and the start of the window."""
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(_SNAPLEN)
        self.sock.settimeout(0.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(_SNAPLEN)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == _PACKET_OUTGOING or len(data) < 20:
                continue
            ihl = (data[0] & 0x0F) * 4
            total = struct.unpack_from("!H", data, 2)[0]
            proto = data[9]
            src, dst = data[12:16], data[16:20]
            if len(data) < ihl + 4:
                continue
            sport, dport = struct.unpack_from("!HH", data, ihl)
            # One end must be a cluster host on the port: kinship's TCP push-pull connects
            # without binding its source address, so the other end is 127.0.0.1:ephemeral.
            label = None
            if src in self.hosts:
                label = self.by_port.get(sport)
            if label is None and dst in self.hosts:
                label = self.by_port.get(dport)
            if label is None:
                self.foreign += 1
                continue
            self.bytes[label] += total
            self.packets[label] += 1
            key = f"{label}/{'udp' if proto == socket.IPPROTO_UDP else 'tcp'}"
            self.by_proto[key] = self.by_proto.get(key, 0) + total

    def count(self, seconds: float) -> float:
        """Counts for ``seconds``; returns the exact length of the window."""
        self._drain()
        self._thread = threading.Thread(target=self._run, name="lo-counter", daemon=True)
        began = time.perf_counter()
        self._thread.start()
        time.sleep(seconds)
        self._stop.set()
        elapsed = time.perf_counter() - began
        self._thread.join(2)
        return elapsed

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close()


def measure_bytes(cluster: LocalCluster, seconds: float) -> dict[str, Any]:
    ports = {"gossip": cluster.gossip_port, "rpc": cluster.gossip_port + 1}
    try:
        counter = LoopbackCounter(cluster.hosts, ports)
    except PermissionError as exc:
        return {"error": f"raw socket on lo refused ({exc}): run as root"}
    try:
        elapsed = counter.count(seconds)
    finally:
        counter.close()
    size = len(cluster.hosts)
    return {
        "window_s": elapsed,
        "bytes": counter.bytes,
        "packets": counter.packets,
        "bytes_by_protocol": counter.by_proto,
        "foreign_packets": counter.foreign,
        "bytes_per_node_per_s": {k: v / size / elapsed for k, v in counter.bytes.items()},
        "packets_per_node_per_s": {k: v / size / elapsed for k, v in counter.packets.items()},
    }


# -- polling /v1/cluster ---------------------------------------------------------------------


async def fetch_view(session: aiohttp.ClientSession, node: NodeProcess) -> dict[str, Any] | None:
    try:
        async with session.get(f"{node.url}/v1/cluster") as response:
            if response.status != 200:
                return None
            view: dict[str, Any] = json.loads(await response.read())
            return view
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=2),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def wait_agreement(nodes: Sequence[NodeProcess], size: int, timeout_s: float) -> Any:
    """Polls every node until all views give the same ``agreement`` with ``size`` members;
    returns that agreement and one of the views."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    async with new_session() as session:
        while time.monotonic() < deadline:
            for node in nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"{node.url} exited: {node.log_tail(1500)}")
            views = await asyncio.gather(*(fetch_view(session, n) for n in nodes))
            if all(v is not None for v in views):
                seen = {agreement(v) for v in views if v is not None}
                last = seen
                if len(seen) == 1:
                    (only,) = seen
                    if only[3] == size and only[0] is not None:
                        return only, views[0]
            await asyncio.sleep(0.1)
    raise TimeoutError(
        f"{len(nodes)} nodes did not agree on {size} members in {timeout_s} s: {last}"
    )


@dataclass
class Failover:
    victim: str
    expected_master: str
    master_s: float | None = None  # all survivors name the new master
    agreement_s: float | None = None  # all survivors' agreement() equal, N - 1 members
    per_node_master_s: dict[str, float] = field(default_factory=dict)
    per_node_gone_s: dict[str, float] = field(default_factory=dict)  # victim not a member
    wrong_masters: dict[str, str] = field(default_factory=dict)  # any third master seen
    polls: int = 0
    failed_polls: int = 0


async def measure_failover(
    cluster: LocalCluster, victim: NodeProcess, survivors: Sequence[NodeProcess], timeout_s: float
) -> Failover:
    size = len(survivors)
    async with new_session() as session:
        before = await fetch_view(session, survivors[0])
        if before is None:
            raise RuntimeError("no view before the kill")
        victim_name = cluster.name_of(victim)
        if before["master"] != victim_name:
            raise RuntimeError(f"the victim {victim_name} is not the master: {before['master']}")
        expected = before["members"][1]["name"]  # rank 1 takes over
        result = Failover(victim=victim_name, expected_master=expected)
        latest: dict[str, tuple[Any, ...]] = {}
        done = asyncio.Event()

        t0 = time.monotonic()
        victim.kill()  # SIGKILL to the node's process group, then reaps it

        def check(now: float) -> None:
            if len(latest) < size:
                return
            elapsed = now - t0
            if result.master_s is None and all(a[0] == expected for a in latest.values()):
                result.master_s = elapsed
            if result.agreement_s is None and len(set(latest.values())) == 1:
                (only,) = set(latest.values())
                if only[0] == expected and only[3] == size:
                    result.agreement_s = elapsed
            if result.master_s is not None and result.agreement_s is not None:
                done.set()

        async def poll(node: NodeProcess) -> None:
            name = cluster.name_of(node)
            while not done.is_set():
                view = await fetch_view(session, node)
                now = time.monotonic()
                result.polls += 1
                if view is None:
                    result.failed_polls += 1
                else:
                    key = agreement(view)
                    latest[name] = key
                    if key[0] == expected:
                        result.per_node_master_s.setdefault(name, now - t0)
                    elif key[0] not in (victim_name, None):
                        result.wrong_masters[name] = key[0]
                    if victim_name not in {m["name"] for m in view["members"]}:
                        result.per_node_gone_s.setdefault(name, now - t0)
                    check(now)
                if not done.is_set():
                    await asyncio.sleep(POLL_INTERVAL_S)

        tasks = [asyncio.create_task(poll(n)) for n in survivors]
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    return result


# -- one configuration -----------------------------------------------------------------------


def start_cluster(cluster: LocalCluster, stagger_s: float, timeout_s: float) -> float:
    """Like ``LocalCluster.start`` with a longer health wait (20 nodes and their zygotes on 2
    cores take a while); returns the seconds until every node was healthy."""
    began = time.monotonic()
    for host in cluster.hosts:
        cluster.nodes.append(cluster.make_node(host).start(wait=False))
        time.sleep(stagger_s)
    for node in cluster.nodes:
        node.wait_healthy(max(5.0, timeout_s - (time.monotonic() - began)))
    return time.monotonic() - began


def run_config(config: Config, settings: Settings, release: Path, log_dir: Path) -> dict[str, Any]:
    env = {KEY_ENV: generate_key()} if config.keyed else None
    logs = log_dir / f"{config.preset}-{config.size}"
    logs.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(
        release,
        config.size,
        first_host=config.first_host,
        preset=config.preset,
        log_dir=logs,
        env=env,
    )
    out: dict[str, Any] = {
        "size": config.size,
        "preset": config.preset,
        "keyed": config.keyed,
        "hosts": [cluster.hosts[0], cluster.hosts[-1]],
        "gossip_port": cluster.gossip_port,
    }
    try:
        out["healthy_after_s"] = start_cluster(
            cluster, settings.stagger_s, settings.agree_timeout_s
        )
        began = time.monotonic()
        asyncio.run(wait_agreement(cluster.nodes, config.size, settings.agree_timeout_s))
        out["agreed_after_healthy_s"] = time.monotonic() - began
        time.sleep(settings.settle_s + 1.0)
        print(f"  {config.label}: counting gossip bytes for {settings.count_s:g} s", flush=True)
        out["bytes"] = measure_bytes(cluster, settings.count_s)
        tries: list[dict[str, Any]] = []
        for attempt in range(settings.tries):
            victim = cluster.nodes[attempt % config.size]
            survivors = [n for n in cluster.nodes if n is not victim]
            outcome = asyncio.run(
                measure_failover(cluster, victim, survivors, settings.failover_timeout_s)
            )
            tries.append(asdict(outcome))
            last = max(outcome.per_node_gone_s.values(), default=float("nan"))
            print(
                f"  {config.label}: try {attempt + 1}/{settings.tries}: new master everywhere "
                f"after {_s(outcome.master_s)}, agreement after {_s(outcome.agreement_s)}, "
                f"victim gone everywhere after {_s(last)}",
                flush=True,
            )
            if outcome.master_s is None:
                out["tries"] = tries
                raise RuntimeError(
                    f"{config.label}: survivors did not agree on {outcome.expected_master} "
                    f"within {settings.failover_timeout_s} s"
                )
            # Back under the same name, host and ports; it rejoins as the youngest.
            began = time.monotonic()
            victim.start(wait=False).wait_healthy(settings.agree_timeout_s)
            asyncio.run(wait_agreement(cluster.nodes, config.size, settings.agree_timeout_s))
            tries[-1]["rejoined_after_s"] = time.monotonic() - began
            time.sleep(settings.settle_s)
        out["tries"] = tries
    finally:
        cluster.close()
    master = [t["master_s"] for t in out["tries"]]
    agreed = [t["agreement_s"] for t in out["tries"] if t["agreement_s"] is not None]
    out["failover_s"] = {"median": c.median(master), "max": max(master), "samples": master}
    out["agreement_s"] = {
        "median": c.median(agreed),
        "max": max(agreed, default=float("nan")),
        "samples": agreed,
    }
    return out


# -- report ----------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f} s"


def _rate(result: dict[str, Any], label: str) -> str:
    counted = result.get("bytes", {})
    if "error" in counted or not counted:
        return "n/a"
    return f"{counted['bytes_per_node_per_s'][label]:,.0f}"


COLUMNS = [
    "N",
    "preset",
    "failover median",
    "failover max",
    "full agreement median / max",
    "gossip B/node/s",
    "rpc B/node/s",
    "kinship ref. (dead, N=10)",
]


def report_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        ref = REFERENCE_DEAD_S.get(r["preset"])
        rows.append(
            [
                str(r["size"]),
                r["preset"] + (" + key" if r["keyed"] else ""),
                _s(r["failover_s"]["median"]),
                _s(r["failover_s"]["max"]),
                f"{_s(r['agreement_s']['median'])} / {_s(r['agreement_s']['max'])}",
                _rate(r, "gossip"),
                _rate(r, "rpc"),
                f"{ref[0]:.2f} / {ref[1]:.2f} s" if ref else "",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 5 only, 2 tries, < 60 s")
    parser.add_argument("--release", type=Path, default=c.REPO_ROOT / "tests/fixtures/testrel")
    parser.add_argument("--tries", type=int, help="failovers per configuration")
    parser.add_argument("--keep-logs", action="store_true", help="keep the nodes' logs")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    settings = settings_for(args.quick)
    if args.tries:
        settings.tries = args.tries

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    log_dir = Path(tempfile.mkdtemp(prefix="tierfaas-bench-membership-"))
    began = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "membership",
        "date": c.now_iso(),
        "commit": c.git_commit(),
        "machine": c.machine_info(),
        "settings": {k: v for k, v in asdict(settings).items() if k != "configs"},
        "release": str(args.release.resolve()),
        "poll_interval_s": POLL_INTERVAL_S,
        "method": "tries reuse one cluster; the killed master is restarted (same name, host, "
        "ports) and rejoins as the youngest before the next try",
        "reference_dead_s_median_max": REFERENCE_DEAD_S,
        "configs": [],
    }
    failed = False
    try:
        for config in settings.configs:
            print(f"{config.label}: starting {config.size} nodes", flush=True)
            try:
                results["configs"].append(
                    run_config(config, settings, args.release.resolve(), log_dir)
                )
            except (RuntimeError, TimeoutError) as exc:
                failed = True
                print(f"{config.label}: FAILED: {exc}", file=sys.stderr, flush=True)
                results.setdefault("errors", []).append({"config": config.label, "error": str(exc)})
    finally:
        if args.keep_logs or failed:
            print(f"node logs: {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - began
    path = c.write_results("membership", results)
    rows = report_rows(results["configs"])
    machine = results["machine"]
    title = (
        f"tierfaas membership benchmark — {results['date']}, {settings.mode} mode, "
        f"{settings.tries} tries, {machine['nproc']} cores, Python {machine['python']}, "
        f"{results['elapsed_s']:.0f} s"
    )
    c.show_table(title, COLUMNS, rows, markdown=args.markdown)
    print(f"\nresults: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
