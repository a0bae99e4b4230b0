"""Which queued async calls start when: the pure ``admit`` and the event-driven Dispatcher on
a FakeClock (no store, no sockets)."""

from __future__ import annotations

from tierfaas.calls.dispatcher import Dispatcher, admit, share_limit
from tierfaas.calls.model import Call
from tierfaas.testing import FakeClock


def _call(n: int, function: str = "f", due: float = 1000.0) -> Call:
    return Call(f"a~b~{n:016x}", function, accepted_at=1000.0 + n / 1000, due_at=due)


def test_share_limit_leaves_sync_calls_their_slots() -> None:
    assert share_limit(max_instances=4, concurrency=1, share=0.5) == 2
    assert share_limit(max_instances=4, concurrency=8, share=0.25) == 8
    assert share_limit(max_instances=1, concurrency=1, share=0.5) == 1  # at least one
    assert share_limit(max_instances=3, concurrency=1, share=0.5) == 1  # rounded down


def test_admit_starts_due_heads_under_their_limit() -> None:
    decision = admit(
        {"due": 10.0, "later": 15.0, "full": 5.0, "free": 10.0},
        running={"full": 2, "free": 1},
        limits={"due": 1, "later": 1, "full": 2, "free": 2},
        now=10.0,
    )
    assert decision.start == ("due", "free")
    assert decision.wake_at == 15.0  # "full" waits for a call to end, not for a time


def test_admit_with_nothing_queued() -> None:
    decision = admit({}, {}, {}, now=0.0)
    assert decision.start == () and decision.wake_at is None


class _Harness:
    def __init__(self, limit: int = 2) -> None:
        self.clock = FakeClock(1000.0)
        self.started: list[str] = []
        self.dispatcher = Dispatcher(
            lambda call: self.started.append(call.call_id),
            lambda function: limit,
            self.clock,
            self.clock,
        )


def test_due_calls_start_at_once_up_to_the_share() -> None:
    h = _Harness(limit=2)
    for n in range(4):
        h.dispatcher.add(_call(n))
    assert h.started == [_call(0).call_id, _call(1).call_id]
    assert h.dispatcher.queued == 2 and h.dispatcher.running == {"f": 2}
    h.dispatcher.finished("f")
    assert h.started[-1] == _call(2).call_id  # a slot freed: the next one, in order
    assert h.dispatcher.queued == 1


def test_a_retry_waits_for_its_time_on_one_timer() -> None:
    h = _Harness()
    h.dispatcher.add(_call(1, due=1005.0))
    h.dispatcher.add(_call(2, due=1003.0))
    assert h.started == [] and h.clock.pending() == 1
    h.clock.advance(2.9)
    assert h.started == []
    h.clock.advance(0.2)
    assert h.started == [_call(2).call_id]
    h.clock.advance(2.0)
    assert h.started == [_call(2).call_id, _call(1).call_id]
    assert h.clock.pending() == 0  # nothing waits: no timer left behind


def test_functions_have_separate_shares() -> None:
    h = _Harness(limit=1)
    h.dispatcher.add(_call(1, "a"))
    h.dispatcher.add(_call(2, "a"))
    h.dispatcher.add(_call(3, "b"))
    assert sorted(h.started) == sorted([_call(1, "a").call_id, _call(3, "b").call_id])


def test_removed_and_requeued_calls() -> None:
    h = _Harness(limit=1)
    h.dispatcher.add(_call(1))
    h.dispatcher.add(_call(2))
    h.dispatcher.add(_call(3))
    assert h.dispatcher.remove(_call(2).call_id) is not None
    h.dispatcher.add(_call(3, due=1010.0))  # re-queued later: its old entry is skipped
    h.dispatcher.finished("f")
    assert h.started == [_call(1).call_id]
    h.clock.advance(10.0)
    assert h.started == [_call(1).call_id, _call(3).call_id]


def test_paused_starts_nothing_until_resumed() -> None:
    h = _Harness()
    h.dispatcher.paused = True
    h.dispatcher.add(_call(1))
    assert h.started == []
    h.dispatcher.resume()
    assert h.started == [_call(1).call_id]
