"""Anti-entropy's pure parts: the digest, the verdict, the check timer on a FakeClock, and the
master's view of a run (its table plus the pending batch)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control.api import NotMasterError
from tierfaas.control.backend import TableBackend
from tierfaas.control.batcher import Batcher
from tierfaas.control.digest import CheckTimer, Digest, RunView, Verdict, digest, verdict
from tierfaas.control.table import RoutingTable
from tierfaas.testing import FakeClock


def run(name: str, epoch: int) -> NodeEndpoint:
    return NodeEndpoint(name, epoch, None, None)


# -- the digest and the verdict ---------------------------------------------------------------


def test_a_digest_depends_on_the_set_not_on_its_order_or_repeats() -> None:
    assert digest(["b", "a", "c"]) == digest(["c", "a", "b", "a"])
    assert digest(["a", "b"]).count == 2
    assert digest([]) == Digest(0, 0)
    assert digest(["a", "b"]) != digest(["a", "c"])  # same count, other names
    assert digest(["a"]) != digest(["a", "b"])


def test_the_verdict_waits_for_a_run_the_master_does_not_hold_alive() -> None:
    mine = digest(["resize", "sha256"])
    assert verdict(mine, RunView(False, mine)) is Verdict.WAIT
    assert verdict(mine, RunView(False, digest([]))) is Verdict.WAIT


def test_the_verdict_announces_on_any_difference_and_agrees_otherwise() -> None:
    mine = digest(["resize", "sha256"])
    assert verdict(mine, RunView(True, mine)) is Verdict.AGREE
    assert verdict(mine, RunView(True, digest(["resize"]))) is Verdict.ANNOUNCE  # lost
    assert verdict(mine, RunView(True, digest([]))) is Verdict.ANNOUNCE  # dropped as dead
    extra = digest(["resize", "sha256", "gone"])
    assert verdict(mine, RunView(True, extra)) is Verdict.ANNOUNCE  # a lost unregister


def test_a_replica_copy_that_differs_is_confirmed_with_the_master_not_acted_on() -> None:
    mine = digest(["resize", "sha256"])
    assert verdict(mine, RunView(True, mine, copy=True)) is Verdict.AGREE
    assert verdict(mine, RunView(True, digest(["resize"]), copy=True)) is Verdict.CONFIRM
    assert verdict(mine, RunView(False, mine, copy=True)) is Verdict.WAIT


# -- the check timer ----------------------------------------------------------------------------


def test_the_first_check_is_due_at_once_then_every_period() -> None:
    clock = FakeClock()
    timer = CheckTimer(clock, period_s=1.0, retry_s=0.2)
    assert timer.due() and timer.delay() == 0.0
    timer.checked(Verdict.AGREE)
    assert not timer.due() and timer.delay() == pytest.approx(1.0)
    clock.advance(0.99)
    assert not timer.due()
    clock.advance(0.01)
    assert timer.due()
    timer.checked(None)  # nobody could be asked (a cut): again within retry_s
    assert timer.delay() == pytest.approx(0.2)


def test_a_wait_or_a_rejected_write_asks_the_master_within_retry_s() -> None:
    clock = FakeClock()
    timer = CheckTimer(clock, period_s=1.0, retry_s=0.2)
    assert not timer.ask_master  # a worker asks its replica first
    timer.checked(Verdict.WAIT)
    assert timer.delay() == pytest.approx(0.2) and timer.ask_master
    clock.advance(0.2)
    timer.checked(Verdict.ANNOUNCE)  # the master's final answer
    assert timer.delay() == pytest.approx(1.0) and not timer.ask_master
    clock.advance(0.5)
    timer.hurry()
    assert timer.delay() == pytest.approx(0.2) and timer.ask_master
    clock.advance(0.1)
    timer.hurry()  # never later than already due
    assert timer.delay() == pytest.approx(0.1)


def test_waits_in_a_row_back_off_up_to_the_period() -> None:
    clock = FakeClock()
    timer = CheckTimer(clock, period_s=1.0, retry_s=0.2)
    delays = []
    for outcome in (Verdict.WAIT, None, Verdict.WAIT, Verdict.WAIT, None):
        timer.checked(outcome)
        delays.append(round(timer.delay(), 3))
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]
    timer.checked(Verdict.AGREE)
    timer.checked(Verdict.WAIT)  # a new run of waits starts at retry_s again
    assert timer.delay() == pytest.approx(0.2)


def test_a_copy_that_differs_sends_the_next_check_to_the_master_at_once() -> None:
    clock = FakeClock()
    timer = CheckTimer(clock, period_s=1.0, retry_s=0.2)
    timer.checked(Verdict.CONFIRM)
    assert timer.due() and timer.ask_master
    timer.checked(None)  # the master could not be asked: it stays the one to ask
    assert timer.ask_master and timer.delay() == pytest.approx(0.2)
    timer.checked(Verdict.AGREE)
    assert not timer.ask_master


def test_a_node_resumed_after_a_long_pause_checks_at_once() -> None:
    clock = FakeClock()
    timer = CheckTimer(clock, period_s=1.0, retry_s=0.2)
    timer.checked(Verdict.AGREE)
    clock.advance(30.0)  # SIGSTOP: the timer is long overdue when the process runs again
    assert timer.due()


def test_periods_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CheckTimer(FakeClock(), period_s=0.0)


# -- the master's side: the table plus its pending batch ------------------------------------

NAMES = ("n1", "n2")
FUNCTIONS = ("f1", "f2", "f3")
EPOCHS = (1, 2, 3)

writes = st.lists(
    st.tuples(
        st.sampled_from(("register", "unregister", "announce", "drop", "drop_all")),
        st.sampled_from(NAMES),
        st.sampled_from(EPOCHS),
        st.frozensets(st.sampled_from(FUNCTIONS)),
    ),
    max_size=12,
)


def play(batcher: Batcher, ops: list[tuple[str, str, int, frozenset[str]]]) -> None:
    for op, name, epoch, functions in ops:
        if op == "register":
            for f in sorted(functions):
                batcher.register(f, run(name, epoch))
        elif op == "unregister":
            for f in sorted(functions):
                batcher.unregister(f, run(name, epoch))
        elif op == "announce":
            batcher.announce(run(name, epoch), functions)
        else:
            batcher.drop_node(name, epoch if op == "drop" else None)


@settings(max_examples=400, deadline=None)
@given(before=writes, pending=writes)
def test_the_overlay_of_a_pending_batch_is_what_the_table_holds_once_it_is_applied(
    before: list[tuple[str, str, int, frozenset[str]]],
    pending: list[tuple[str, str, int, frozenset[str]]],
) -> None:
    clock = FakeClock()
    table = RoutingTable("l")
    first = Batcher(clock)
    play(first, before)
    batch = first.take()
    if batch is not None:
        table.apply_batch(batch)
    batcher = Batcher(clock)
    play(batcher, pending)
    predicted = {name: batcher.overlay(name, table.runs_of(name)) for name in NAMES}
    batch = batcher.take()
    if batch is not None:
        table.apply_batch(batch)
    assert predicted == {name: table.runs_of(name) for name in NAMES}


def test_the_master_digests_a_run_with_its_pending_writes_and_says_if_it_is_alive() -> None:
    clock = FakeClock()
    members = {"w1": run("w1", 7)}
    backend = TableBackend(members.get, clock, master=True, window_s=0.1)
    hub = backend.hub
    assert hub is not None
    hub.batcher.announce(run("w1", 7), {"f1", "f2"})
    hub.flush()
    hub.batcher.register("f3", run("w1", 7))  # accepted, not flushed yet
    view = backend.digest("w1", 7)
    assert view.alive and view.digest == digest(["f1", "f2", "f3"])
    assert (view.version, view.lineage) == (hub.table.version, hub.table.lineage)
    assert not backend.digest("w1", 6).alive  # another run of the name
    assert backend.digest("w1", 6).digest == digest([])
    assert not backend.digest("w9", 1).alive  # not a member
    # Declared dead: the master drops the run; the node, back with the same run, sees the
    # master's digest differ from its warm set and announces.
    hub.flush()
    hub.batcher.drop_node("w1", 7)
    hub.flush()
    view = backend.digest("w1", 7)
    assert view.alive and verdict(digest(["f1", "f2", "f3"]), view) is Verdict.ANNOUNCE


def test_a_replica_answers_from_its_copy_and_a_node_with_no_table_refuses() -> None:
    clock = FakeClock()
    members = {"w1": run("w1", 7)}
    master = TableBackend(members.get, clock, master=True)
    assert master.hub is not None
    master.hub.batcher.announce(run("w1", 7), {"f1"})
    master.hub.flush()
    replica = TableBackend(members.get, clock, master=False, master_rpc="m:1")
    with pytest.raises(NotMasterError):
        replica.digest("w1", 7)  # no copy yet
    replica.copy.apply(master.hub.table.snapshot())
    view = replica.digest("w1", 0)  # 0: the current run
    assert view.copy and view.alive and view.digest == digest(["f1"])
    assert not master.digest("w1", 7).copy
