"""RoutingTable, Batcher and ReplicaCopy: the pure cores of the control plane."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.batcher import Batcher
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.table import Change, Delta, GapError, Op, RoutingTable, Snapshot
from tierfaas.testing import FakeClock


def run(name: str, epoch: int = 1) -> NodeEndpoint:
    return NodeEndpoint(name, epoch, Address("127.0.0.1", 8000 + epoch), None)


def names(table: RoutingTable, function: str) -> list[tuple[str, int]]:
    return sorted((r.name, r.epoch) for r in table.query(function))


# -- RoutingTable ------------------------------------------------------------------------------


def test_apply_versions_only_effective_changes() -> None:
    t = RoutingTable("L")
    d1 = t.apply([Change(Op.ADD, "f", run("a")), Change(Op.ADD, "f", run("b"))])
    assert d1 is not None and (d1.prev_version, d1.version) == (0, 1) and len(d1.changes) == 2
    # A repeated ADD and a REMOVE of something absent change nothing: no delta, no version.
    assert t.apply([Change(Op.ADD, "f", run("a")), Change(Op.REMOVE, "g", run("a"))]) is None
    assert t.version == 1
    d2 = t.apply([Change(Op.REMOVE, "f", run("a")), Change(Op.REMOVE, "f", run("zz"))])
    assert d2 is not None and d2.changes == (Change(Op.REMOVE, "f", run("a")),)
    assert names(t, "f") == [("b", 1)] and t.version == 2


def test_newer_run_replaces_older_and_stale_writes_are_ignored() -> None:
    t = RoutingTable()
    t.apply([Change(Op.ADD, "f", run("a", 1))])
    t.apply([Change(Op.ADD, "f", run("a", 2))])
    assert names(t, "f") == [("a", 2)]
    assert t.apply([Change(Op.ADD, "f", run("a", 1))]) is None  # the dead run's late register
    assert t.apply([Change(Op.REMOVE, "f", run("a", 1))]) is None  # ...and late unregister
    assert names(t, "f") == [("a", 2)]


def test_drop_node_and_announce() -> None:
    t = RoutingTable()
    t.apply([Change(Op.ADD, f, run("a")) for f in ("f", "g", "h")])
    t.apply([Change(Op.ADD, "f", run("b"))])
    d = t.announce(run("a"), {"g", "k"})
    assert d is not None
    assert t.functions_of("a") == {"g", "k"} and names(t, "f") == [("b", 1)]
    assert t.announce(run("a"), {"g", "k"}) is None  # the same set again: nothing to stream
    t.drop_node("a")
    assert t.functions_of("a") == set() and t.as_dict() == {"f": [run("b")]}
    # drop of runs up to epoch 1 leaves a newer run alone
    t.apply([Change(Op.ADD, "g", run("b", 3))])
    t.drop_node("b", 1)
    assert t.as_dict() == {"g": [run("b", 3)]}


def test_announce_of_a_new_run_removes_the_old_runs_routes() -> None:
    t = RoutingTable()
    t.apply([Change(Op.ADD, f, run("a", 1)) for f in ("f", "g")])
    t.announce(run("a", 2), {"g"})
    assert t.as_dict() == {"g": [run("a", 2)]}


def test_since_gives_deltas_or_asks_for_a_snapshot() -> None:
    t = RoutingTable("L", log_limit=3)
    for i in range(5):
        t.apply([Change(Op.ADD, f"f{i}", run("a"))])
    assert t.version == 5
    assert t.since(5, "L") == []
    deltas = t.since(3, "L")
    assert deltas is not None and [d.version for d in deltas] == [4, 5]
    assert [d.version for d in t.since(2, "L") or []] == [3, 4, 5]
    assert t.since(1, "L") is None  # older than the log
    assert t.since(3, "other") is None  # another master's numbering
    assert t.since(9, "L") is None  # ahead of us
    t.restart_lineage("M")
    assert t.since(5, "L") is None and t.since(5, "M") == []


def test_snapshot_load_and_apply_delta_detect_gaps() -> None:
    master = RoutingTable("L")
    master.apply([Change(Op.ADD, "f", run("a"))])
    replica = RoutingTable()
    replica.load(master.snapshot())
    d = master.apply([Change(Op.ADD, "g", run("b"))])
    d2 = master.apply([Change(Op.REMOVE, "f", run("a"))])
    assert d is not None and d2 is not None
    with pytest.raises(GapError):
        replica.apply_delta(d2)
    replica.apply_delta(d)
    replica.apply_delta(d2)
    assert replica.as_dict() == master.as_dict() and replica.version == master.version


def test_log_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RoutingTable(log_limit=0)


# -- Batcher -----------------------------------------------------------------------------------


def test_batcher_window_and_max_pending() -> None:
    clock = FakeClock()
    b = Batcher(clock, window_s=0.1, max_pending=3)
    assert not b.due() and b.deadline() is None and b.take() is None
    # After a quiet window, the first write is due at once (leading edge).
    b.register("f", run("a"))
    assert b.due() and b.deadline() == pytest.approx(clock())
    batch = b.take()
    assert batch is not None and batch.changes == (Change(Op.ADD, "f", run("a")),)
    assert not b.due() and len(b) == 0
    # Writes within the window of that flush wait for its end, together.
    clock.advance(0.03)
    b.register("g", run("a"))
    clock.advance(0.03)
    b.register("h", run("a"))
    assert b.deadline() == pytest.approx(clock() + 0.04)
    clock.advance(0.039)
    assert not b.due()
    clock.advance(0.001 + 1e-9)
    assert b.due()
    batch = b.take()
    assert batch is not None and [c.function for c in batch.changes] == ["g", "h"]
    # A full batch is due before the window ends.
    for f in ("f", "g", "h"):
        b.register(f, run("a"))
    assert b.due()
    b.take()
    # Once a whole window passed with nothing flushed, the next write is due at once again.
    clock.advance(0.1)
    b.register("k", run("a"))
    assert b.due()


def test_an_urgent_write_is_due_at_once_within_the_window() -> None:
    clock = FakeClock()
    b = Batcher(clock, window_s=0.1)
    b.register("f", run("a"))
    b.take()
    clock.advance(0.01)
    b.register("g", run("a"))
    assert not b.due()  # within the window of the last flush
    b.register("h", run("b"), urgent=True)
    assert b.due() and b.deadline() == pytest.approx(clock())
    batch = b.take()
    assert batch is not None and [c.function for c in batch.changes] == ["g", "h"]
    b.register("k", run("a"))
    assert not b.due()  # urgency ends with the batch that carried it


def test_register_then_unregister_in_one_window_streams_nothing() -> None:
    clock = FakeClock()
    t = RoutingTable()
    b = Batcher(clock)
    b.register("f", run("a"))
    b.unregister("f", run("a"))
    batch = b.take()
    assert batch is not None and t.apply_batch(batch) is None and t.version == 0


def test_register_then_unregister_of_a_present_route_removes_it() -> None:
    t = RoutingTable()
    t.apply([Change(Op.ADD, "f", run("a"))])
    b = Batcher(FakeClock())
    b.unregister("f", run("a"))
    b.register("f", run("a"))
    b.unregister("f", run("a"))
    batch = b.take()
    assert batch is not None and len(batch.changes) == 1
    delta = t.apply_batch(batch)
    assert delta is not None and t.as_dict() == {}


def test_announce_folds_later_writes_and_drop_cancels_earlier_ones() -> None:
    b = Batcher(FakeClock())
    b.register("x", run("a"))
    b.announce(run("a"), {"f", "g"})
    b.unregister("g", run("a"))
    b.register("h", run("a"))
    b.register("f", run("c"))
    b.drop_node("c")
    batch = b.take()
    assert batch is not None
    assert batch.announces == ((run("a"), frozenset({"f", "h"})),)
    assert batch.changes == () and batch.drops == (("c", None),)


def test_batcher_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Batcher(FakeClock(), window_s=-1)
    with pytest.raises(ValueError):
        Batcher(FakeClock(), max_pending=0)


# -- property tests ----------------------------------------------------------------------------

NODES = ("a", "b", "c")
FUNCS = ("f", "g", "h", "k")


@dataclass(frozen=True)
class Write:
    kind: str  # "reg", "unreg", "announce", "drop"
    node: str
    epoch: int
    function: str = ""
    functions: frozenset[str] = frozenset()


writes = st.builds(
    Write,
    kind=st.sampled_from(["reg", "reg", "unreg", "announce", "drop"]),
    node=st.sampled_from(NODES),
    epoch=st.integers(1, 2),
    function=st.sampled_from(FUNCS),
    functions=st.frozensets(st.sampled_from(FUNCS), max_size=3),
)


def canonical(table: RoutingTable) -> dict[str, list[tuple[str, int]]]:
    """The table without the order of each function's routes (which carries no meaning)."""
    return {f: sorted((r.name, r.epoch) for r in routes) for f, routes in table.as_dict().items()}


