"""The warm routing table with real node processes on loopback: master batching, replica
streams, keep-alive reaping, failover, replica restarts, cut streams and authentication.

"The truth" is what the nodes actually run: for each function, the nodes whose
``GET /v1/functions`` shows ``instances > 0``. The tables are read from ``GET /v1/routes``.
Hosts 127.0.0.120-189 are this file's.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.auth import call_metadata, credential
from tierfaas.control.constants import AUTH_HEADER as HEADER
from tierfaas.control.lane import QueryLaneClient
from tierfaas.control.rpc import method_path
from tierfaas.keys import generate_key, parse_key
from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

# These tests place functions on chosen nodes by calling them there first.
LOCAL_STARTS = ["--cold-starts", "local"]

MANYFNS = Path(__file__).parent.parent / "fixtures" / "manyfns"
T = TypeVar("T")
Routes = dict[str, list[str]]


def get_json(node: NodeProcess, path: str) -> Any:
    status, body = http_get(f"{node.url}{path}", timeout=2.0)
    if status != 200:
        raise RuntimeError(f"{node.url}{path} answered {status}: {body[:200]!r}")
    return json.loads(body)


def invoke(node: NodeProcess, function: str) -> str:
    """POSTs to ``function`` on ``node`` (no routing headers); the node that ran it."""
    request = urllib.request.Request(f"{node.url}/function/{function}", data=b"x", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return str(response.headers["X-Tierfaas-Served-By"])


def truth(nodes: list[NodeProcess]) -> Routes:
    """function -> the nodes where it has an instance right now, from each node itself."""
    warm: dict[str, list[str]] = {}
    for node in nodes:
        listing = get_json(node, "/v1/functions")
        for function in listing["functions"]:
            if function["instances"] > 0:
                warm.setdefault(function["name"], []).append(listing["node"])
    return {f: sorted(names) for f, names in sorted(warm.items())}


def tables(nodes: list[NodeProcess]) -> dict[str, dict[str, Any]]:
    """The /v1/routes of every master and replica among ``nodes``, by role ("master", "r:NAME")."""
    found: dict[str, dict[str, Any]] = {}
    for node in nodes:
        view = get_json(node, "/v1/routes")
        if view["role"] == "master":
            found["master"] = view
        elif view["role"] == "replica":
            found[f"r:{view['node']}"] = view
    return found


def converged(nodes: list[NodeProcess], replicas: int) -> dict[str, Any]:
    """The master's view once the master and ``replicas`` replicas all hold exactly the truth,
    at the same version of the same lineage; raises AssertionError (with the difference)."""
    views = tables(nodes)
    real = truth(nodes)
    assert "master" in views, f"no master among {sorted(views)}"
    master = views["master"]
    assert master["routes"] == real, diff(master["routes"], real)
    held = [v for k, v in views.items() if k.startswith("r:")]
    assert len(held) == replicas, f"{len(held)} replicas, not {replicas}"
    for view in held:
        assert view["loaded"], f"{view['node']} holds no snapshot yet"
        position = (view["lineage"], view["version"])
        assert position == (master["lineage"], master["version"]), (view["node"], position)
        assert view["routes"] == master["routes"], diff(view["routes"], master["routes"])
    return dict(master)


def diff(got: Routes, want: Routes) -> str:
    pairs = {f: (got.get(f), want.get(f)) for f in sorted(set(got) | set(want))}
    wrong = {f: pair for f, pair in pairs.items() if pair[0] != pair[1]}
    return f"(got, want): {wrong}"


def formed(nodes: list[NodeProcess], size: int) -> tuple[Any, ...]:
    """Waits until every node agrees on master, replicas and assignment; the agreement."""

    def agree() -> tuple[Any, ...]:
        seen = {agreement(LocalCluster.view(n)) for n in nodes}
        assert len(seen) == 1, seen
        (only,) = seen
        assert only[3] == size, only
        return only

    # The formation is the setup here, not the subject (tests/e2e/test_cluster.py times it):
    # 7 nodes joining on a 2-core machine that also runs another test worker agreed on the
    # replica assignment after more than 8 s once.
    return eventually(agree, 20)


def node_named(cluster: LocalCluster, name: str) -> NodeProcess:
    return next(n for n in cluster.alive_nodes() if cluster.name_of(n) == name)


class Warmer(threading.Thread):
    """Warms ``functions`` one after another, round-robin over ``nodes``, in the background."""

    def __init__(self, nodes: list[NodeProcess], functions: list[str], pause_s: float) -> None:
        super().__init__(daemon=True)
        self.nodes, self.functions, self.pause_s = nodes, functions, pause_s
        self.done: list[str] = []
        self.errors: list[tuple[str, str]] = []

    def run(self) -> None:
        for i, function in enumerate(self.functions):
            try:
                invoke(self.nodes[i % len(self.nodes)], function)
                self.done.append(function)
            except OSError as exc:  # a call during the failover may fail: the table may not
                self.errors.append((function, repr(exc)))
            time.sleep(self.pause_s)


# -- tables agree with the truth ---------------------------------------------------------------


def test_forty_functions_on_seven_nodes_every_table_equals_the_truth_within_1s(
    tmp_path: Path,
) -> None:
    with LocalCluster(
        MANYFNS, 7, first_host=120, log_dir=tmp_path, extra_args=LOCAL_STARTS
    ) as cluster:
        _, replicas, _, _ = formed(cluster.nodes, 7)
        assert len(replicas) == 3
        eventually(lambda: all(v["loaded"] for v in tables(cluster.nodes).values()), 3)
        expected: Routes = {}
        for i in range(40):
            node = cluster.nodes[i % 7]
            function = f"f{i:02d}"
            # Nothing else runs the function yet: the node that is called runs it, cold.
            assert invoke(node, function) == cluster.name_of(node)
            expected[function] = [cluster.name_of(node)]
        last_call = time.monotonic()
        master = eventually(lambda: converged(cluster.nodes, 3), 1.0, interval=0.02)
        elapsed = time.monotonic() - last_call
        print(f"40 functions on every table {elapsed * 1000:.0f} ms after the last call")
        assert master["routes"] == expected
        assert elapsed < 1.0


def test_an_instance_reaped_by_keep_alive_leaves_every_table_within_1s(tmp_path: Path) -> None:
    with LocalCluster(
        MANYFNS, 4, first_host=130, log_dir=tmp_path, extra_args=LOCAL_STARTS
    ) as cluster:
        _, replicas, assignment, _ = formed(cluster.nodes, 4)
        assert len(replicas) == 2 and len(assignment) == 1
        worker = node_named(cluster, assignment[0][0])
        assert invoke(worker, "quick_reap") == cluster.name_of(worker)  # keep_alive_s = 0.5

        def warm_in_every_table() -> Any:
            # Each call restarts the 0.5 s keep-alive: the function stays warm until every
            # table holds it, however slowly a loaded machine lets the checks run.
            invoke(worker, "quick_reap")
            return converged(cluster.nodes, 2)["routes"].get("quick_reap")

        eventually(warm_in_every_table, 5.0, 0.02)

        def reaped() -> bool:
            listing = get_json(worker, "/v1/functions")["functions"]
            return bool(next(f for f in listing if f["name"] == "quick_reap")["instances"] == 0)

        # keep-alive 0.5 s, checked by the reaper every 1 s (no flag changes that interval).
        eventually(reaped, 3.0, interval=0.02)
        gone_at = time.monotonic()

        def gone_everywhere() -> bool:
            views = tables(cluster.nodes)
            assert len(views) == 3
            return all("quick_reap" not in v["routes"] for v in views.values())

        eventually(gone_everywhere, 1.0, interval=0.02)
        elapsed = time.monotonic() - gone_at
        print(f"reaped instance gone from every table {elapsed * 1000:.0f} ms after the reap")
        assert elapsed < 1.0
        converged(cluster.nodes, 2)


# -- failover ----------------------------------------------------------------------------------


def grpc_query(rpc: str, key: bytes | None, functions: list[str]) -> Routes:
    """The raw table of the node at ``rpc`` (gRPC Query: no liveness filter applied)."""
    with grpc.insecure_channel(rpc) as channel:
        query = channel.unary_unary(
            method_path("Query"),
            request_serializer=pb.QueryRequest.SerializeToString,
            response_deserializer=pb.QueryReply.FromString,
        )
        found: Routes = {}
        for function in functions:
            reply = query(
                pb.QueryRequest(function=function), metadata=call_metadata(key), timeout=2
            )
            if reply.nodes:
                found[function] = sorted(n.node for n in reply.nodes)
        return found


def test_kill_9_master_while_registrations_stream_in(tmp_path: Path) -> None:
    with LocalCluster(
        MANYFNS, 7, first_host=140, log_dir=tmp_path, extra_args=LOCAL_STARTS
    ) as cluster:
        old_master, _, _, _ = formed(cluster.nodes, 7)
        for i in range(14):  # two functions warm on every node, the master included
            invoke(cluster.nodes[i % 7], f"f{i:02d}")
        eventually(lambda: converged(cluster.nodes, 3), 3.0)
        victim = node_named(cluster, old_master)
        survivors = [n for n in cluster.nodes if n is not victim]
        warmer = Warmer(survivors, [f"f{i}" for i in range(40, 70)], pause_s=0.03)
        warmer.start()
        eventually(lambda: len(warmer.done) >= 8, 5, interval=0.01)
        victim.kill()
        killed_at = time.monotonic()
        try:
            warmer.join(timeout=4.0)
            assert not warmer.is_alive()

            def new_master_holds_the_truth() -> dict[str, Any]:
                master = tables(survivors)["master"]
                assert master["node"] != old_master
                assert master["routes"] == truth(survivors), diff(
                    master["routes"], truth(survivors)
                )
                return master

            remaining = 5.0 - (time.monotonic() - killed_at)
            master = eventually(new_master_holds_the_truth, remaining)
            elapsed = time.monotonic() - killed_at
        finally:
            warmer.join(timeout=5.0)
        print(f"new master holds the truth {elapsed:.2f} s after kill -9 (errors {warmer.errors})")
        assert elapsed < 5.0
        assert set(warmer.done) <= set(master["routes"])  # every call that ran is there
        assert all(old_master not in names for names in master["routes"].values())
        # The table itself, not only the view (which hides dead runs), lost the dead node.
        rpc = f"{node_named(cluster, master['node']).host}:{cluster.gossip_port + 1}"
        everything = [f"f{i:02d}" for i in range(14)] + [f"f{i}" for i in range(40, 70)]
        assert grpc_query(rpc, None, everything) == truth(survivors)
        eventually(lambda: converged(survivors, 3), 2.0)


def test_after_a_failover_the_old_replicas_resume_with_no_snapshot(tmp_path: Path) -> None:
    """The promoted replica keeps its copy and logs the fork: the other replicas, and the
    standby (the worker next in line, which becomes a replica), held the same version of the
    old lineage and resume with the fork and the new master's deltas: no snapshot."""
    args = ["--replicas", "3"]  # master, three replicas, one worker (the standby)
    with LocalCluster(
        MANYFNS, 5, first_host=184, log_dir=tmp_path, extra_args=[*args, *LOCAL_STARTS]
    ) as cluster:
        old_master, replicas, assignment, _ = formed(cluster.nodes, 5)
        ((standby, _),) = assignment  # the one worker
        for i in range(10):
            invoke(cluster.nodes[i % 5], f"f{i:02d}")
        before = eventually(lambda: converged(cluster.nodes, 3), 3.0)

        def standby_holds_the_table() -> bool:
            view = get_json(node_named(cluster, standby), "/v1/routes")
            assert view["role"] == "worker" and view["loaded"], view
            assert (view["lineage"], view["version"]) == (before["lineage"], before["version"])
            return True

        # A standby with no copy subscribes STANDBY_SNAPSHOT_DELAY_S (10 s) after it became one.
        eventually(standby_holds_the_table, 20.0)
        victim = node_named(cluster, old_master)
        survivors = [n for n in cluster.nodes if n is not victim]
        victim.kill()

        def new_master_and_replicas_agree() -> dict[str, Any]:
            view = converged(survivors, 3)
            assert view["node"] != old_master and view["lineage"] != before["lineage"]
            return view

        after = eventually(new_master_and_replicas_agree, 10.0)
        new_log = node_named(cluster, after["node"]).log_tail(10_000_000)
        resumed = set(re.findall(r"replica (\S+) resumes across a fork", new_log))
        snapshots = set(re.findall(r"replica (\S+) gets a snapshot", new_log))
        now = {key[2:] for key in tables(survivors) if key.startswith("r:")}
        assert len(now) == 3 and now - set(replicas) == {standby}, (now, replicas)
        assert now <= resumed and not now & snapshots, (now, resumed, snapshots)


