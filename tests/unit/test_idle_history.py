"""A function's idle history travels between nodes (issue 19, local cold starts): the summary a
node sends with its Unregister decodes to the same windows, the node that starts the function
next adopts it and records the call that brought the function there against the cluster's
last activity, and garbage or oversized summaries are refused without harm. All on a
FakeClock."""

from __future__ import annotations

import math

import msgpack
import pytest

from tierfaas.control.histories import HistoryStore
from tierfaas.runtime import idle_summary, keepalive
from tierfaas.runtime.events import FunctionCold, FunctionWarm, RuntimeEvent
from tierfaas.runtime.idle_summary import BadSummary
from tierfaas.testing import FakeClock, RuntimeHarness, fake_release

KEEP_S = 600.0
WORTH = 307_200.0


def windows(tracker: keepalive.IdleTracker) -> keepalive.Windows:
    return keepalive.learned_windows(
        tracker.histogram, KEEP_S, 0.2, tracker.gaps, memory_mb=256, worth_mb_s=WORTH
    )


def timer(period_s: float, calls: int, start: float = 0.0) -> keepalive.IdleTracker:
    """A tracker that saw a timer: ``calls`` calls of 1 s, one every ``period_s``."""
    tracker = keepalive.IdleTracker()
    for i in range(calls):
        tracker.arrived(start + i * period_s)
        tracker.ended(start + i * period_s + 1.0)
    return tracker


def travel(tracker: keepalive.IdleTracker, now: float) -> idle_summary.IdleSummary:
    """As the Unregister carries it: encoded, then decoded where it arrives."""
    return keepalive.decode_summary(idle_summary.encode(tracker.summary(now)))


# -- the summary ----------------------------------------------------------------------------------


def test_a_summary_decodes_to_the_same_histograms_and_windows() -> None:
    sender = timer(300.0, 30)
    sent = sender.summary(now=30 * 300.0)
    assert keepalive.decode_summary(idle_summary.encode(sent)) == sent
    copy = keepalive.IdleTracker()
    copy.histogram.load(sent.histogram)
    copy.gaps.load(sent.gaps)
    assert copy.histogram.counts == sender.histogram.counts
    assert copy.histogram.samples == sender.histogram.samples
    assert copy.gaps.lowest == sender.gaps.lowest and copy.gaps.highest == sender.gaps.highest
    assert windows(copy) == windows(sender)
    assert windows(copy).source == "learned"


def test_a_summary_holds_durations_not_the_senders_clock() -> None:
    sender = timer(300.0, 3, start=1_000_000.0)  # last activity: 1,000,600 to 1,000,601
    summary = sender.summary(now=1_000_661.0)
    assert summary.ended_ago_s == pytest.approx(60.0)
    assert summary.began_ago_s == pytest.approx(61.0)
    assert summary.aged(40.0).ended_ago_s == pytest.approx(100.0)
    assert summary.aged(-5.0) == summary  # never younger
    active = keepalive.IdleTracker()
    active.arrived(5.0)
    assert active.summary(now=9.0).ended_ago_s is None  # no activity ended yet


def test_a_full_summary_stays_under_the_bound() -> None:
    tracker = keepalive.IdleTracker()
    # One idle time in every bin of both histograms.
    t = 0.0
    for edge in keepalive.EDGES[0]:
        tracker.arrived(t)
        tracker.ended(t)
        t += edge + 0.5
    summary = tracker.summary(now=t)
    assert len(summary.histogram.bins) > 250
    data = idle_summary.encode(summary)
    assert len(data) <= idle_summary.MAX_SUMMARY_BYTES
    assert keepalive.decode_summary(data) == summary


