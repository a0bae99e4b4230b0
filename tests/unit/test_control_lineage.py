"""Replicas resume across a failover (``control/lineage.py``): a new master that kept its copy
records where it forked, and a replica continues from its own (lineage, version) with deltas
exactly when that position is on the new master's history; a replica ahead of the fork point
(it holds a change the promoted replica never got) takes a snapshot. The decision is pure;
the last tests run it through the real hub, backend and replicator over an in-memory
stream, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control import wire
from tierfaas.control.backend import TableBackend
from tierfaas.control.lineage import Fork, resume_from
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.table import Change, Delta, GapError, Op, RoutingTable, Snapshot, Update
from tierfaas.testing import FakeClock


def run(name: str, epoch: int = 1) -> NodeEndpoint:
    return NodeEndpoint(name, epoch, Address("127.0.0.1", 8000 + epoch), None)


def add(table: RoutingTable, function: str, node: str = "a") -> Delta:
    delta = table.apply([Change(Op.ADD, function, run(node))])
    assert delta is not None
    return delta


def d(lineage: str, prev: int, version: int) -> Delta:
    return Delta(lineage, prev, version, ())


# -- the decision, pure ------------------------------------------------------------------------

# The log of a new master "N" promoted from a copy of "L" at version 5, two deltas since.
LOG: list[Delta | Fork] = [
    d("L", 3, 4),
    d("L", 4, 5),
    Fork("L", "N", 5),
    d("N", 5, 6),
    d("N", 6, 7),
]
HEAD = ("N", 7)


def test_a_replica_at_the_fork_point_resumes_with_the_fork_and_the_new_deltas() -> None:
    assert resume_from(LOG, HEAD, ("L", 5)) == LOG[2:]


def test_a_replica_behind_the_fork_point_gets_the_old_deltas_first() -> None:
    assert resume_from(LOG, HEAD, ("L", 3)) == LOG
    assert resume_from(LOG, HEAD, ("L", 4)) == LOG[1:]


def test_a_replica_ahead_of_the_fork_point_takes_a_snapshot() -> None:
    # ("L", 6): the old master's last batch, which the promoted replica never received. The
    # new master's version 6 exists too, with other changes: only the pair tells them apart.
    assert resume_from(LOG, HEAD, ("L", 6)) is None
    assert resume_from(LOG, HEAD, ("L", 7)) is None


def test_a_replica_of_the_new_lineage_gets_its_missed_deltas_or_nothing() -> None:
    assert resume_from(LOG, HEAD, ("N", 5)) == LOG[3:]
    assert resume_from(LOG, HEAD, ("N", 6)) == LOG[4:]
    assert resume_from(LOG, HEAD, HEAD) == []
    assert resume_from(LOG, HEAD, ("N", 8)) is None  # ahead of the master


def test_other_histories_and_positions_older_than_the_log_take_a_snapshot() -> None:
    assert resume_from(LOG, HEAD, ("X", 5)) is None  # another master's lineage
    assert resume_from(LOG, HEAD, ("L", 2)) is None  # older than the log reaches
    assert resume_from(LOG, HEAD, ("", 0)) is None  # a copy holding nothing
    assert resume_from([], ("N", 5), ("L", 5)) is None  # the fork fell out of the log


def test_a_log_with_a_hole_or_another_head_is_never_trusted() -> None:
    holed: list[Delta | Fork] = [d("L", 3, 4), Fork("L", "N", 5), d("N", 5, 6)]
    assert resume_from(holed, ("N", 6), ("L", 3)) is None
    assert resume_from(LOG, ("N", 8), ("L", 5)) is None


def test_forks_chain_across_failovers() -> None:
    log: list[Delta | Fork] = [*LOG, Fork("N", "P", 7), d("P", 7, 8)]
    assert resume_from(log, ("P", 8), ("L", 5)) == log[2:]
    assert resume_from(log, ("P", 8), ("N", 7)) == log[5:]
    assert resume_from(log, ("P", 8), ("N", 8)) is None


# -- the table and the copy ------------------------------------------------------------------


def test_a_promoted_copy_logs_its_fork_and_a_replica_resumes_across_it() -> None:
    master = RoutingTable("L")
    for f in ("f", "g", "h"):
        add(master, f)
    promoted, replica = ReplicaCopy(), ReplicaCopy()
    promoted.apply(master.snapshot())
    replica.apply(master.snapshot())
    new = promoted.table
    new.restart_lineage("N")
    add(new, "k", "b")
    entries = new.resume_from(replica.version, replica.lineage)
    assert entries is not None and isinstance(entries[0], Fork)
    assert [replica.apply(e) for e in entries] == [Outcome.APPLIED, Outcome.APPLIED]
    assert replica.table.as_dict() == new.as_dict()
    assert replica.resume_point() == (new.version, "N")
    # A replica of an older release does not follow forks: since() sends it a snapshot.
    assert new.since(3, "L") is None


def test_the_copy_follows_a_fork_only_from_exactly_its_start() -> None:
    master = RoutingTable("L")
    add(master, "f")
    add(master, "g")
    copy = ReplicaCopy()
    assert copy.apply(Fork("L", "N", 2)) is Outcome.GAP  # nothing loaded
    copy.apply(master.snapshot())
    assert copy.apply(Fork("L", "N", 1)) is Outcome.GAP  # it holds version 2: ahead
    assert copy.apply(Fork("X", "N", 2)) is Outcome.GAP  # another history
    assert copy.apply(Fork("L", "N", 2)) is Outcome.APPLIED
    assert copy.apply(Fork("L", "N", 2)) is Outcome.DUPLICATE
    assert copy.resume_point() == (2, "N") and copy.query("g") == [run("a")]
    with pytest.raises(GapError):
        copy.table.follow_fork(Fork("L", "P", 2))


def test_the_old_masters_delta_after_the_fork_point_never_applies_on_the_new_lineage() -> None:
    old = RoutingTable("L")
    add(old, "f")
    promoted, ahead = ReplicaCopy(), ReplicaCopy()
    promoted.apply(old.snapshot())
    lost = add(old, "lost")  # the batch that reached one replica, not the promoted one
    ahead.apply(old.snapshot())
    new = promoted.table
    new.restart_lineage("N")
    add(new, "g", "b")
    assert new.resume_from(*ahead.resume_point()) is None
    assert ahead.apply(Fork("L", "N", 1)) is Outcome.GAP
    assert lost.version == new.version and ahead.resume_point() != (new.version, new.lineage)


def test_restarting_under_the_same_lineage_or_from_no_lineage_records_no_fork() -> None:
    t = RoutingTable("L")
    add(t, "f")
    t.restart_lineage("L")
    entries = t.resume_from(0, "L")
    assert entries is not None and [type(e) for e in entries] == [Delta]
    fresh = RoutingTable()
    fresh.restart_lineage("N")
    assert fresh.lineage == "N" and fresh.resume_from(0, "") is None


def test_a_fork_crosses_the_wire_and_a_malformed_one_is_refused() -> None:
    fork = Fork("L", "N", 41)
    (message,) = wire.update_to_pb(fork)
    assert wire.update_from_pb(message) == fork
    assert wire.UpdateEncoder().messages(fork) == [message]
    bad = [
        message.__class__(prev_version=40, version=41, lineage="N", fork_of="L"),
        message.__class__(prev_version=41, version=41, lineage="L", fork_of="L"),
        message.__class__(prev_version=41, version=41, lineage="", fork_of="L"),
        message.__class__(
            prev_version=41, version=41, lineage="N", fork_of="L", changes=[wire._change_to_pb(
                Change(Op.ADD, "f", run("a")))],
        ),
    ]  # fmt: skip
    for b in bad:
        with pytest.raises(wire.BadMessage):
            wire.update_from_pb(b)


# -- any failover, any lag: never a mixed table ---------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    before=st.integers(1, 8),
    promoted_at=st.integers(0, 8),
    lags=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    after=st.integers(0, 4),
    log_limit=st.integers(1, 12),
)
def test_after_any_failover_each_replica_resumes_or_reloads_and_never_mixes_histories(
    before: int, promoted_at: int, lags: list[int], after: int, log_limit: int
) -> None:
    """The old master writes ``before`` batches; the promoted replica held it at version
    ``promoted_at`` (the later batches were lost with the master); each other replica held
    it at its own version (possibly ahead of the promoted one). The new master writes
    ``after`` batches of its own; every replica resubscribes following forks. Each ends equal
    to the new master's table, and every content a replica held at any step is the one a
    master held at that (lineage, version)."""
    promoted_at = min(promoted_at, before)
    truth: dict[tuple[str, int], dict[str, list[NodeEndpoint]]] = {}
    old = RoutingTable("L", log_limit=log_limit)
    truth[("L", 0)] = old.as_dict()
    history = []
    for i in range(before):
        history.append(add(old, f"old{i}", "a"))
        truth[("L", old.version)] = old.as_dict()

    def copy_at(version: int) -> ReplicaCopy:
        copy = ReplicaCopy()
        copy.apply(Snapshot("L", 0, {}))
        for delta in history[:version]:
            assert copy.apply(delta) is Outcome.APPLIED
        return copy

    promoted = copy_at(promoted_at)
    replicas = [copy_at(min(lag, before)) for lag in lags]
    new = promoted.table
    new.restart_lineage("N")
    truth[("N", new.version)] = new.as_dict()
    for i in range(after):
        # The new master's own writes: a different content under the same version numbers
        # the old master used past the fork point.
        add(new, f"new{i}", "b")
        truth[("N", new.version)] = new.as_dict()
    for replica in replicas:
        version, lineage = replica.resume_point()
        entries = new.resume_from(version, lineage)
        updates: list[Update] = list(entries) if entries is not None else [new.snapshot()]
        if lineage == "L" and version > promoted_at:
            assert entries is None  # ahead of the fork point: a snapshot, always
        for update in updates:
            assert replica.apply(update) is Outcome.APPLIED
            assert replica.table.as_dict() == truth[replica.lineage, replica.version]
        assert replica.table.as_dict() == new.as_dict()
        assert replica.resume_point() == (new.version, "N")


# -- through the hub, the backend and the replicator (in memory, fake clock) -----------------


@dataclass
class Streams:
    """``Channels`` to in-memory masters by address: each ``subscribe`` runs the backend's
    real ``subscribe``; records what every stream carried."""

    masters: dict[str, TableBackend]
    carried: list[tuple[str, Update]] = field(default_factory=list)
    target: str = ""

    def get(self, address: str) -> Streams:
        self.target = address
        return self

    async def subscribe(
        self, version: int, lineage: str, replica: str = "", *, follows_forks: bool = False
    ) -> AsyncIterator[Update]:
        address = self.target
        backend = self.masters[address]
        async for update in backend.subscribe(version, lineage, follows_forks=follows_forks):
            self.carried.append((address, update))
            yield update


def members(*names: str) -> dict[str, NodeEndpoint]:
    return {n: run(n) for n in names}


async def failover(ahead: bool) -> tuple[Streams, ReplicaCopy, TableBackend]:
    """Master m1 with replicas r1 (promoted later) and r2; m1 streams three batches. With
    ``ahead``, r2 receives a fourth that r1 never does. Then m1 dies, r1 becomes master,
    writes one batch; r2's replicator follows the new master."""
    clock = FakeClock()
    live = members("a", "b", "c")
    m1 = TableBackend(live.get, clock, master=True, lineage="L")
    r1 = TableBackend(live.get, clock, master=False)
    streams = Streams({"m1": m1, "r1": r1})
    master = ["m1"]
    hub = m1.hub
    assert hub is not None
    r1_copy = r1.copy
    replicators = [
        Replicator(copy, master=lambda: master[0], channels=streams, sleep=clock.sleep)  # type: ignore[arg-type]
        for copy in (r1_copy, ReplicaCopy())
    ]
    r2_copy = replicators[1].copy
    for replicator in replicators:
        replicator.start()
    await clock.run_for(0.01)
    for i, node in enumerate(("a", "b", "c")):
        hub.batcher.register(f"f{i}", run(node))
        hub.flush()
        await clock.run_for(0.01)
    await replicators[0].stop()  # r1 stops hearing m1 ...
    if ahead:
        hub.batcher.register("lost", run("a"))
        hub.flush()  # ... so only r2 gets this batch
        await clock.run_for(0.01)
    hub.close()  # m1 dies
    assert r1_copy.version == 3 and r2_copy.version == (4 if ahead else 3)
    new_hub = r1.promote("N")
    new_hub.batcher.register("g", run("b"))
    new_hub.flush()
    streams.carried.clear()
    master[0] = "r1"
    await clock.run_for(3.0)  # past any resubscription backoff
    await replicators[1].stop()
    return streams, r2_copy, r1


