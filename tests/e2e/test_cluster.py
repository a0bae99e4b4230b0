"""Membership and roles with real node processes gossiping on loopback (local preset)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tierfaas.keys import generate_key
from tierfaas.testing.clockshift import clock_shift_env
from tierfaas.testing.cluster import LocalCluster, agreement
from tierfaas.testing.nodes import NodeProcess, http_get
from tierfaas.testing.wait import eventually

pytestmark = pytest.mark.e2e

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"
T = TypeVar("T")


def views(nodes: list[NodeProcess]) -> list[dict[str, Any]]:
    return [LocalCluster.view(node) for node in nodes]


def all_agree(nodes: list[NodeProcess], size: int) -> tuple[Any, ...] | None:
    """The agreement once every node sees ``size`` members, each with its cohort settled (a
    joining run shows ``cohort`` None and may still move ahead of another in rank)."""
    seen_views = views(nodes)
    if any(m["cohort"] is None for view in seen_views for m in view["members"]):
        return None
    seen = {agreement(view) for view in seen_views}
    if len(seen) == 1:
        (only,) = seen
        if only[3] == size:
            return only
    return None


def disagreement(nodes: list[NodeProcess]) -> list[object]:
    """Each node's view as ``all_agree`` judges it, to tell why they did not agree: its
    agreement and the members whose cohort is not settled (or the error reading it)."""
    described: list[object] = []
    for node in nodes:
        try:
            view = LocalCluster.view(node)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            described.append(repr(exc))
            continue
        unsettled = [m["name"] for m in view["members"] if m["cohort"] is None]
        described.append((agreement(view), unsettled))
    return described


def test_seven_nodes_agree_on_master_replicas_and_assignment(tmp_path: Path) -> None:
    with LocalCluster(TESTREL, 7, first_host=20, log_dir=tmp_path) as cluster:
        started = time.monotonic()
        master, replicas, assignment, _ = eventually(
            lambda: all_agree(cluster.nodes, 7),
            5,
            what="seven nodes agreeing",
            describe=lambda: disagreement(cluster.nodes),
        )
        assert time.monotonic() - started < 5
        members = LocalCluster.view(cluster.nodes[0])["members"]
        # Rank 0 is the run that formed the cluster first: the lowest cohort (how late it
        # joined, as the cluster saw it), then the oldest epoch. Under load a run can start
        # earlier yet join later than another (its seeds were not up yet): its cohort decides.
        oldest = min(members, key=lambda m: (m["cohort"], m["epoch"], m["name"]))["name"]
        assert master == oldest
        assert len(replicas) == 3  # ceil(sqrt(7))
        assert len(assignment) == 3 and {r for _, r in assignment} <= set(replicas)
        for node in cluster.nodes:
            assert http_get(f"{node.url}/readyz")[0] == 200

        # kill -9 the master: rank 1 takes over everywhere within 5 s.
        ranked = LocalCluster.view(cluster.nodes[1])["members"]
        rank1 = ranked[1]["name"]
        old_master = next(n for n in cluster.nodes if cluster.name_of(n) == master)
        old_master.kill()
        survivors = [n for n in cluster.nodes if n is not old_master]
        new = eventually(lambda: all_agree(survivors, 6), 5)
        assert new[0] == rank1

        # SIGTERM a worker: the others see it *left* (not dead) within 2 s.
        worker_name = new[2][0][0]
        worker = next(n for n in survivors if cluster.name_of(n) == worker_name)
        worker.signal(signal.SIGTERM)
        began = time.monotonic()
        others = [n for n in survivors if n is not worker]

        def left_everywhere() -> bool:
            for view in views(others):
                gone = [d for d in view["departed"] if d["name"] == worker_name]
                if not gone or gone[-1]["reason"] != "left":
                    return False
            return True

        eventually(left_everywhere, 2.0, interval=0.05)
        assert time.monotonic() - began < 2.0
        assert worker.process is not None and worker.process.wait(10) == 0


def test_a_node_with_another_key_never_joins(tmp_path: Path) -> None:
    key, other = generate_key(), generate_key()
    env = {"TIERFAAS_CLUSTER_KEY": key}
    with LocalCluster(TESTREL, 2, first_host=40, log_dir=tmp_path, env=env) as cluster:
        eventually(lambda: all_agree(cluster.nodes, 2), 5)
        intruder = cluster.add_node(env={"TIERFAAS_CLUSTER_KEY": other})
        time.sleep(2.5)
        for view in views(cluster.nodes[:2]):
            assert cluster.name_of(intruder) not in {m["name"] for m in view["members"]}
        status, body = http_get(f"{intruder.url}/readyz")
        assert status == 503 and b"not joined" in body
        assert LocalCluster.view(intruder)["master"] is None  # not a cluster of one


def test_a_node_whose_seeds_never_answer_stays_not_ready(tmp_path: Path) -> None:
    cluster = LocalCluster(TESTREL, 1, first_host=45, log_dir=tmp_path)
    cluster.seeds = ["127.0.0.46:9"]  # nobody gossips there
    try:
        cluster.start()
        time.sleep(1.0)
        status, body = http_get(f"{cluster.nodes[0].url}/readyz")
        assert status == 503 and b"not joined" in body
        assert LocalCluster.view(cluster.nodes[0])["master"] is None
    finally:
        cluster.close()


def test_a_duplicate_name_exits_non_zero(tmp_path: Path) -> None:
    with LocalCluster(TESTREL, 2, first_host=50, log_dir=tmp_path) as cluster:
        eventually(lambda: all_agree(cluster.nodes, 2), 5)
        name = cluster.name_of(cluster.nodes[1])
        twin = cluster.make_node("127.0.0.53", ["--name", name]).start(wait=False)
        cluster.nodes.append(twin)
        assert twin.process is not None
        assert twin.process.wait(20) == 3
        assert "another live node is named" in twin.log_tail()


def test_paused_master_does_not_take_its_role_back(tmp_path: Path) -> None:
    with LocalCluster(TESTREL, 4, first_host=60, log_dir=tmp_path) as cluster:
        master = eventually(lambda: all_agree(cluster.nodes, 4), 5)[0]
        rank1 = LocalCluster.view(cluster.nodes[0])["members"][1]["name"]
        old = next(n for n in cluster.nodes if cluster.name_of(n) == master)
        old.signal(signal.SIGSTOP)
        try:
            rest = [n for n in cluster.nodes if n is not old]
            new_master = eventually(lambda: all_agree(rest, 3), 6)[0]
        finally:
            old.signal(signal.SIGCONT)
        assert new_master == rank1
        # Back, and seen again by all, but ranked as the youngest: no flapping, ever.
        final = eventually(lambda: all_agree(cluster.nodes, 4), 8)
        assert final[0] == new_master
        for _ in range(15):
            for view in views(cluster.nodes):
                assert view["master"] == new_master
                masters = [m["name"] for m in view["members"] if m["role"] == "master"]
                assert masters == [new_master]
            time.sleep(0.2)


def test_a_node_whose_clock_is_behind_joins_without_taking_the_master_role(
    tmp_path: Path,
) -> None:
    five_minutes_behind = -5 * 60_000
    env = clock_shift_env(five_minutes_behind)
    with LocalCluster(TESTREL, 3, first_host=180, log_dir=tmp_path) as cluster:
        master = eventually(lambda: all_agree(cluster.nodes, 3), 5)[0]
        old_master = next(n for n in cluster.nodes if cluster.name_of(n) == master)
        # Started by hand so the views are watched from its first gossip on.
        late = cluster.make_node(f"{cluster.hosts[0].rsplit('.', 1)[0]}.190", env=env)
        cluster.nodes.append(late.start(wait=False))
        late_name = cluster.name_of(late)
        seen_masters: set[str | None] = set()
        deadline = time.monotonic() + 20
        agreed_at: float | None = None
        # Watch every view while it joins, and 3 s past the moment all four agree.
        while time.monotonic() < deadline:
            for node in cluster.nodes:
                try:
                    view = LocalCluster.view(node)
                except (OSError, RuntimeError):
                    continue  # the new node's HTTP is not up yet
                if view["joined"]:
                    seen_masters.add(view["master"])
            if agreed_at is None and late.process is not None and late.process.poll() is None:
                try:
                    agreed = all_agree(cluster.nodes, 4)
                except (OSError, RuntimeError):
                    agreed = None
                if agreed:
                    agreed_at = time.monotonic()
            if agreed_at is not None and time.monotonic() - agreed_at > 3:
                break
            time.sleep(0.05)
        logs = "\n".join(f"{n.host}: {n.log_tail()}" for n in cluster.nodes)
        assert agreed_at is not None, logs
        assert seen_masters == {master}, logs
        members = {m["name"]: m for m in LocalCluster.view(old_master)["members"]}
        others = [m["epoch"] for name, m in members.items() if name != late_name]
        assert members[late_name]["epoch"] < min(others) - 4 * 60_000  # its epoch is old
        assert members[late_name]["role"] != "master"
        # Not for a moment, on any node (each logs its own role changes).
        assert "-> master" not in late.log_tail(10**6)
        assert "role master ->" not in old_master.log_tail(10**6)


@pytest.mark.serial
def test_cpu_hogs_never_make_a_node_suspect(tmp_path: Path) -> None:
    # Ten seconds is several times what the local preset takes to declare a silent node
    # dead (~1.3 s); TIERFAAS_HOG_SECONDS sets a longer run.
    seconds = float(os.environ.get("TIERFAAS_HOG_SECONDS", "10"))
    with LocalCluster(TESTREL, 3, first_host=70, log_dir=tmp_path) as cluster:
        eventually(lambda: all_agree(cluster.nodes, 3), 5)

        async def hog_everything() -> list[int]:
            async with aiohttp.ClientSession() as session:

                async def hog(node: NodeProcess) -> int:
                    url = f"{node.url}/function/hog"
                    async with session.post(url, data=str(seconds).encode()) as response:
                        return response.status

                # max_instances = 2 per node: six busy loops on two cores, for `seconds`.
                return await asyncio.gather(*(hog(n) for n in cluster.nodes for _ in range(2)))

        assert asyncio.run(hog_everything()) == [200] * 6
        for node in cluster.nodes:
            text = http_get(f"{node.url}/metrics")[1].decode()
            assert 'tierfaas_membership_events_total{event="MemberSuspect"}' not in text
            assert 'tierfaas_membership_events_total{event="MemberDown"}' not in text
        assert all_agree(cluster.nodes, 3)
