"""The rollout plan as a pure function: every phase, the faults, and that it converges."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from tierfaas.deploy import plan
from tierfaas.deploy.plan import Abort, Done, Handover, Launch, NodeState, Observed, Terminate, Wait


def node(name: str, version: str, *, age: float = 100.0, gen: int = 0, **kw: object) -> NodeState:
    fields: dict[str, object] = dict(member=True, ready=True, draining=False)
    fields.update(kw)
    return NodeState(name, version, gen, age_s=age, **fields)  # type: ignore[arg-type]


def observed(nodes: list[NodeState], master: str = "a0", **kw: object) -> Observed:
    by_name = {n.name: n for n in nodes}
    base: dict[str, object] = dict(
        desired="2",
        master=master,
        master_version=by_name[master].version,
        generation=max(n.generation for n in nodes),
        size=3,
        canaries=2,
        canary_timeout_s=30.0,
        nodes=nodes,
    )
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


V1 = [node(f"a{i}", "1", age=100.0 - i) for i in range(3)]


def test_a_cluster_at_the_desired_version_is_done() -> None:
    assert plan.next_step(observed(V1, desired="1")) == Done()


def test_canaries_first_in_the_current_generation() -> None:
    assert plan.next_step(observed(V1)) == Launch(2, 0)


def test_waits_for_canaries_then_hands_over_to_the_oldest_ready_one() -> None:
    starting = [*V1, node("b0", "2", age=3, ready=False), node("b1", "2", age=2, member=False)]
    assert isinstance(plan.next_step(observed(starting)), Wait)
    ready = [*V1, node("b0", "2", age=3), node("b1", "2", age=2)]
    assert plan.next_step(observed(ready)) == Handover("b0", 1)


def test_a_canary_that_never_gets_ready_aborts_and_terminates_the_new_nodes() -> None:
    late = [*V1, node("b0", "2", age=31, ready=False, problem="not joined"), node("b1", "2")]
    step = plan.next_step(observed(late))
    assert isinstance(step, Abort)
    assert set(step.terminate) == {"b0", "b1"} and "not joined" in step.reason


def test_a_release_that_cannot_import_aborts_without_waiting_for_the_timeout() -> None:
    broken = [*V1, node("b0", "2", age=1, ready=False, fatal=True, problem="ImportError")]
    step = plan.next_step(observed(broken))
    assert isinstance(step, Abort) and "ImportError" in step.reason


def test_a_failed_version_is_not_tried_again() -> None:
    assert plan.next_step(observed(V1, failed=frozenset({"2"}))) == Done()


def test_after_handover_old_nodes_drain_newest_first_and_one_at_a_time() -> None:
    nodes = [*V1, node("b0", "2", gen=1), node("b1", "2")]
    step = plan.next_step(observed(nodes, master="b0"))
    assert step == Terminate("a2", "runs 1, not 2")
    draining = [*V1[:2], replace(V1[2], draining=True), node("b0", "2", gen=1), node("b1", "2")]
    assert isinstance(plan.next_step(observed(draining, master="b0")), Wait)


def test_scales_the_new_version_to_the_size_while_old_nodes_remain() -> None:
    nodes = [V1[0], node("b0", "2", gen=1), node("b1", "2")]
    # 3 serving = size, one old left: launch one more new node before draining it.
    assert plan.next_step(observed(nodes, master="b0", generation=1)) == Launch(1, 1)


def test_a_new_master_after_a_failover_resumes_from_what_runs() -> None:
    # The v1 master died before the handover: rank 1 (a1, v1) is master and sees the canaries.
    nodes = [V1[1], V1[2], node("b0", "2"), node("b1", "2")]
    assert plan.next_step(observed(nodes, master="a1")) == Handover("b0", 1)


def test_the_master_never_drains_itself() -> None:
    nodes = [node("b0", "2", gen=1, age=1), node("b1", "2", age=50), node("b2", "2"), *V1[:0]]
    nodes.append(node("b3", "2", age=60))
    step = plan.next_step(observed(nodes, master="b0"))
    assert isinstance(step, Terminate) and step.name != "b0"


def _simulate(
    start: list[NodeState], size: int, canaries: int, max_steps: int = 80
) -> list[NodeState]:
    """Runs the plan against an ideal provider: launched nodes get ready at the next tick,
    drained ones are gone at the next tick, the handover target becomes master. Checks on
    every tick that at least ``size`` ready nodes serve (capacity never drops)."""
    nodes = list(start)
    master = min((n for n in nodes), key=lambda n: -n.age_s).name
    counter = 0
    for _ in range(max_steps):
        nodes = [n for n in nodes if not n.draining]
        nodes = [replace(n, member=True, ready=True) for n in nodes]
        assert sum(1 for n in nodes if n.ready and not n.draining) >= size
        o = observed(nodes, master=master, size=size, canaries=canaries)
        step = plan.next_step(o)
        if isinstance(step, Done):
            return nodes
        if isinstance(step, Launch):
            for _ in range(step.count):
                counter += 1
                nodes.append(node(f"n{counter}", "2", age=0, gen=step.generation, ready=False))
        elif isinstance(step, Handover):
            nodes = [replace(n, generation=step.generation) if n.name == step.target else n
                     for n in nodes]  # fmt: skip
            master = step.target
        elif isinstance(step, Terminate):
            nodes = [replace(n, draining=True) if n.name == step.name else n for n in nodes]
        nodes = [replace(n, age_s=n.age_s + 1) for n in nodes]
        assert not isinstance(step, Abort)
    raise AssertionError("the plan did not converge")


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=10), st.integers(min_value=1, max_value=3))
def test_property_any_size_converges_to_exactly_size_new_nodes(size: int, canaries: int) -> None:
    start = [node(f"a{i}", "1", age=100.0 - i) for i in range(size)]
    final = _simulate(start, size, canaries)
    assert len(final) == size and all(n.version == "2" for n in final)


def test_a_handover_target_that_died_is_replaced_by_another_ready_node() -> None:
    # b0 took no handover and is gone from the gossip: the next ready canary is the target.
    nodes = [*V1, node("b0", "2", age=5, member=False, ready=False), node("b1", "2", age=4)]
    step = plan.next_step(observed(nodes, canary_timeout_s=60))
    assert isinstance(step, Wait)  # b0 may still come back within the timeout...
    late = [*V1, node("b1", "2", age=4), node("b2", "2", age=3)]  # ...here it is gone
    assert plan.next_step(observed(late)) == Handover("b1", 1)
