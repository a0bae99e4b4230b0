from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tierfaas.cluster import ClusterManager, ClusterState, RoleChange, RunGone
from tierfaas.cluster.messages import RoleSubscriber
from tierfaas.config import Address
from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.testing.clock import FakeClock
from tierfaas.testing.membership import FakeMembership, FakeNetwork


class Cluster:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.net = FakeNetwork(clock, demotion_grace_s=1.5)
        self.managers: dict[str, ClusterManager] = {}
        self.registries: dict[str, CollectorRegistry] = {}

    async def add(
        self, name: str, clock_offset_ms: int = 0, roles: RoleSubscriber | None = None
    ) -> ClusterManager:
        """Starts node ``name`` (its wall clock ``clock_offset_ms`` off); ``roles`` gets its
        role changes from before it joins."""
        self.clock.advance(0.01)  # distinct epochs: start order is rank order
        http = Address("127.0.0.1", 8000 + len(self.managers))
        m: FakeMembership = self.net.add(name, http=http, clock_offset_ms=clock_offset_ms)
        reg = CollectorRegistry()
        mgr = ClusterManager(m, registry=reg, clock=self.clock)
        if roles is not None:
            mgr.subscribe_roles(roles)
        await mgr.start()
        await m.start()
        self.managers[name], self.registries[name] = mgr, reg
        await self.net.settle()
        return mgr

    async def masters(self) -> set[str | None]:
        await self.net.settle()
        return {
            (await mgr.topology()).master
            for n, mgr in self.managers.items()
            if self.net.node(n).status == "running"
        }


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster(FakeClock())
    yield c
    for mgr in c.managers.values():
        await mgr.stop()


async def test_roles_and_snapshot(cluster: Cluster) -> None:
    for n in "abcd":
        await cluster.add(n)
    assert await cluster.masters() == {"a"}
    snap = await cluster.managers["d"].snapshot()
    assert snap["self"] == "d" and snap["master"] == "a"
    rows = {r["name"]: r for r in snap["members"]}
    assert [r["name"] for r in snap["members"]] == ["a", "b", "c", "d"]
    assert rows["a"]["role"] == "master" and rows["b"]["role"] == "replica"
    assert rows["d"]["role"] == "worker" and rows["d"]["replica"] in ("b", "c")
    assert rows["b"]["http"] == "127.0.0.1:8001" and rows["b"]["state"] == "alive"
    assert rows["a"]["epoch"] == cluster.net.node("a").epoch and rows["a"]["version"] == "1"


@pytest.mark.parametrize("how", ["dead", "left"])
async def test_rank_one_takes_over_when_master_goes(cluster: Cluster, how: str) -> None:
    for n in "abc":
        await cluster.add(n)
    changes: asyncio.Queue[RoleChange] = asyncio.Queue()
    cluster.managers["b"].subscribe_roles(changes)
    await cluster.net.settle()
    first = await changes.get()
    assert (first.old, first.new) == (None, "replica")
    if how == "dead":
        cluster.net.kill("a")
    else:
        await cluster.net.node("a").leave()
    assert await cluster.masters() == {"b"}
    change = await asyncio.wait_for(changes.get(), 1)
    assert (change.old, change.new) == ("replica", "master")
    assert change.reason == f"master a {how}"
    assert cluster.managers["b"].role == "master"


async def test_paused_master_does_not_take_its_role_back(cluster: Cluster) -> None:
    for n in "abcd":
        await cluster.add(n)
    calls: list[RoleChange] = []

    async def on_change(change: RoleChange) -> None:
        calls.append(change)

    cluster.managers["b"].subscribe_roles(on_change)
    cluster.net.pause("a")
    assert await cluster.masters() == {"b"}
    cluster.clock.advance(3)
    cluster.net.resume("a")
    assert await cluster.masters() == {"b"}  # a included: it ranks itself by its demotion
    assert cluster.managers["a"].role != "master"
    cluster.clock.advance(5)
    cluster.net.tick()
    assert await cluster.masters() == {"b"}
    await cluster.net.settle()
    await asyncio.sleep(0)
    # b went replica -> master exactly once: no flapping.
    assert [(c.old, c.new) for c in calls] == [(None, "replica"), ("replica", "master")]


async def test_a_joiner_whose_clock_is_behind_never_becomes_master(cluster: Cluster) -> None:
    for n in "abc":
        await cluster.add(n)
    changes: dict[str, list[tuple[str | None, str | None]]] = {n: [] for n in "abcd"}

    def recorder(name: str) -> RoleSubscriber:
        async def record(change: RoleChange) -> None:
            changes[name].append((change.old, change.new))

        return record

    for n in "abc":
        cluster.managers[n].subscribe_roles(recorder(n))
    five_minutes_ago = -5 * 60_000
    await cluster.add("d", clock_offset_ms=five_minutes_ago, roles=recorder("d"))
    d = cluster.net.node("d")
    assert d.epoch < min(cluster.net.node(n).epoch for n in "abc")
    assert await cluster.masters() == {"a"}
    for mgr in cluster.managers.values():
        assert (await mgr.topology()).members == ("a", "b", "c", "d")
    snapshot = await cluster.managers["a"].snapshot()
    assert {r["name"]: r["cohort"] for r in snapshot["members"]} == {"a": 0, "b": 1, "c": 2, "d": 3}
    await asyncio.sleep(0)
    # No role moved anywhere, not even for a moment while d was joining.
    assert changes == {
        "a": [(None, "master")],
        "b": [(None, "replica")],
        "c": [(None, "replica")],
        "d": [(None, None), (None, "worker")],
    }
    # The master goes: the next oldest by cohort takes over, not the run with the oldest epoch.
    cluster.net.kill("a")
    assert await cluster.masters() == {"b"}