def test_a_replica_at_the_promoted_ones_version_resumes_through_the_new_master() -> None:
    streams, copy, new = asyncio.run(failover(ahead=False))
    assert new.hub is not None
    assert copy.table.as_dict() == new.hub.table.as_dict()
    assert copy.resume_point() == (new.hub.table.version, "N")
    kinds = [type(u).__name__ for _, u in streams.carried]
    assert kinds == ["Fork", "Delta"]  # no snapshot


def test_a_replica_ahead_of_the_promoted_one_reloads_from_a_snapshot() -> None:
    streams, copy, new = asyncio.run(failover(ahead=True))
    assert new.hub is not None
    assert copy.table.as_dict() == new.hub.table.as_dict()
    assert "lost" not in copy.table.as_dict()  # the old master's last batch is gone
    assert [type(u).__name__ for _, u in streams.carried] == ["Snapshot"]


def test_a_standbys_replicator_subscribes_only_after_its_delay() -> None:
    async def scenario() -> tuple[int, int, bool]:
        clock = FakeClock()
        master = TableBackend(members("a").get, clock, master=True, lineage="L")
        copy = ReplicaCopy()
        replicator = Replicator(
            copy,
            master=lambda: "m",
            channels=Streams({"m": master}),  # type: ignore[arg-type]
            sleep=clock.sleep,
        )
        replicator.start(after_s=10.0)
        await clock.run_for(9.9)
        early = replicator.subscriptions
        await clock.run_for(0.2)
        await replicator.stop()
        return early, replicator.subscriptions, copy.loaded

    assert asyncio.run(scenario()) == (0, 1, True)


def test_a_subscriber_of_an_older_release_gets_a_snapshot_after_a_failover() -> None:
    async def first_updates() -> tuple[Update, Update]:
        clock = FakeClock()
        copy_of = RoutingTable("L")
        add(copy_of, "f")
        backend = TableBackend(members("a").get, clock, master=False)
        backend.copy.apply(copy_of.snapshot())
        backend.promote("N")
        old = backend.subscribe(1, "L")  # follows_forks unset: an older release
        new = backend.subscribe(1, "L", follows_forks=True)
        return await anext(old), await anext(new)

    old, new = asyncio.run(first_updates())
    assert isinstance(old, Snapshot) and old.lineage == "N"
    assert new == Fork("L", "N", 1)