def apply_sequentially(table: RoutingTable, w: Write) -> None:
    route = run(w.node, w.epoch)
    if w.kind == "reg":
        table.apply([Change(Op.ADD, w.function, route)])
    elif w.kind == "unreg":
        table.apply([Change(Op.REMOVE, w.function, route)])
    elif w.kind == "announce":
        table.announce(route, w.functions)
    else:
        table.drop_node(w.node, w.epoch)


def feed(batcher: Batcher, w: Write) -> None:
    route = run(w.node, w.epoch)
    if w.kind == "reg":
        batcher.register(w.function, route)
    elif w.kind == "unreg":
        batcher.unregister(w.function, route)
    elif w.kind == "announce":
        batcher.announce(route, w.functions)
    else:
        batcher.drop_node(w.node, w.epoch)


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.lists(writes, max_size=12),
    windows=st.lists(st.lists(writes, max_size=12), max_size=4),
    epochs=st.fixed_dictionaries({n: st.integers(1, 2) for n in NODES}),
)
def test_batched_writes_equal_writes_applied_one_by_one(
    prefix: list[Write], windows: list[list[Write]], epochs: dict[str, int]
) -> None:
    # One run per node name, as the ClusterManager guarantees by resolving names to live runs.
    def pin(w: Write) -> Write:
        return Write(w.kind, w.node, epochs[w.node], w.function, w.functions)

    sequential, batched = RoutingTable(), RoutingTable()
    for w in map(pin, prefix):
        apply_sequentially(sequential, w)
        apply_sequentially(batched, w)
    batcher = Batcher(FakeClock())
    for window in windows:
        for w in map(pin, window):
            apply_sequentially(sequential, w)
            feed(batcher, w)
        batch = batcher.take()
        if batch is not None:
            batched.apply_batch(batch)
        assert canonical(batched) == canonical(sequential)


