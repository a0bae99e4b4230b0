"""A real cluster for the chaos suite: node processes on loopback, killed and restarted on
purpose, with the checks every scenario shares.

- Every node serves tests/chaos/fixtures/chaosrel with ``CHAOS_LEDGER`` pointing at its own
  ledger file (one per node address, kept across restarts), where the functions append the
  id of every call they run.
- Every node is a seed (as ``tierfaas up`` lists several), so a restarted node finds the
  cluster whichever nodes are dead.
- ``kill()`` is ``kill -9`` of the node process alone, as a crash is; the check that its
  zygote and instances die with it (parent-death signals) is part of it. ``close()`` kills
  whatever is left and fails if any process of any node (zygotes and instances included)
  outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.auth import call_metadata
from tierfaas.control.rpc import method_path
from tierfaas.manifest import load_release
from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess, descendants, http_get
from tierfaas.testing.wait import RETRIED, eventually

CHAOSREL = Path(__file__).parent / "fixtures" / "chaosrel"
FUNCTIONS = sorted(load_release(CHAOSREL).functions)
Routes = dict[str, list[str]]


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): a pid plus this is unique."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def tree(pid: int) -> dict[int, str]:
    """``pid`` and every process below it, each with its start time."""
    found = {}
    for p in [pid, *descendants(pid)]:
        started = _start_time(p)
        if started is not None:
            found[p] = started
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` (pid -> start time) that still run (zombies do not count)."""
    return [p for p, t in processes.items() if _start_time(p) == t and _state(p) != "Z"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get_json(node: NodeProcess, path: str, timeout: float = 2.0) -> Any:
    status, body = http_get(f"{node.url}{path}", timeout=timeout)
    if status != 200:
        raise RuntimeError(f"{node.url}{path} answered {status}: {body[:200]!r}")
    return json.loads(body)


@dataclass
class Kill:
    """One kill -9: of one or more nodes at the same moment (``kind`` "node"), or of one
    process of a node that lives on (``kind`` "instance" or "zygote")."""

    label: str
    victims: list[str]
    roles: list[str]
    at: float  # time.monotonic()
    in_flight: set[str] = field(default_factory=set)  # ids the client had on the victims
    kind: str = "node"
    # When every victim had been reaped (time.monotonic()): until then its sockets were open
    # (a process killed -9 tears its memory down before it closes its files), so a request
    # forwarded to it could still be written there, and is lost with it.
    gone_at: float | None = None
    recovery_s: float | None = None  # until membership agreed and every table was right
    membership_s: float | None = None  # until membership alone agreed


class ChaosCluster:
    def __init__(
        self,
        tmp: Path,
        size: int,
        *,
        subnet: str,
        first_host: int,
        preset: str = "local",
        extra_args: tuple[str, ...] = (),
        node_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """``node_env``: extra environment of the node at a host (e.g. a test hook)."""
        self.node_env = node_env or {}
        self.ledger_dir = tmp / "ledgers"
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        log_dir = tmp / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.lc = LocalCluster(
            CHAOSREL,
            size,
            first_host=first_host,
            subnet=subnet,
            preset=preset,
            seeds=size,
            extra_args=extra_args,
            log_dir=log_dir,
        )
        self.nodes: dict[str, NodeProcess] = {}  # name -> the current process of that name
        self.dead: set[str] = set()
        self._every: list[NodeProcess] = []  # every process ever started, for close()
        self._trees: dict[int, str] = {}  # every pid seen under a node, for close()
        self.kills: list[Kill] = []

    # -- life and death ---------------------------------------------------------------------

    def _make(self, host: str, port: int | None = None) -> NodeProcess:
        log = self.lc.log_dir / f"{host}.log" if self.lc.log_dir else None
        node = NodeProcess(
            CHAOSREL,
            host=host,
            port=port,
            # Plain processes: the exactly-once ledger is a host file every function appends
            # to, which the sandbox rightly hides (tests/e2e/test_sandbox.py covers the
            # sandbox; `ip netns exec` also remounts /sys, without the cgroup hierarchies).
            extra_args=[*self.lc.node_args(host), "--isolation", "process"],
            log_path=log,
            env={
                "CHAOS_LEDGER": str(self.ledger_dir / f"{host}.ids"),
                **self.node_env.get(host, {}),
            },
        )
        self._every.append(node)
        return node

    def start(self, timeout: float = 20.0) -> ChaosCluster:
        made = []
        for host in self.lc.hosts:
            node = self._make(host).start(wait=False)
            made.append(node)
            self.nodes[self.lc.name_of(node)] = node
            time.sleep(0.05)  # oldest first: rank follows the list
        for node in made:
            node.wait_healthy(timeout)
        self.wait_formed(timeout)
        return self

    def name_of(self, node: NodeProcess) -> str:
        return self.lc.name_of(node)

    def live(self) -> list[NodeProcess]:
        return [n for name, n in self.nodes.items() if name not in self.dead]

    def urls(self) -> dict[str, str]:
        return {name: node.url for name, node in self.nodes.items()}

    def remember_trees(self) -> None:
        for node in self.live():
            if node.process is not None and node.process.poll() is None:
                self._trees.update(tree(node.pid))

    def kill(self, names: list[str], label: str, in_flight: set[str] | None = None) -> Kill:
        """kill -9 the node processes ``names`` (at once), then checks that each one's zygote
        and instances died with it (within 5 s)."""
        roles = [self.roles().get(name, "?") for name in names]
        trees = {}
        for name in names:
            trees.update(tree(self.nodes[name].pid))
        self._trees.update(trees)
        at = time.monotonic()
        for name in names:
            os.kill(self.nodes[name].pid, signal.SIGKILL)
        for name in names:
            process = self.nodes[name].process
            assert process is not None
            process.wait(10)
            self.dead.add(name)
        gone_at = time.monotonic()
        deadline = time.monotonic() + 5.0
        while still_running(trees) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = still_running(trees)
        assert not left, f"kill -9 of {names} left processes behind: {left}"
        record = Kill(label, list(names), roles, at, set(in_flight or ()), gone_at=gone_at)
        self.kills.append(record)
        return record

    def kill_process(self, name: str, kind: str, label: str) -> Kill:
        """kill -9 one process of node ``name``, which lives on: an ``instance`` (one of its
        function processes), or its ``zygote`` (every instance dies with it)."""
        node_pid = self.nodes[name].pid
        zygotes = [p for p in tree(node_pid) if _parent(p) == node_pid]
        assert len(zygotes) == 1, f"{name} has {len(zygotes)} zygotes"
        instances = {p: t for p, t in tree(zygotes[0]).items() if p != zygotes[0]}
        if kind == "instance":
            assert instances, f"{name} runs no instance"
            doomed = dict([next(iter(instances.items()))])
        else:
            doomed = {zygotes[0]: tree(zygotes[0])[zygotes[0]], **instances}
        role = self.roles().get(name, "?")
        at = time.monotonic()
        os.kill(next(iter(doomed)) if kind == "instance" else zygotes[0], signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while still_running(doomed) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not still_running(doomed), f"{kind} kill on {name} left {still_running(doomed)}"
        record = Kill(label, [name], [f"{role}'s {kind}"], at, kind=kind)
        self.kills.append(record)
        return record

    def restart(self, name: str, timeout: float = 20.0) -> NodeProcess:
        """The same node (address, port, name, ledger) started again, once healthy."""
        old = self.nodes[name]
        node = self._make(old.host, old.port).start(wait=False)
        self.nodes[name] = node
        self.dead.discard(name)
        node.wait_healthy(timeout)
        return node

    def wait_ready(self, name: str, timeout: float = 20.0) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if http_get(f"{node.url}/readyz", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{name} not ready after {timeout} s: {node.log_tail()}")

    def session_processes(self, name: str) -> list[int]:
        """The live node process of ``name`` and every process below it."""
        node = self.nodes[name]
        if name in self.dead or node.process is None or node.process.poll() is not None:
            return []
        return still_running(tree(node.pid))

    def close(self) -> None:
        """Kills every node and checks no process of any node remains."""
        self.remember_trees()
        for node in self._every:
            node.kill()
        deadline = time.monotonic() + 5.0
        while still_running(self._trees) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = still_running(self._trees)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes outlived the cluster: {left}"

    # -- views ------------------------------------------------------------------------------

    def view(self, node: NodeProcess) -> dict[str, Any]:
        return LocalCluster.view(node)

    def roles(self) -> dict[str, str]:
        """name -> role as the first live node that answers sees it."""
        for node in self.live():
            with contextlib.suppress(OSError, RuntimeError):
                return {m["name"]: m["role"] for m in self.view(node)["members"]}
        return {}

    def agreed(self) -> tuple[Any, ...] | None:
        """The agreement (master, replicas, assignment, size) if every live node shares it and
        it names exactly the live nodes."""
        live = self.live()
        seen = set()
        for node in live:
            view = self.view(node)
            if not view["joined"]:
                return None
            if {m["name"] for m in view["members"]} != {self.name_of(n) for n in live}:
                return None
            seen.add(agreement(view))
        return next(iter(seen)) if len(seen) == 1 else None

    def wait_formed(self, timeout: float) -> tuple[Any, ...]:
        return wait_for(self.agreed, timeout, "the cluster to agree on its members and roles")

    def truth(self) -> Routes:
        """function -> the live nodes where it has an instance, from each node itself."""
        warm: dict[str, list[str]] = {}
        for node in self.live():
            listing = get_json(node, "/v1/functions")
            for function in listing["functions"]:
                if function["instances"] > 0:
                    warm.setdefault(function["name"], []).append(listing["node"])
        return {f: sorted(names) for f, names in sorted(warm.items())}

    def table_wrong(self) -> str | None:
        """None when the master's and every replica's table equal the truth (same lineage and
        version) and name no dead node; else what is wrong."""
        holders = {}
        for node in self.live():
            table = get_json(node, "/v1/routes")
            if table["role"] in ("master", "replica"):
                holders[table["node"]] = table
        masters = [t for t in holders.values() if t["role"] == "master"]
        if len(masters) != 1:
            return f"{len(masters)} masters"
        master = masters[0]
        real = self.truth()
        for name, table in holders.items():
            for function, names in table["routes"].items():
                if set(names) & self.dead:
                    return f"{name} routes {function} to dead {set(names) & self.dead}"
            if table["routes"] != real:
                return f"{name} holds {table['routes']}, truth {real}"
            if (table.get("lineage"), table.get("version")) != (
                master.get("lineage"),
                master.get("version"),
            ):
                return f"{name} at {table.get('version')}, master at {master.get('version')}"
        return self.raw_table_wrong(list(holders), real)

    def raw_table_wrong(self, holders: list[str], real: Routes) -> str | None:
        """What the tables themselves hold, read with gRPC Query (which, unlike /v1/routes,
        hides no run its node's gossip calls dead): every entry must be a run alive now (name
        and epoch), so a dead run's entries are really gone, not only hidden."""
        epochs = {m["name"]: m["epoch"] for m in self.view(self.live()[0])["members"]}
        want = {f: sorted((n, epochs[n]) for n in names) for f, names in real.items()}
        for name in holders:
            rpc = f"{self.nodes[name].host}:{self.lc.gossip_port + 1}"
            with grpc.insecure_channel(rpc) as channel:
                query = channel.unary_unary(
                    method_path("Query"),
                    request_serializer=pb.QueryRequest.SerializeToString,
                    response_deserializer=pb.QueryReply.FromString,
                )
                for function in FUNCTIONS:
                    reply = query(
                        pb.QueryRequest(function=function),
                        metadata=call_metadata(None),
                        timeout=2,
                    )
                    held = sorted((n.node, n.epoch) for n in reply.nodes)
                    if held != want.get(function, []):
                        return (
                            f"{name}'s raw table: {function} -> {held}, want {want.get(function)}"
                        )
        return None

    def wait_right(self, since: float, timeout: float, kill: Kill | None = None) -> float:
        """Seconds from ``since`` until membership agrees and every table is right; also
        notes in ``kill`` when membership alone first agreed."""

        def right() -> bool:
            if self.agreed() is None:
                return False
            if kill is not None and kill.membership_s is None:
                kill.membership_s = time.monotonic() - since
            return self.table_wrong() is None

        wait_for(right, timeout, "membership and tables to be right", self._why)
        elapsed = time.monotonic() - since
        if kill is not None:
            kill.recovery_s = elapsed
        return elapsed

    def _why(self) -> str:
        try:
            return f"agreed={self.agreed()!r}; table: {self.table_wrong()}"
        except (OSError, RuntimeError, KeyError, grpc.RpcError) as exc:
            return repr(exc)

    # -- the exactly-once ledger -----------------------------------------------------------

    def ledger(self) -> Counter[str]:
        """request id -> how many times a function started running it, over every node."""
        runs: Counter[str] = Counter()
        for path in self.ledger_dir.glob("*.ids"):
            runs.update(line for line in path.read_text().splitlines() if line)
        return runs


def wait_for(check: Any, timeout: float, what: str, why: Any = None) -> Any:
    """``eventually`` that also retries gRPC errors (the tables are read over gRPC)."""
    return eventually(check, timeout, what=what, describe=why, retried=(*RETRIED, grpc.RpcError))