async def test_partition_heals_to_the_older_master(cluster: Cluster) -> None:
    for n in "abcd":
        await cluster.add(n)
    cluster.net.partition(["a", "b"], ["c", "d"])
    assert await cluster.masters() == {"a", "c"}
    cluster.net.heal()
    assert await cluster.masters() == {"a", "c"}  # provisional demotion on both sides
    cluster.clock.advance(2)
    cluster.net.tick()
    assert await cluster.masters() == {"a"}


async def test_departed_runs_are_listed_in_the_snapshot(cluster: Cluster) -> None:
    for n in "abc":
        await cluster.add(n)
    mgr = cluster.managers["a"]
    await cluster.net.settle()
    assert (await mgr.snapshot())["departed"] == []
    cluster.net.kill("c")
    await cluster.net.settle()
    snapshot = await mgr.snapshot()
    assert [(d["name"], d["reason"]) for d in snapshot["departed"]] == [("c", "dead")]
    assert "c" not in {m["name"] for m in snapshot["members"]}


async def test_not_joined_means_no_role(cluster: Cluster) -> None:
    m = cluster.net.add("lonely", reachable=False)
    mgr = ClusterManager(m, registry=CollectorRegistry(), clock=cluster.clock)
    await mgr.start()
    await m.start()
    await cluster.net.settle()
    snap = await mgr.snapshot()
    assert mgr.role is None and snap["master"] is None and not snap["joined"]
    assert "no seed" in snap["join_reason"]
    await mgr.stop()


async def test_metrics_present(cluster: Cluster) -> None:
    await cluster.add("a")
    await cluster.add("b")
    await cluster.managers["a"].topology()
    text = generate_latest(cluster.registries["a"]).decode()
    assert "tierfaas_cluster_queue_depth 0.0" in text
    assert 'tierfaas_cluster_role{role="master"} 1.0' in text
    assert 'tierfaas_cluster_role{role="worker"} 0.0' in text
    assert 'tierfaas_cluster_message_seconds_count{message="GetTopology"} 1.0' in text
    assert "tierfaas_cluster_members 2.0" in text


async def test_the_view_holds_the_live_runs_and_suspects_are_not_routable(
    cluster: Cluster,
) -> None:
    for n in "abc":
        await cluster.add(n)
    mgr = cluster.managers["a"]
    gone: list[RunGone] = []
    mgr.watch_runs(gone.append)
    view = mgr.view
    assert sorted(view.runs) == ["a", "b", "c"]
    c = view.endpoint("c")
    assert c is not None and c.epoch == cluster.net.node("c").epoch
    assert str(c.http) == "127.0.0.1:8002" and view.routable(c)

    cluster.net.suspect("c")
    await cluster.net.settle()
    assert gone == [RunGone("c", c.epoch, "suspect")]
    assert mgr.view.holds(c) and not mgr.view.routable(c)
    assert view.routable(c)  # a published view never changes: a new one replaces it

    cluster.net.kill("c")
    await cluster.net.settle()
    assert gone[-1] == RunGone("c", c.epoch, "dead") and gone[-1].down
    assert mgr.view.endpoint("c") is None and not mgr.view.holds(c)


async def test_a_restarted_run_replaces_the_old_one_in_the_view(cluster: Cluster) -> None:
    for n in "ab":
        await cluster.add(n)
    old = cluster.managers["a"].view.endpoint("b")
    assert old is not None
    cluster.net.kill("b")
    b = cluster.net.add("b", http=Address("127.0.0.1", 8010))  # b restarts: a new run
    await b.start()
    await cluster.net.settle()
    view = cluster.managers["a"].view
    new = view.endpoint("b")
    assert new is not None and new.epoch > old.epoch
    assert not view.holds(old)  # a route of the old run is no route to the new one


def test_state_view_keeps_the_newest_run_of_a_name() -> None:
    state = ClusterState("a")
    older = MemberInfo("b", 1, MemberState.ALIVE, "x", rpc=Address("127.0.0.1", 9001))
    newer = MemberInfo("b", 2, MemberState.SUSPECT, "y", rpc=Address("127.0.0.1", 9002))
    state.members = {older.key: older, newer.key: newer}  # a restart seen before the leave
    view = state.view()
    assert view.get("b") == newer and view.rpc_of("b") == "127.0.0.1:9002"
    assert view.get(None) is None and view.rpc_of("nobody") is None


async def test_the_next_worker_in_line_hears_that_it_is_the_standby(cluster: Cluster) -> None:
    for n in "abcdef":  # master a, replicas b c d, workers e f: e is the standby
        await cluster.add(n)
    changes: asyncio.Queue[RoleChange] = asyncio.Queue()
    cluster.managers["f"].subscribe_roles(changes)
    await cluster.net.settle()
    first = await changes.get()
    assert first.new == "worker" and first.topology.standby == "e"
    cluster.net.kill("e")  # f is next in line now; its role, master and replica stay
    await cluster.masters()
    change = await asyncio.wait_for(changes.get(), 1)
    assert (change.old, change.new) == ("worker", "worker")
    assert change.topology.standby == "f" and change.topology.replicas == ("b", "c", "d")
