"""Whom a node asks where a function is warm (``tierfaas.control.targets``): its replica,
the next live one while its own is suspect, then the master; never a suspect."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tierfaas.cluster.state import MemberView
from tierfaas.control.targets import lookup_targets
from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.topology import Topology, assign_replica, compute_topology

NAMES = [f"n{i:02d}" for i in range(10)]


def members(suspect: frozenset[str] = frozenset()) -> dict[str, MemberInfo]:
    return {
        name: MemberInfo(
            name,
            1000 + i,
            MemberState.SUSPECT if name in suspect else MemberState.ALIVE,
            "127.0.0.1:1",
        )
        for i, name in enumerate(NAMES)
    }


def cluster(suspect: frozenset[str] = frozenset()) -> tuple[Topology, MemberView]:
    runs = members(suspect)
    # A suspect keeps its rank: the topology is the same whoever is suspect.
    return compute_topology(runs.values()), MemberView(runs)


def test_a_worker_asks_its_own_replica_then_the_master() -> None:
    topology, view = cluster()
    worker = topology.workers[0]
    replica = topology.replica_of[worker]
    assert lookup_targets(worker, "worker", topology, view) == (replica, topology.master)


def test_while_its_replica_is_suspect_a_worker_asks_the_next_live_one() -> None:
    topology, _ = cluster()
    worker = topology.workers[0]
    own = topology.replica_of[worker]
    topology, view = cluster(frozenset({own}))
    targets = lookup_targets(worker, "worker", topology, view)
    assert len(targets) == 2 and targets[1] == topology.master
    assert targets[0] in topology.replicas and targets[0] != own
    # The one it would be assigned if its own were gone: the workers of a suspect replica
    # spread over the others by the same rendezvous hashing.
    others = [r for r in topology.replicas if r != own]
    assert targets[0] == assign_replica(worker, others)


def test_with_every_replica_suspect_the_master_alone() -> None:
    topology, _ = cluster()
    topology, view = cluster(frozenset(topology.replicas))
    assert lookup_targets(topology.workers[0], "worker", topology, view) == (topology.master,)


def test_a_suspect_master_is_not_asked() -> None:
    topology, _ = cluster()
    worker = topology.workers[0]
    topology, view = cluster(frozenset({topology.master or ""}))
    assert lookup_targets(worker, "worker", topology, view) == (topology.replica_of[worker],)
    assert lookup_targets(topology.replicas[0], "replica", topology, view) == ()


def test_a_replica_asks_the_master_and_the_master_nobody() -> None:
    topology, view = cluster()
    assert lookup_targets(topology.replicas[0], "replica", topology, view) == (topology.master,)
    assert topology.master is not None
    assert lookup_targets(topology.master, "master", topology, view) == ()


def test_a_node_without_a_role_yet_asks_the_master() -> None:
    topology, view = cluster()
    assert lookup_targets("newcomer", None, topology, view) == (topology.master,)


def test_a_member_missing_from_the_view_is_not_asked() -> None:
    topology, _ = cluster()
    worker = topology.workers[0]
    runs = dict(members())
    del runs[topology.replica_of[worker]]
    del runs[topology.master or ""]
    targets = lookup_targets(worker, "worker", topology, MemberView(runs))
    assert len(targets) == 1 and targets[0] in topology.replicas


@given(st.sets(st.sampled_from(NAMES)), st.sampled_from(NAMES))
def test_never_a_suspect_nor_itself_and_the_master_last(suspect: set[str], me: str) -> None:
    topology, view = cluster(frozenset(suspect))
    role = topology.role_of(me)
    targets = lookup_targets(me, role, topology, view)
    assert not set(targets) & (suspect | {me})
    assert len(set(targets)) == len(targets) <= 2
    if topology.master in targets:
        assert targets[-1] == topology.master
    if role == "worker" and topology.replica_of[me] not in suspect:
        assert targets[0] == topology.replica_of[me]