# -- replicas: restart, cut stream -------------------------------------------------------------


def subscriptions(node: NodeProcess, replica: str) -> list[int]:
    """The from_version of every Subscribe ``replica`` made to ``node`` (from its log)."""
    pattern = rf"replica {re.escape(replica)} subscribed from version (\d+)"
    return [int(v) for v in re.findall(pattern, node.log_tail(10_000_000))]


def test_a_replica_killed_and_restarted_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    args = ["--replicas", "3"]  # every node but the master is a replica
    with LocalCluster(
        MANYFNS, 4, first_host=150, log_dir=tmp_path, extra_args=[*args, *LOCAL_STARTS]
    ) as cluster:
        master_name, replicas, _, _ = formed(cluster.nodes, 4)
        assert len(replicas) == 3
        master = node_named(cluster, master_name)
        victim = node_named(cluster, replicas[1])
        name = cluster.name_of(victim)
        lost = set()
        for i in range(8):
            if invoke(cluster.nodes[i % 4], f"f{i:02d}") == name:
                lost.add(f"f{i:02d}")
        assert len(lost) == 2
        eventually(lambda: converged(cluster.nodes, 3), 3.0)

        victim.kill()
        others = [n for n in cluster.nodes if n is not victim]
        formed(others, 3)  # seen dead by everyone: the name is free again
        for i in range(8, 20):  # changes the victim never saw
            invoke(others[i % 3], f"f{i:02d}")
        eventually(lambda: converged(others, 2), 3.0)

        restarted = cluster.make_node(victim.host)
        cluster.nodes[cluster.nodes.index(victim)] = restarted
        restarted.start()
        assert cluster.name_of(restarted) == name
        began = time.monotonic()
        formed(cluster.nodes, 4)
        view = eventually(lambda: converged(cluster.nodes, 3), 5.0)
        print(f"restarted replica caught up {time.monotonic() - began:.2f} s after healthy")
        mine = get_json(restarted, "/v1/routes")
        assert mine["role"] == "replica" and mine["loaded"]
        assert (mine["version"], mine["lineage"]) == (view["version"], view["lineage"])
        # What the victim ran died with its first run; everything else is there.
        assert set(mine["routes"]) == {f"f{i:02d}" for i in range(20)} - lost
        assert subscriptions(master, name)[-1] == 0  # a fresh process: a snapshot
        assert master_name == view["node"]