@dataclass
class Link:
    """What the master has sent a replica and not yet delivered."""

    pending: list[Delta | Snapshot]


@settings(max_examples=150, deadline=None)
@given(
    windows=st.lists(st.lists(writes, min_size=1, max_size=6), min_size=1, max_size=10),
    steps=st.lists(st.sampled_from(["deliver", "drop", "dup", "swap", "resubscribe"]), max_size=40),
    log_limit=st.integers(1, 4),
)
def test_replica_fed_any_interleaving_ends_equal_to_the_master(
    windows: list[list[Write]], steps: list[str], log_limit: int
) -> None:
    master = RoutingTable("L", log_limit=log_limit)
    replica = ReplicaCopy()
    link = Link([master.snapshot()])
    delivered: list[Delta | Snapshot] = []
    batcher = Batcher(FakeClock())
    windows_left = list(windows)

    def resubscribe() -> None:
        version, lineage = replica.resume_point()
        deltas = master.since(version, lineage) if replica.loaded else None
        link.pending = list(deltas) if deltas is not None else [master.snapshot()]

    def deliver() -> None:
        update = link.pending.pop(0)
        delivered.append(update)
        if replica.apply(update) is Outcome.GAP:
            resubscribe()

    for step in steps:
        if windows_left:  # the master keeps writing while the network misbehaves
            for w in windows_left.pop(0):
                feed(batcher, w)
            batch = batcher.take()
            delta = master.apply_batch(batch) if batch is not None else None
            if delta is not None:
                link.pending.append(delta)
        if not link.pending:
            continue
        if step == "deliver":
            deliver()
        elif step == "drop":
            link.pending.pop(0)
        elif step == "dup" and delivered:
            link.pending.insert(0, delivered[-1])
        elif step == "swap" and len(link.pending) > 1:
            link.pending[0], link.pending[1] = link.pending[1], link.pending[0]
        elif step == "resubscribe":
            resubscribe()  # the stream dropped: whatever was in flight is lost
    for w in (w for window in windows_left for w in window):
        feed(batcher, w)
    batch = batcher.take()
    if batch is not None and (delta := master.apply_batch(batch)) is not None:
        link.pending.append(delta)
    # Then the network heals: deliver everything, re-subscribing on gaps and after a drop.
    for _ in range(1000):
        if not link.pending:
            if replica.resume_point() == (master.version, master.lineage) and replica.loaded:
                break
            resubscribe()
            continue
        deliver()
    assert replica.table.as_dict() == master.as_dict()
    assert replica.version == master.version


