"""The majority guard (issue 17.3): a master launches or terminates nodes only while it
reaches more than half of the membership it knew."""

from __future__ import annotations

from tierfaas.deploy.quorum import MajorityGuard
from tierfaas.membership.base import MemberInfo, MemberState

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


def view(**states: MemberState) -> list[MemberInfo]:
    return [MemberInfo(name, 1, state, "x") for name, state in states.items()]


def test_a_whole_cluster_holds_a_majority() -> None:
    guard = MajorityGuard("n1")
    majority = guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE, n4=ALIVE, n5=ALIVE))
    assert majority.held and (majority.reached, majority.known) == (5, 5)


def test_a_master_cut_off_with_one_peer_of_five_has_no_majority() -> None:
    guard = MajorityGuard("n1")
    guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE, n4=ALIVE, n5=ALIVE))
    # The cut: first suspect (not reached), then dead, then forgotten by gossip.
    assert not guard.observe(view(n1=ALIVE, n2=ALIVE, n3=SUSPECT, n4=SUSPECT, n5=SUSPECT)).held
    assert not guard.observe(view(n1=ALIVE, n2=ALIVE, n3=DEAD, n4=DEAD, n5=DEAD)).held
    majority = guard.observe(view(n1=ALIVE, n2=ALIVE))
    assert not majority.held and str(majority) == "2 of 5 known members reachable"


def test_the_majority_side_holds_one() -> None:
    guard = MajorityGuard("n3")
    guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE, n4=ALIVE, n5=ALIVE))
    assert guard.observe(view(n1=DEAD, n2=DEAD, n3=ALIVE, n4=ALIVE, n5=ALIVE)).held


def test_suspects_are_not_reached() -> None:
    guard = MajorityGuard("n1")
    majority = guard.observe(view(n1=ALIVE, n2=SUSPECT, n3=SUSPECT))
    assert not majority.held and majority.suspect == 2


def test_nodes_that_left_or_that_the_provider_saw_go_shrink_the_membership() -> None:
    guard = MajorityGuard("n1")
    guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE, n4=ALIVE))
    # A rollout drained n2 and n3 (they said goodbye); n4's process exited (the provider
    # lists it no more): none of them is cut off, so none counts against the majority.
    majority = guard.observe(view(n1=ALIVE, n2=LEFT, n3=LEFT, n4=DEAD), gone=["n4"])
    assert majority.held and majority.known == 1


def test_the_provider_cannot_forget_a_node_that_answers() -> None:
    guard = MajorityGuard("n1")
    guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE))
    assert guard.observe(view(n1=ALIVE, n2=ALIVE, n3=DEAD), gone=["n2"]).known == 3


def test_a_rollout_of_one_node_keeps_its_majority() -> None:
    # One node, one canary; the canary takes the table and drains the old node.
    guard = MajorityGuard("canary")
    assert guard.observe(view(old=ALIVE, canary=ALIVE)).held
    assert guard.observe(view(old=LEFT, canary=ALIVE)).held
    assert guard.observe(view(canary=ALIVE)).held  # and the next rollout can launch


def test_nodes_the_other_side_launched_count_against_a_cut_off_master() -> None:
    # The cut-off master knew three nodes; the majority then drained two of them (their
    # processes exited) and launched two of the new release, which this master never saw.
    guard = MajorityGuard("n1")
    guard.observe(view(n1=ALIVE, n2=ALIVE, n3=ALIVE), provided=["n1", "n2", "n3"])
    majority = guard.observe(view(n1=ALIVE, n2=DEAD, n3=DEAD), ["n1", "n4", "n5"], ["n2", "n3"])
    assert not majority.held and (majority.reached, majority.known) == (1, 3)


def test_nodes_this_master_launched_count_once_they_joined() -> None:
    # A two-node cluster whose two canaries never join: the master may still abort them.
    guard = MajorityGuard("n1")
    starting = ["n1", "n2", "c1", "c2"]
    majority = guard.observe(view(n1=ALIVE, n2=ALIVE), starting, launched=["c1", "c2"])
    assert majority.held and majority.known == 2
    # Once joined, a node is a member like any other.
    majority = guard.observe(
        view(n1=ALIVE, n2=ALIVE, c1=ALIVE, c2=SUSPECT), starting, (), ["c1", "c2"]
    )
    assert (majority.reached, majority.known) == (3, 4)