def _hex_addresses(host: str, port: int) -> set[str]:
    """``host:port`` as /proc/net/tcp (IPv4) and tcp6 (IPv4-mapped, as gRPC uses) write it."""
    ip = socket.inet_aton(host)[::-1].hex().upper()
    return {f"{ip}:{port:04X}", f"0000000000000000FFFF0000{ip}:{port:04X}"}


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    got = int(libc.syscall(438, pidfd, fd, 0))  # SYS_pidfd_getfd (Linux >= 5.6)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return got


def cut_connections(pid: int, host: str, port: int) -> int:
    """Shuts down every established TCP connection of process ``pid`` to ``host:port`` (a
    copy of its socket, taken with pidfd_getfd, shut down both ways: the process sees the
    peer hang up). Returns how many were cut."""
    remote = _hex_addresses(host, port)
    inodes = set()
    for kind in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{kind}") as table:
            for line in list(table)[1:]:
                fields = line.split()
                if fields[2] in remote and fields[3] == "01":  # ESTABLISHED
                    inodes.add(fields[9])
    cut = 0
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                with socket.socket(fileno=_pidfd_getfd(pidfd, int(fd))) as copy:
                    copy.shutdown(socket.SHUT_RDWR)
                cut += 1
    finally:
        os.close(pidfd)
    return cut