def test_replica_copy_outcomes() -> None:
    master = RoutingTable("L")
    replica = ReplicaCopy()
    d1 = master.apply([Change(Op.ADD, "f", run("a"))])
    assert d1 is not None
    assert replica.apply(d1) is Outcome.GAP  # nothing loaded yet
    assert replica.resume_point() == (0, "")
    replica.apply(master.snapshot())
    assert replica.apply(d1) is Outcome.DUPLICATE
    d2 = master.apply([Change(Op.ADD, "g", run("a"))])
    d3 = master.apply([Change(Op.ADD, "h", run("a"))])
    assert d2 is not None and d3 is not None
    assert replica.apply(d3) is Outcome.GAP
    assert replica.apply(d2) is Outcome.APPLIED and replica.apply(d3) is Outcome.APPLIED
    master.restart_lineage("M")
    d4 = master.apply([Change(Op.ADD, "k", run("a"))])
    assert d4 is not None and replica.apply(d4) is Outcome.GAP
    assert replica.query("h") == [run("a")]
    replica.clear()
    assert replica.query("h") == [] and not replica.loaded


async def test_the_master_sends_a_functions_first_node_at_once_and_batches_the_rest() -> None:
    from tierfaas.control.api import Write
    from tierfaas.control.backend import TableBackend

    members = {
        n: NodeEndpoint(n, 7, Address("127.0.0.1", 9000 + i), None)
        for i, n in enumerate(["w1", "w2"])
    }
    clock = FakeClock()
    master = TableBackend(members.get, clock, master=True, window_s=0.1)
    hub = master.hub
    assert hub is not None
    await master.apply_writes([Write(Op.ADD, "f", "w1", 7)])
    assert hub.batcher.due()  # a function no node has: out at once (and after quiet anyway)
    hub.flush()
    await master.apply_writes([Write(Op.ADD, "f", "w2", 7)])
    assert not hub.batcher.due()  # f has a node: this one waits for the window
    await master.apply_writes([Write(Op.ADD, "g", "w2", 7)])
    assert hub.batcher.due()  # g has none: urgent, and it takes f's second node along
    hub.flush()
    assert {e.name for e in hub.table.query("f")} == {"w1", "w2"}


async def test_an_urgent_write_wakes_the_flusher_out_of_a_window() -> None:
    import asyncio

    from tierfaas.control.hub import TableHub

    async def settle() -> None:  # lets the flusher run until it waits again; no time passes
        for _ in range(20):
            await asyncio.sleep(0)

    hub = TableHub(RoutingTable(), FakeClock(), window_s=30.0)
    flusher = asyncio.get_running_loop().create_task(hub.run())
    try:
        hub.batcher.register("f", run("a"))
        hub.wrote()
        await settle()
        assert hub.table.query("f")  # first write after quiet: flushed at once
        hub.batcher.register("g", run("a"))
        hub.wrote()
        await settle()
        assert not hub.table.query("g")  # waits for the 30 s window (the clock stands still)...
        hub.batcher.register("h", run("b"), urgent=True)
        hub.wrote()
        await settle()
        assert hub.table.query("h") and hub.table.query("g")  # ...until an urgent write
    finally:
        flusher.cancel()


async def test_the_master_drops_a_function_evicted_everywhere_at_once() -> None:
    """Issue 19.4: the unregistration of a function's last node is urgent (no batch window,
    no keep-alive, no anti-entropy): its routes leave the table in the very next flush."""
    from tierfaas.control.api import Write
    from tierfaas.control.backend import TableBackend

    members = {
        n: NodeEndpoint(n, 7, Address("127.0.0.1", 9000 + i), None)
        for i, n in enumerate(["w1", "w2"])
    }
    clock = FakeClock()
    master = TableBackend(members.get, clock, master=True, window_s=30.0)
    hub = master.hub
    assert hub is not None
    await master.apply_writes([Write(Op.ADD, "f", "w1", 7), Write(Op.ADD, "f", "w2", 7)])
    hub.flush()
    await master.apply_writes([Write(Op.REMOVE, "f", "w1", 7)])
    assert not hub.batcher.due()  # f is still warm on w2: this one waits for the window
    clock.advance(30.0)
    hub.flush()
    assert [r.name for r in hub.table.query("f")] == ["w2"]
    await master.apply_writes([Write(Op.REMOVE, "f", "w2", 7)])
    assert hub.batcher.due()  # the last node: out at once, window or not
    hub.flush()
    assert hub.table.query("f") == []
    # A node registered in the pending batch still holds it: not the last one then.
    await master.apply_writes([Write(Op.ADD, "g", "w1", 7)])
    hub.flush()
    await master.apply_writes([Write(Op.ADD, "g", "w2", 7), Write(Op.REMOVE, "g", "w1", 7)])
    assert not hub.batcher.due()