def _bins(*bins: list[object]) -> bytes:
    return msgpack.packb([idle_summary.VERSION, 1.0, 2.0, [0.0, list(bins)], [0.0, []]])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1garbage",
        msgpack.packb({"v": 1}),
        msgpack.packb([2, None, None, [0.0, []], [0.0, []]]),  # another version
        msgpack.packb([idle_summary.VERSION, None, None, [0.0, []]]),  # a field missing
        msgpack.packb([idle_summary.VERSION, -1.0, None, [0.0, []], [0.0, []]]),
        msgpack.packb([idle_summary.VERSION, math.nan, None, [0.0, []], [0.0, []]]),
        msgpack.packb([idle_summary.VERSION, True, None, [0.0, []], [0.0, []]]),
        msgpack.packb([idle_summary.VERSION, None, None, [math.inf, []], [0.0, []]]),
        _bins([10_000, 1.0, 5.0, 5.0, 5.0]),  # no such bin
        _bins([5, 1.0, 5.5, 5.5, 5.5], [5, 1.0, 5.5, 5.5, 5.5]),  # a bin twice
        _bins([5, 0.0, 0.0, 5.5, 5.5]),  # an empty bin sent
        _bins([5, 1.0, 5.5, 7.0, 7.0]),  # 7 s is not in [5, 6)
        _bins([5, 1.0, 5.5, 5.8, 5.2]),  # lowest above highest
        _bins([5, 2.0, 40.0, 5.2, 5.8]),  # a total no two times in [5.2, 5.8] make
        _bins([5, "1", 5.5, 5.5, 5.5]),
        b"\x00" * (idle_summary.MAX_SUMMARY_BYTES + 1),
    ],
)
def test_garbage_is_refused_with_a_typed_error(data: bytes) -> None:
    # The well-formed neighbour of the cases below decodes: each fails for its own reason.
    assert keepalive.decode_summary(_bins([5, 1.0, 5.5, 5.5, 5.5])).histogram.bins[0].index == 5
    with pytest.raises(BadSummary):
        keepalive.decode_summary(data)


# -- adoption -------------------------------------------------------------------------------------


def test_the_node_that_starts_a_function_adopts_the_history_and_the_clusters_idle_time() -> None:
    # Node A served a 5-minute timer for 2.5 hours; its last call ended at 9,001 s (A's
    # summary is sent then: its last instance goes at once, its windows prewarm the next).
    a = timer(300.0, 31)
    summary = travel(a, now=9_001.0)
    # Node B served the function once, hours ago, and holds little of it.
    b = timer(300.0, 2)
    # The next call lands on B (the function is warm nowhere), at 9,300 s on the same time
    # line: B's own record says it idled 9,000 s, the cluster's 299 s.
    b.arrived(9_300.0)
    b.went_warm(9_300.0)
    assert b.histogram.samples == 2
    # The master held the summary 299 s; B gets it 0.05 s after it registered.
    assert b.adopt(summary.aged(299.05), now=9_300.05)
    assert b.histogram.samples == a.histogram.samples + 1
    assert b.histogram.out_of_bounds == 0  # no 9,000 s idle time
    at = keepalive.bin_of(299.0) or 0
    assert b.histogram.counts[at] == pytest.approx(a.histogram.counts[at] + 1.0)
    assert b.gaps.samples == a.gaps.samples + 1
    assert windows(b) == windows(a)
    # Once per time the function went warm here.
    assert not b.adopt(summary, now=9_301.0)
    b.ended(9_301.0)
    assert b.idle_since == 9_301.0  # its own activity, the cluster's latest


def test_a_prewarmed_start_adopts_so_that_the_next_call_counts_from_the_clusters_end() -> None:
    a = timer(300.0, 31)  # last activity 9,000 to 9,001
    summary = travel(a, now=9_001.0)
    b = keepalive.IdleTracker()  # never served it
    b.went_warm(9_250.0)  # a prewarm (no call), e.g. placed by the router
    assert b.adopt(summary.aged(249.0), now=9_250.0)
    assert b.idle_since == pytest.approx(9_001.0) and b.began == pytest.approx(9_000.0)
    b.arrived(9_300.0)
    assert b.histogram.samples == a.histogram.samples + 1
    assert (
        b.histogram.counts[keepalive.bin_of(299.0) or 0]
        > a.histogram.counts[keepalive.bin_of(299.0) or 0]
    )


