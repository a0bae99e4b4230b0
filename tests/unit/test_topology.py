from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.topology import (
    MAX_COHORT,
    UNRANKED_COHORT,
    Topology,
    assign_replica,
    compute_topology,
    joining_cohort,
    next_cohort,
    rank_cohorts,
    rank_key,
    replica_count,
)


def member(
    name: str,
    epoch: int,
    state: MemberState = MemberState.ALIVE,
    demoted_since: int | None = None,
    cohort: int | None = None,
    pending: bool = False,
) -> MemberInfo:
    return MemberInfo(
        name,
        epoch,
        state,
        "127.0.0.1:1",
        demoted_since=demoted_since,
        cohort=cohort,
        cohort_pending=pending,
    )


def view(n: int) -> list[MemberInfo]:
    # Reversed on purpose: the input order must not matter.
    return [member(f"n{i:03d}", 1000 + i) for i in reversed(range(n))]


@pytest.mark.parametrize(
    ("n", "replicas", "workers"),
    [(1, 0, 0), (2, 1, 0), (3, 2, 0), (4, 2, 1), (10, 4, 5), (100, 10, 89)],
)
def test_roles_by_size(n: int, replicas: int, workers: int) -> None:
    topo = compute_topology(view(n))
    assert topo.master == "n000"
    assert topo.members[0] == "n000"
    assert topo.replicas == tuple(f"n{i:03d}" for i in range(1, 1 + replicas))
    assert len(topo.workers) == workers
    assert set(topo.replica_of) == set(topo.workers)
    assert set(topo.replica_of.values()) <= set(topo.replicas)
    assert topo.role_of("n000") == "master"
    if n > 1:
        assert topo.role_of("n001") == "replica"
    if workers:
        assert topo.role_of(topo.workers[0]) == "worker"
    assert topo.role_of("nobody") is None


def test_empty_view_has_no_master() -> None:
    topo = compute_topology([])
    assert topo.master is None
    assert topo.members == ()


def test_fixed_replica_policy_is_capped() -> None:
    assert replica_count(10, 3) == 3
    assert replica_count(3, 5) == 2
    assert replica_count(1, 5) == 0
    with pytest.raises(ValueError):
        replica_count(10, 0)
    with pytest.raises(ValueError):
        replica_count(10, "many")  # type: ignore[arg-type]


def test_sqrt_matches_ceil() -> None:
    for n in range(2, 2000):
        assert replica_count(n) == min(math.ceil(math.sqrt(n)), n - 1)


def test_epoch_ties_break_by_name() -> None:
    topo = compute_topology([member("b", 5), member("a", 5)])
    assert topo.master == "a"


def test_dead_and_left_are_not_ranked() -> None:
    topo = compute_topology(
        [member("a", 1, MemberState.DEAD), member("b", 2, MemberState.LEFT), member("c", 3)]
    )
    assert topo.master == "c"
    assert topo.members == ("c",)


def test_suspect_keeps_its_rank() -> None:
    members = view(10)
    before = compute_topology(members)
    members = [replace(m, state=MemberState.SUSPECT) if m.name == "n000" else m for m in members]
    after = compute_topology(members)
    assert after == before


def test_demoted_run_ranks_by_its_demotion() -> None:
    a = member("a", 100, demoted_since=500)
    b = member("b", 200)
    c = member("c", 900)
    topo = compute_topology([a, b, c])
    assert topo.members == ("b", "a", "c")
    assert rank_key(a) == (0, 0, 0, 500, 100, "a")
    # A "since" older than the epoch (forged or skewed) cannot promote a run.
    assert rank_key(member("x", 100, demoted_since=5)) == (0, 0, 0, 100, 100, "x")


def test_newest_epoch_of_a_name_wins() -> None:
    topo = compute_topology([member("a", 1), member("a", 50), member("b", 10)])
    assert topo.members == ("b", "a")


def test_assignment_is_a_stable_hash() -> None:
    # Fixed values: the same in every process and every Python version (no hash()).
    reps = ["r1", "r2", "r3"]
    got = [assign_replica(f"w{i}", reps) for i in range(6)]
    assert got == [assign_replica(f"w{i}", list(reversed(reps))) for i in range(6)]
    assert len(set(got)) > 1
    with pytest.raises(ValueError):
        assign_replica("w", [])


names = st.lists(
    st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8), unique=True, max_size=60
)
states = st.sampled_from(list(MemberState))


@st.composite
def views(draw: st.DrawFn) -> list[MemberInfo]:
    out = []
    for name in draw(names):
        epoch = draw(st.integers(min_value=1, max_value=50))
        since = draw(st.none() | st.integers(min_value=1, max_value=100))
        cohort = draw(st.none() | st.integers(min_value=0, max_value=5))
        out.append(member(name, epoch, draw(states), since, cohort, draw(st.booleans())))
    return out


