"""The scaling policy: tables of a pool's state and the time -> the decision."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.runtime import policy
from tierfaas.runtime.policy import Hold, PoolState, Refuse, Rejection, Settings, Start, Wait

SETTINGS = Settings(
    queue_max=4, queue_timeout_s=2.0, retry_after_s=1, scale_out_wait_s=0.1, start_timeout_s=30.0
)
NOW = 1000.0


def pool(**fields: object) -> PoolState:
    """A pool of a function with one slot per instance and two instances at most; the
    newest instance ready for a long time, its slots idle."""
    base = PoolState(SETTINGS, concurrency=1, max_instances=2, newest_ready_at=NOW - 10)
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "decision"),
    [
        # Nothing here: start for the call (and those queued before it), room permitting.
        (pool(), Start(1)),
        (pool(waiters=1), Start(2)),
        (pool(waiters=3), Start(2)),  # max_instances 2
        (pool(concurrency=4, waiters=3), Start(1)),  # one instance's slots cover four calls
        (pool(concurrency=2, waiters=2), Start(2)),
        # A start under way and no scale-out wait: more only for calls it does not cover.
        (pool(starting=1, settings=replace(SETTINGS, scale_out_wait_s=0)), Start(0)),
        (pool(starting=1, waiters=1, settings=replace(SETTINGS, scale_out_wait_s=0)), Start(1)),
        (pool(starting=2, waiters=1, settings=replace(SETTINGS, scale_out_wait_s=0)), Start(0)),
        # Warm and busy: wait for a slot, then maybe start one.
        (pool(instances=1), Wait(NOW + 0.1)),
        (pool(instances=1, last_start_s=0.02), Wait(NOW + 0.02)),  # a start is quicker
        (pool(instances=1, last_start_s=5.0), Wait(NOW + 0.1)),
        (pool(instances=2), Wait(NOW + 0.1)),  # at max_instances (scale_out_due says no)
        # Behind a start: queue, decided when it ends.
        (pool(instances=1, starting=1), Wait(None)),
        (pool(starting=1), Wait(None)),
        # Saturated: one more now, besides the wait.
        (pool(instances=1, busy_share=0.95), Wait(NOW + 0.1, extra=True)),
        (pool(instances=1, busy_share=0.9), Wait(NOW + 0.1, extra=True)),
        (pool(instances=1, busy_share=0.89), Wait(NOW + 0.1)),
        (pool(instances=1, busy_share=1.0, newest_ready_at=NOW - 0.5), Wait(NOW + 0.1)),
        (pool(instances=2, busy_share=1.0), Wait(NOW + 0.1)),  # no room
        # A full queue: 429 at once.
        (pool(instances=1, waiters=4), Refuse(1)),
        (pool(waiters=4), Refuse(1)),
        (pool(instances=1, waiters=3), Wait(NOW + 0.1)),
    ],
)
def test_admit(state: PoolState, decision: policy.Refuse | Start | Wait) -> None:
    assert policy.admit(state, NOW) == decision


@pytest.mark.parametrize(
    ("state", "deadline", "decision"),
    [
        (pool(), NOW + 5, Rejection.NOT_WARM),
        # Behind a start: until it ends (its timeout at most), never past the deadline.
        (pool(starting=1), NOW + 60, Hold(NOW + 30, behind_start=True)),
        (pool(starting=1), NOW + 5, Hold(NOW + 5, behind_start=True)),
        # Behind busy instances: the scale-out wait.
        (pool(instances=1), NOW + 5, Hold(NOW + 0.1)),
        (pool(instances=1, last_start_s=0.05), NOW + 5, Hold(NOW + 0.05)),
        (pool(instances=1), NOW + 0.04, Hold(NOW + 0.04)),
        (pool(instances=1, busy_share=0.95), NOW + 5, Hold(NOW + 0.1, extra=True)),
        # No time left, or a full queue: busy, unrun.
        (pool(instances=1), NOW, Rejection.BUSY),
        (pool(instances=1, waiters=4), NOW + 5, Rejection.BUSY),
        (pool(starting=1, waiters=4), NOW + 5, Rejection.BUSY),
    ],
)
def test_admit_forwarded(state: PoolState, deadline: float, decision: Rejection | Hold) -> None:
    assert policy.admit_forwarded(state, NOW, deadline) == decision


@pytest.mark.parametrize(
    ("state", "ahead", "due"),
    [
        (pool(instances=1), 0, True),
        (pool(instances=1, starting=1), 0, False),  # the start reaches it first
        (pool(instances=1, starting=1, max_instances=3), 0, False),
        (pool(instances=1, starting=1, max_instances=3), 1, True),
        (pool(instances=1, starting=1, concurrency=2, max_instances=3), 1, False),
        (pool(instances=1, starting=1, concurrency=2, max_instances=3), 2, True),
        (pool(instances=2), 5, False),  # no room
    ],
)
def test_scale_out_due(state: PoolState, ahead: int, due: bool) -> None:
    assert policy.scale_out_due(state, ahead) is due


@pytest.mark.parametrize(
    ("last_start_s", "now", "deadline", "give_up_at"),
    [
        (0.3, NOW, NOW + 5, NOW + 0.3),  # as long as a start took
        (0.05, NOW, NOW + 5, NOW + 0.05),  # the scale-out wait, itself capped by the start
        (None, NOW, NOW + 5, NOW + 0.1),
        (0.3, NOW, NOW + 0.2, NOW + 0.2),  # never past the deadline
    ],
)
def test_forwarded_give_up_at(
    last_start_s: float | None, now: float, deadline: float, give_up_at: float
) -> None:
    assert policy.forwarded_give_up_at(SETTINGS, last_start_s, now, deadline) == give_up_at


def test_a_queued_call_is_held_through_a_start() -> None:
    assert policy.queue_give_up_at(SETTINGS, NOW, behind_start=False) == NOW + 2.0
    assert policy.queue_give_up_at(SETTINGS, NOW, behind_start=True) == NOW + 32.0


@pytest.mark.parametrize(
    ("state", "takes"),
    [
        (pool(), True),  # room to start one
        (pool(instances=1, free_slots=1), True),
        (pool(instances=2, free_slots=1), True),
        (pool(instances=2), False),
        (pool(instances=1, starting=1), True),  # the start has a slot for it
        (pool(instances=1, starting=1, waiters=1), False),
        (pool(instances=1, starting=1, concurrency=2, waiters=1), True),
        (pool(instances=1, starting=1, concurrency=2, waiters=2), False),
    ],
)
def test_can_take(state: PoolState, takes: bool) -> None:
    assert policy.can_take(state) is takes


@pytest.mark.parametrize(
    ("state", "allowed"),
    [(pool(), True), (pool(instances=1), False), (pool(starting=1), False)],
)
def test_may_prewarm(state: PoolState, allowed: bool) -> None:
    assert policy.may_prewarm(state) is allowed


@pytest.mark.parametrize(
    ("state", "count"),
    [
        (pool(waiters=3), 3),  # nothing else will serve them
        (pool(waiters=3, instances=1), 1),  # one instance's worth
        (pool(waiters=3, starting=1, concurrency=2), 2),
    ],
)
def test_waiters_to_fail(state: PoolState, count: int) -> None:
    assert policy.waiters_to_fail(state) == count


@pytest.mark.parametrize(
    ("call_s", "live", "concurrency", "waiters", "due"),
    [
        (None, 1, 1, 0, math.inf),
        (0.01, 0, 1, 0, math.inf),
        (0.01, 1, 1, 0, 0.01),
        (0.01, 1, 1, 3, 0.04),
        (0.01, 2, 2, 3, 0.01),
    ],
)
def test_slot_due_s(
    call_s: float | None, live: int, concurrency: int, waiters: int, due: float
) -> None:
    assert policy.slot_due_s(call_s, live, concurrency, waiters) == pytest.approx(due)


def test_an_idle_instance_expires_at_its_keep_alive() -> None:
    assert not policy.idle_expired(NOW, NOW - 0.49, 0.5)
    assert policy.idle_expired(NOW, NOW - 0.5, 0.5)


states = st.builds(
    PoolState,
    settings=st.just(SETTINGS),
    concurrency=st.integers(1, 4),
    max_instances=st.integers(1, 4),
    instances=st.integers(0, 4),
    free_slots=st.just(0),
    starting=st.integers(0, 4),
    waiters=st.integers(0, 6),
    last_start_s=st.none() | st.floats(0.001, 5.0),
    busy_share=st.floats(0.0, 1.0),
    newest_ready_at=st.none() | st.floats(NOW - 5, NOW),
)


@given(states)
def test_no_decision_starts_past_max_instances_or_for_calls_already_covered(
    state: PoolState,
) -> None:
    decision = policy.admit(state, NOW)
    if isinstance(decision, Start):
        total = state.instances + state.starting + decision.count
        assert decision.count == 0 or total <= state.max_instances
        # The starts under way, and these, never cover more than one instance's slots
        # beyond the calls queued (this one included).
        covered = (state.starting + decision.count - 1) * state.concurrency
        assert decision.count == 0 or covered < state.waiters + 1
    if isinstance(decision, Wait) and decision.extra:
        assert state.instances + state.starting < state.max_instances
    if isinstance(decision, Refuse):
        assert state.waiters >= SETTINGS.queue_max