def test_nothing_is_adopted_unless_the_function_went_warm_here() -> None:
    b = timer(60.0, 5)
    before = list(b.histogram.counts)
    assert not b.adopt(travel(timer(300.0, 31), 9_001.0), now=9_300.0)
    assert b.histogram.counts == before


def test_an_arrival_while_the_function_was_still_active_elsewhere_is_no_idle_time() -> None:
    a = timer(300.0, 31)
    summary = travel(a, now=9_001.0)
    b = keepalive.IdleTracker()
    b.arrived(9_000.5)  # A's call was still running
    b.went_warm(9_000.5)
    assert b.adopt(summary.aged(0.2), now=9_001.1)  # A's call ended at 9,000.9 here
    assert b.histogram.samples == a.histogram.samples


# -- on a node: the runtime's hooks, as the control plane wires them ------------------------------

RELEASE = fake_release({"timer": {"memory_mb": 64, "keep_alive_s": 30}})
PERIOD_S = 60.0


def wire_through(store: HistoryStore, rt: RuntimeHarness) -> None:
    """What the write queue and the master do, instantly: a FunctionCold's history is stored,
    a FunctionWarm's registration takes it back and the runtime adopts it."""

    def on_event(event: RuntimeEvent) -> None:
        if isinstance(event, FunctionCold) and event.history:
            store.put(event.function, event.history)
        elif isinstance(event, FunctionWarm):
            data = store.take(event.function)
            if data is not None:
                rt.runtime.adopt_history(event.function, data)

    rt.runtime.listeners.append(on_event)


async def two_nodes() -> tuple[FakeClock, HistoryStore, RuntimeHarness, RuntimeHarness]:
    """Two started runtimes on one fake clock, and the master's history store (the test
    stops the runtimes itself, when its story needs it)."""
    clock = FakeClock()
    a = RuntimeHarness(RELEASE, clock=clock)
    b = RuntimeHarness(RELEASE, clock=clock)
    await a.__aenter__()
    await b.__aenter__()
    return clock, HistoryStore(clock), a, b


async def moves_to_b(travels: bool) -> list[bool]:
    """A learns a timer called every minute and leaves; the calls go on at B. Whether each of
    B's calls was cold."""
    clock, store, a, b = await two_nodes()
    if travels:
        wire_through(store, a)
        wire_through(store, b)
        a.runtime.share_histories()
        b.runtime.share_histories()
    for _ in range(keepalive.MIN_SAMPLES + 3):
        a.call("timer", b"0.1")
        await clock.run_for(PERIOD_S)
    assert a.runtime.pools["timer"].windows.source == "learned"
    learned = a.runtime.pools["timer"].windows
    await a.__aexit__(None, None, None)  # A leaves (drained) before its next prewarm
    cold = []
    for _ in range(4):
        call = b.call("timer", b"0.1")
        await clock.run_for(PERIOD_S)
        cold.append(call.result().cold)
    if travels:
        assert b.runtime.pools["timer"].windows.prewarm_s == pytest.approx(learned.prewarm_s)
    await b.__aexit__(None, None, None)
    return cold


async def test_the_node_that_starts_a_cold_function_adopts_its_history_and_prewarms_it() -> None:
    # The first call at B is cold (warm nowhere); from the second on, B prewarms as A did.
    assert await moves_to_b(travels=True) == [True, False, False, False]
    # Without the history, B learns the timer again from its own calls, cold meanwhile.
    assert await moves_to_b(travels=False) == [True, True, True, True]


async def test_garbage_from_the_master_is_ignored() -> None:
    async with RuntimeHarness(RELEASE) as rt:
        call = rt.call("timer", b"0.1")
        await rt.run_for(1.0)
        assert call.result().cold
        assert not rt.runtime.adopt_history("timer", b"\x93junk")
        assert not rt.runtime.adopt_history("nosuch", b"")
        assert rt.runtime.pools["timer"].keep_alive_view()["idle_samples"] == 0