@given(views())
def test_property_one_master_and_every_worker_one_live_replica(members: list[MemberInfo]) -> None:
    topo = compute_topology(members)
    live = {m.name for m in members if m.state.live}
    assert set(topo.members) == live
    assert (topo.master is None) == (not live)
    roles = [topo.role_of(n) for n in topo.members]
    assert roles.count("master") == (1 if live else 0)
    assert len(topo.replicas) == replica_count(len(live))
    for w in topo.workers:
        assert topo.replica_of[w] in topo.replicas
        assert topo.replica_of[w] in live
    assert set(topo.replicas) | set(topo.workers) | {topo.master} - {None} == live


@given(views())
def test_property_same_view_any_order_same_topology(members: list[MemberInfo]) -> None:
    assert compute_topology(members) == compute_topology(list(reversed(members)))


@given(
    st.lists(st.text(min_size=1, max_size=6), unique=True, min_size=2, max_size=12),
    st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=80),
    st.data(),
)
def test_property_removing_a_replica_moves_only_its_workers(
    replicas: list[str], workers: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(replicas))
    rest = [r for r in replicas if r != gone]
    for w in workers:
        before = assign_replica(w, replicas)
        after = assign_replica(w, rest)
        if before != gone:
            assert after == before


@given(views(), st.data())
def test_property_losing_a_replica_member_moves_few_workers(
    members: list[MemberInfo], data: st.DataObject
) -> None:
    members = [replace(m, state=MemberState.ALIVE) for m in members]
    if data.draw(st.booleans()):
        # Every run of one release: all with cohorts, or all without. (A run of a release
        # before cohorts ranks by start among the cohorts, so a departure may move it, as
        # its own release would.)
        members = [m if m.cohort is not None else replace(m, cohort=0) for m in members]
    else:
        members = [replace(m, cohort=None, cohort_pending=False) for m in members]
    before = compute_topology(members, replicas=3)
    if not before.replicas:
        return
    gone = data.draw(st.sampled_from(before.replicas))
    after = compute_topology([m for m in members if m.name != gone], replicas=3)
    promoted = set(after.replicas) - set(before.replicas)
    for w, r in before.replica_of.items():
        if w in after.replica_of and after.replica_of[w] != r:
            # Only the departed replica's workers, or those the promoted one takes, move.
            assert r == gone or after.replica_of[w] in promoted


@given(views())
def test_property_suspects_keep_rank(members: list[MemberInfo]) -> None:
    alive = [replace(m, state=MemberState.ALIVE) if m.state.live else m for m in members]
    suspect = [replace(m, state=MemberState.SUSPECT) if m.state.live else m for m in members]
    assert compute_topology(alive) == compute_topology(suspect)


def test_a_handed_over_generation_outranks_older_nodes_with_its_whole_release() -> None:
    # Five v1 nodes, two v2 canaries started later in the same generation: v1 keeps its roles.
    v1 = [replace(member(f"a{i}", 100 + i), version="1") for i in range(5)]
    canaries = [replace(member(f"b{i}", 200 + i), version="2") for i in range(2)]
    before = compute_topology(v1 + canaries)
    assert before.master == "a0" and set(canaries_names := ["b0", "b1"]) <= set(before.workers)
    # b1 takes the handover with generation 1: it becomes master, and b0 (same release) ranks
    # right after it, above every v1 node, without publishing anything itself.
    handed = [canaries[0], replace(canaries[1], generation=1)]
    after = compute_topology(v1 + handed)
    assert after.master == "b1"
    assert after.members[:2] == ("b1", "b0")
    assert after.members[2:] == tuple(m.name for m in v1)
    assert canaries_names


def test_a_dead_handover_target_gives_the_role_back_to_the_older_generation() -> None:
    v1 = [replace(member(f"a{i}", 100 + i), version="1") for i in range(3)]
    target = replace(member("b0", 200, MemberState.DEAD), version="2", generation=1)
    assert compute_topology([*v1, target]).master == "a0"


# -- cohorts: seniority from what the cluster saw, not from a clock ---------------------------

MINUTE_MS = 60_000


def test_a_joiner_with_an_older_epoch_ranks_after_the_cluster_it_joined() -> None:
    founders = [member(n, 1_000 + i, cohort=0) for i, n in enumerate("abc")]
    # d's clock is five minutes behind: its epoch is older than every founder's.
    d = member("d", 1_000 - 5 * MINUTE_MS, cohort=next_cohort(founders, "d"))
    assert d.cohort == 1
    topo = compute_topology([*founders, d])
    assert topo.master == "a"
    assert topo.members == ("a", "b", "c", "d")