@pytest.fixture
def can_cut() -> None:
    if not hasattr(os, "pidfd_open"):
        pytest.skip("needs pidfd_open")
    with socket.socket() as probe:
        pidfd = os.pidfd_open(os.getpid())
        try:
            os.close(_pidfd_getfd(pidfd, probe.fileno()))
        except OSError as exc:
            pytest.skip(f"pidfd_getfd is not available here: {exc}")
        finally:
            os.close(pidfd)


def test_a_replica_whose_stream_is_cut_resumes_without_losing_a_delta(
    tmp_path: Path, can_cut: None
) -> None:
    args = ["--replicas", "2"]
    with LocalCluster(
        MANYFNS, 3, first_host=160, log_dir=tmp_path, extra_args=[*args, *LOCAL_STARTS]
    ) as cluster:
        master_name, replicas, _, _ = formed(cluster.nodes, 3)
        master, replica = node_named(cluster, master_name), node_named(cluster, replicas[0])
        (other,) = [n for n in cluster.nodes if n not in (master, replica)]
        eventually(lambda: converged(cluster.nodes, 2), 2.0)
        name = cluster.name_of(replica)
        before = subscriptions(master, name)
        assert before
        # One delta per batch window while the stream is cut and restored.
        warmer = Warmer([master, other], [f"f{i:02d}" for i in range(40)], pause_s=0.04)
        warmer.start()
        try:
            eventually(lambda: len(warmer.done) >= 10, 5, interval=0.01)
            cuts = 0
            for _ in range(3):  # cut again and again, while deltas stream
                cuts += cut_connections(replica.pid, master.host, cluster.gossip_port + 1)
                time.sleep(0.3)
            warmer.join(timeout=10.0)
        finally:
            warmer.join(timeout=10.0)
        assert cuts >= 2 and not warmer.errors
        view = eventually(lambda: converged(cluster.nodes, 2), 2.0)
        assert len(view["routes"]) == 40 and view["version"] >= 10
        resumed = subscriptions(master, name)[len(before) :]
        print(f"{cuts} cuts; re-subscribed from versions {resumed}; master at {view['version']}")
        # Re-subscribed where it stopped (a resume from the delta log, not a new snapshot).
        assert len(resumed) >= 2 and all(v > 0 for v in resumed)