def test_a_history_handed_off_is_forgotten_here() -> None:
    tracker = timer(300.0, 31)
    assert windows(tracker).source == "learned"
    changes = tracker.histogram.changes
    tracker.hand_off()
    # A copy started here while another node holds the history uses the fixed default, and
    # its first call records no idle time against this node's old activity.
    assert windows(tracker).source == "default" and tracker.histogram.changes > changes
    tracker.arrived(50_000.0)
    assert tracker.histogram.samples == 0


async def test_a_prewarm_is_skipped_once_another_node_started_the_function() -> None:
    clock, store, a, b = await two_nodes()
    for here, there in ((a, b), (b, a)):
        wire_through(store, here)
        pools = there.runtime.pools
        here.runtime.share_histories(lambda f, pools=pools: pools[f].registered)  # type: ignore[misc]
    calls = keepalive.MIN_SAMPLES + 5
    for i in range(calls):
        a.call("timer", b"0.1")
        await clock.run_for(PERIOD_S if i < calls - 1 else PERIOD_S / 2)
    pool, b_pool = a.runtime.pools["timer"], b.runtime.pools["timer"]
    prewarms = pool.prewarms
    assert prewarms > 0  # A learned the timer (its windows went with its history)
    assert pool.windows.source == "default"
    # Half a minute after A's last call its instance is gone (its history with it) and its
    # prewarm is due in about as long. The next call comes early, lands on B and runs 40 s.
    assert not pool.registered and len(store) == 1
    b.call("timer", b"40.0")
    await clock.run_for(1.0)
    assert b_pool.registered and b_pool.windows.source == "learned"  # B took the history
    await clock.run_for(PERIOD_S / 2 + 5.0)
    # A's old windows would prewarm it now; B holds it warm, so A does not.
    assert pool.prewarms == prewarms and not pool.registered
    await a.__aexit__(None, None, None)
    await b.__aexit__(None, None, None)


async def test_a_node_keeps_its_history_while_the_master_would_not_keep_it() -> None:
    # A rollout: the master runs a release before idle histories, so the node keeps its own.
    async with RuntimeHarness(RELEASE) as rt:
        kept = False
        rt.runtime.share_histories(lambda f: False, lambda: kept)
        for _ in range(keepalive.MIN_SAMPLES + 3):
            rt.call("timer", b"0.1")
            await rt.run_for(PERIOD_S)
        pool = rt.runtime.pools["timer"]
        cold = [e for e in rt.events if isinstance(e, FunctionCold)]
        assert cold and cold[-1].history  # sent all the same
        assert pool.windows.source == "learned" and pool.idle is not None
        assert pool.idle.histogram.samples >= keepalive.MIN_SAMPLES


COPY_RELEASE = fake_release({"fn": {"memory_mb": 64, "keep_alive_s": 600, "timeout_s": 900}})


async def test_a_copy_beside_a_warm_instance_elsewhere_is_kept_only_a_minute() -> None:
    clock = FakeClock()
    a = RuntimeHarness(COPY_RELEASE, clock=clock)
    b = RuntimeHarness(COPY_RELEASE, clock=clock)
    await a.__aenter__()
    await b.__aenter__()
    for here, there in ((a, b), (b, a)):
        pools = there.runtime.pools
        here.runtime.share_histories(lambda f, pools=pools: pools[f].registered)  # type: ignore[misc]
    a_pool, b_pool = a.runtime.pools["fn"], b.runtime.pools["fn"]
    b.call("fn", b"300.0")  # B holds the function warm, busy
    await clock.run_for(1.0)
    a.call("fn", b"0.1")  # a copy on A, which holds no history of it: the fixed default
    await clock.run_for(1.0)
    assert a_pool.registered and a_pool.windows.source == "default"
    await clock.run_for(keepalive.MIN_KEEP_ALIVE_S + 30.0)
    # Its idle time would save a forward, not a cold start: it goes after a minute, not 10.
    assert not a_pool.registered and b_pool.registered
    await clock.run_for(300.0 + keepalive.MIN_KEEP_ALIVE_S)
    # B's instance, the function's last warm one, keeps the fixed default.
    assert b_pool.registered
    await clock.run_for(600.0)
    assert not b_pool.registered
    await a.__aexit__(None, None, None)
    await b.__aexit__(None, None, None)