def test_a_joining_run_ranks_last_until_it_settles_its_cohort() -> None:
    founders = [member(n, 1_000 + i, cohort=0) for i, n in enumerate("abc")]
    joining = member("d", 1, pending=True)
    assert rank_cohorts([*founders, joining])["d"] == UNRANKED_COHORT
    assert compute_topology([*founders, joining]).members == ("a", "b", "c", "d")
    # Runs that are all still joining (a cluster forming) rank by epoch among themselves.
    forming = [member("y", 5, pending=True), member("x", 9, pending=True)]
    assert compute_topology(forming).members == ("y", "x")


def test_next_cohort() -> None:
    me = member("me", 1)
    assert next_cohort([], "me") == 0
    assert next_cohort([me], "me") == 0  # the first run of a cluster
    # Only runs that are joining too: the cluster forms now.
    assert next_cohort([me, member("x", 2, pending=True)], "me") == 0
    assert next_cohort([me, member("x", 2, cohort=0), member("y", 3, cohort=4)], "me") == 5
    # The dead are not counted: only who is there now.
    dead = member("z", 3, MemberState.DEAD, cohort=9)
    assert next_cohort([me, member("x", 2, cohort=2), dead], "me") == 3
    # A run of a release before cohorts counts with the cohort it ranks in.
    assert next_cohort([me, member("old", 2)], "me") == 1
    # A forged cohort at the limit cannot make a joiner publish one its peers would refuse.
    assert next_cohort([me, member("x", 2, cohort=MAX_COHORT)], "me") == MAX_COHORT


def test_joining_cohort_ranks_after_a_cluster_and_forms_one_with_its_co_joiners() -> None:
    me = member("me", 50, pending=True)
    # A cluster exists: after it at once (runs still joining with it do not count).
    running = [member("a", 10, cohort=0), member("b", 20, cohort=3), member("x", 30, pending=True)]
    assert joining_cohort([me, *running], "me") == 4
    # Alone: it forms the cluster.
    assert joining_cohort([me], "me") == 0
    # Only runs joining too: the cluster forms, settled in the order they rank in already.
    earlier, later = member("x", 30, pending=True), member("y", 70, pending=True)
    assert joining_cohort([me, later], "me") == 0  # first of them: at once
    assert joining_cohort([me, earlier, later], "me") is None  # after x has settled
    assert joining_cohort([me, earlier], "me", waited_out=True) == 0  # or x is stuck
    # The seed it first saw joining has settled 0 since: the two formed the cluster together.
    seed = member("seed", 40, cohort=0)
    assert joining_cohort([me, seed], "me", co_joiners={("seed", 40)}) == 0
    assert joining_cohort([me, seed], "me") == 1  # seen settled first: it joined seed's cluster
    # A co-joiner does not hide a cluster that exists besides it.
    assert joining_cohort([me, seed, *running], "me", co_joiners={("seed", 40)}) == 4


def test_while_a_cluster_forms_the_order_never_changes() -> None:
    # Runs started together settle one by one in their epoch order; at every step the
    # topology is the one of the epochs.
    runs = [member(f"n{i}", 100 + i, pending=True) for i in range(5)]
    everyone = {(m.name, m.epoch) for m in runs}
    expected = compute_topology(runs)
    for i, m in enumerate(runs):
        for later in runs[i + 1 :]:  # each waits while an earlier one is still joining
            assert joining_cohort(runs, later.name, everyone - {(later.name, later.epoch)}) is None
        cohort = joining_cohort(runs, m.name, everyone - {(m.name, m.epoch)})
        assert cohort == 0
        runs[i] = replace(m, cohort=cohort, cohort_pending=False)
        assert compute_topology(runs) == expected


def test_cohorts_come_before_the_epoch_but_not_before_the_generation() -> None:
    a = replace(member("a", 100, cohort=0), version="1")
    target = replace(member("t", 50, cohort=3), version="2", generation=1)
    assert compute_topology([a, target]).master == "t"  # the handover still decides
    assert rank_key(a, 0, 0) < rank_key(replace(a, name="z", epoch=1), 0, 1)


def test_a_demoted_run_ranks_by_its_new_cohort_and_until_then_after_every_settled_run() -> None:
    a = member("a", 100, cohort=0)  # the old master, paused, declared dead, back
    b, c = member("b", 200, cohort=0), member("c", 300, cohort=1)
    held = replace(a, demoted_since=900, cohort_pending=True)  # an observer's provisional hold
    assert compute_topology([held, b, c]).members == ("b", "c", "a")
    confirmed = replace(a, demoted_since=900, cohort=next_cohort([b, c], "a"))
    assert confirmed.cohort == 2
    assert compute_topology([confirmed, b, c]).members == ("b", "c", "a")
    # Once the hold expires unconfirmed (a partition, nobody paused), the older master is back.
    assert compute_topology([a, b, c]).master == "a"