# -- authentication and bad input ---------------------------------------------------------------


def status_of(call: Any, body: bytes, metadata: Any) -> grpc.StatusCode:
    """The status a raw unary (or server-streaming, read to the end) call ends with."""
    try:
        result = call(body, metadata=metadata, timeout=5)
        if not isinstance(result, bytes):
            list(result)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@contextmanager
def keyed_cluster(tmp_path: Path, first_host: int) -> Iterator[tuple[LocalCluster, bytes]]:
    key = generate_key()
    env = {"TIERFAAS_CLUSTER_KEY": key}
    with LocalCluster(
        MANYFNS, 2, first_host=first_host, log_dir=tmp_path, env=env, extra_args=LOCAL_STARTS
    ) as cluster:
        yield cluster, parse_key(key)


def test_calls_without_the_credential_or_with_garbage_are_refused(tmp_path: Path) -> None:
    with keyed_cluster(tmp_path, 170) as (cluster, key):
        formed(cluster.nodes, 2)
        node = cluster.nodes[1]
        invoke(node, "f00")
        eventually(lambda: converged(cluster.nodes, 1)["routes"].get("f00"), 2.0)
        rpc = f"{node.host}:{cluster.gossip_port + 1}"
        good = pb.QueryRequest(function="f00").SerializeToString()
        wrong = ((HEADER, credential(parse_key(generate_key()))),)
        right = call_metadata(key)
        with grpc.insecure_channel(rpc) as channel:
            # Raw bytes both ways (no serializers): what any peer could send.
            query: Any = channel.unary_unary(method_path("Query"))
            register: Any = channel.unary_unary(method_path("Register"))
            subscribe: Any = channel.unary_stream(method_path("Subscribe"))
            unauthenticated = grpc.StatusCode.UNAUTHENTICATED
            for metadata in ((), wrong, ((HEADER, ""),)):
                assert status_of(query, good, metadata) == unauthenticated
                assert status_of(register, b"", metadata) == unauthenticated
                assert status_of(subscribe, b"", metadata) == unauthenticated
            garbage = [
                b"\xff" * 64,  # wire type 7: not protobuf
                b"\x0a\xff\xff\xff\xff\x0f",  # a string field longer than the message
                pb.QueryRequest(function="../etc").SerializeToString(),  # not a valid name
                b"\x0a" + b"\x80\x80\x80\x02" + b"a" * (4 * 1024 * 1024),  # over the 4 MiB limit
            ]
            for body in garbage:
                assert status_of(query, body, right) == grpc.StatusCode.INVALID_ARGUMENT, body[:8]
                # ... and the server keeps serving, right away.
                reply = pb.QueryReply.FromString(query(good, metadata=right, timeout=2))
                assert [n.node for n in reply.nodes] == [cluster.name_of(node)]
        assert http_get(f"{node.url}/healthz")[0] == 200
        assert invoke(cluster.nodes[0], "f00") == cluster.name_of(node)  # routed by the table

        async def lane(with_key: bytes) -> list[str]:
            client = QueryLaneClient(
                Address(node.host, cluster.gossip_port + 2), key=with_key, timeout_s=1.0
            )
            try:
                return [r.name for r in (await client.query("f00")).routes]
            finally:
                await client.close()

        with pytest.raises((ConnectionError, TimeoutError)):
            asyncio.run(lane(parse_key(generate_key())))
        assert asyncio.run(lane(key)) == [cluster.name_of(node)]