def test_a_release_before_cohorts_ranks_by_start_among_the_cohorts() -> None:
    # A rolling upgrade: old-release founders, then new-release joiners. Both releases order
    # them the same (the old one by start alone) while clocks agree.
    old = [member(f"o{i}", 100 + i) for i in range(3)]
    new1 = member("n1", 200, cohort=next_cohort(old, "n1"))
    new2 = member("n2", 300, cohort=next_cohort([*old, new1], "n2"))
    assert (new1.cohort, new2.cohort) == (1, 2)
    # A rollback: an old-release run joins after both: it ranks after them, as its release does.
    late = member("o9", 400)
    view = [*old, new1, new2, late]
    assert rank_cohorts(view)["o9"] == 2
    assert compute_topology(view).members == ("o0", "o1", "o2", "n1", "n2", "o9")


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans()),  # (of the old release?, leaves later?)
        min_size=1,
        max_size=25,
    )
)
def test_property_with_agreeing_clocks_every_release_computes_the_same_order(
    runs: list[tuple[bool, bool]],
) -> None:
    # Runs join one at a time, each a new-release run (settles its cohort from the view it
    # joins) or an old-release one (publishes none); some leave after the next join. The
    # order both releases compute is the order of the epochs, that is, of the joins.
    view: list[MemberInfo] = []
    for i, (old_release, leaves) in enumerate(runs):
        name = f"n{i:02d}"
        cohort = None if old_release else next_cohort(view, name)
        view.append(member(name, 1_000 + i, cohort=cohort))
        if leaves and len(view) > 1:
            view.pop(len(view) // 2)
    by_start = tuple(m.name for m in sorted(view, key=lambda m: (m.epoch, m.name)))
    assert compute_topology(view).members == by_start


@given(views(), st.integers(min_value=1, max_value=10**6))
def test_property_a_joiner_never_takes_the_master_role_whatever_its_epoch(
    members: list[MemberInfo], behind_ms: int
) -> None:
    # Every run of the new release (a run of the old one publishes no cohort: see below).
    members = [
        m if m.cohort is not None or m.cohort_pending else replace(m, cohort=0) for m in members
    ]
    master = compute_topology(members).master
    if master is None or any(m.cohort_pending for m in members if m.name == master):
        return
    # The joiner settles its cohort against this view; its clock is behind by ``behind_ms``.
    joiner = member("joiner!", min(m.epoch for m in members) - behind_ms)
    joiner = replace(joiner, cohort=next_cohort([*members, joiner], "joiner!"))
    assert compute_topology([*members, joiner]).master == master


def test_with_a_run_of_the_old_release_both_releases_agree_even_when_a_clock_is_off() -> None:
    # The old release ranks by start time alone and cannot know cohorts: a run whose clock is
    # behind is its master. The new release ranks the old runs by start time among the
    # cohorts, so it computes the same master and the cluster never has two. The guarantee
    # that a joiner never takes the role holds once every node runs the new release.
    old = [member(n, 1_000 + i) for i, n in enumerate("abc")]
    skewed = member("d", 1_000 - 5 * MINUTE_MS, cohort=next_cohort(old, "d"))
    by_start = min([*old, skewed], key=lambda m: (m.epoch, m.name)).name
    assert compute_topology([*old, skewed]).master == by_start == "d"


def test_a_topology_hashes_only_the_assignments_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every node recomputes its topology after every membership change and needs its own
    replica only: computing every worker's cost N x sqrt(N) hashes (about a second of the
    event loop at 10,000 nodes, benchmarks/scale.py)."""
    from tierfaas import topology

    calls = 0
    real = topology.hrw_weight

    def counting(worker: str, replica: str) -> int:
        nonlocal calls
        calls += 1
        return real(worker, replica)

    monkeypatch.setattr(topology, "hrw_weight", counting)
    topo = compute_topology(view(400))
    assert calls == 0
    worker = topo.workers[7]
    assert topo.role_of(worker) == "worker" and worker in topo.replica_of
    assert calls == 0
    assert topo.replica_of.get(worker) == assign_replica(worker, topo.replicas)
    assert topo.replica_of[worker] == topo.replica_of.get(worker)
    assert calls == 2 * len(topo.replicas)  # one lookup hashed (kept), one direct check
    assert topo.replica_of.get("n000") is None and "n000" not in topo.replica_of
    assert len(topo.replica_of) == len(topo.workers)
    # All of them, when asked, equal the eager computation.
    assert dict(topo.replica_of) == {w: assign_replica(w, topo.replicas) for w in topo.workers}


def test_the_standby_is_the_first_worker_in_rank_order() -> None:
    assert Topology(members=("m", "r", "w1", "w2"), workers=("w1", "w2")).standby == "w1"
    assert Topology(members=("m", "r"), replicas=("r",)).standby is None
