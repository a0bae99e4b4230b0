import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.routing.decision import Candidate, Forward, LocalState, Refresh, RunHere, decide

IDLE_WARM = LocalState(warm_instances=1, free_slots=1)
BUSY_WARM = LocalState(warm_instances=2, free_slots=0)
COLD = LocalState(warm_instances=0, free_slots=0)
B, C = Candidate("b"), Candidate("c")


def route(local: LocalState, candidates: list[Candidate], **kw: object) -> object:
    args: dict[str, object] = {"self_name": "a", "hops": 0, "hop_limit": 1}
    args.update(kw)
    return decide(local, candidates, rng=random.Random(1), **args)  # type: ignore[arg-type]


def test_warm_and_free_here_runs_here_even_with_candidates() -> None:
    assert route(IDLE_WARM, [B, C]) == RunHere(cold=False)


def test_cold_here_forwards_to_a_warm_node() -> None:
    assert route(COLD, [B]) == Forward("b")


def test_busy_here_forwards_rather_than_queue() -> None:
    assert route(BUSY_WARM, [B]) == Forward("b")


def test_busy_here_queues_when_a_slot_is_due_sooner_than_a_forward_would_take() -> None:
    soon = LocalState(warm_instances=1, free_slots=0, slot_due_s=0.001)  # a 1 ms call
    later = LocalState(warm_instances=1, free_slots=0, slot_due_s=0.0125)  # 100 ms, 8 slots
    assert route(soon, [B]) == RunHere(cold=False)
    assert route(later, [B]) == Forward("b")
    # Not warm here: nothing is due, whatever the number says.
    assert route(LocalState(0, 0, slot_due_s=0.0), [B]) == Forward("b")


def test_no_candidate_runs_cold_here_or_queues_when_warm() -> None:
    assert route(COLD, []) == RunHere(cold=True)
    assert route(BUSY_WARM, []) == RunHere(cold=False)
    assert RunHere(cold=True).route == "local-cold"


def test_at_the_hop_limit_a_request_runs_here() -> None:
    assert route(COLD, [B], hops=1) == RunHere(cold=True)
    assert route(COLD, [B], hops=1, hop_limit=2) == Forward("b")


def test_never_back_to_a_node_on_the_path_or_already_tried_or_self() -> None:
    assert route(COLD, [Candidate("a"), B], path=["b"], hop_limit=3, hops=1) == RunHere(cold=True)
    assert route(COLD, [B, C], tried=["b"]) == Forward("c")


@pytest.mark.parametrize("seed", range(20))
def test_two_choices_prefers_the_less_loaded(seed: int) -> None:
    loaded, idle = Candidate("b", 0.9), Candidate("c", 0.1)
    decision = decide(
        COLD, [loaded, idle], self_name="a", hops=0, hop_limit=1, rng=random.Random(seed)
    )
    assert decision == Forward("c")


def test_two_choices_spreads_over_equal_nodes() -> None:
    rng = random.Random(7)
    nodes = [Candidate(n, 0.2) for n in "bcdef"]
    picks = {
        decide(COLD, nodes, self_name="a", hops=0, hop_limit=1, rng=rng).node  # type: ignore[union-attr]
        for _ in range(200)
    }
    assert len(picks) >= 4


names = st.sampled_from(list("abcdefg"))


@given(
    warm=st.integers(0, 3),
    free=st.integers(0, 3),
    candidates=st.lists(names, max_size=6),
    path=st.lists(names, max_size=4),
    tried=st.lists(names, max_size=4),
    hops=st.integers(0, 3),
    limit=st.integers(0, 3),
)
def test_properties_no_loops_and_hop_limit(
    warm: int,
    free: int,
    candidates: list[str],
    path: list[str],
    tried: list[str],
    hops: int,
    limit: int,
) -> None:
    local = LocalState(warm, min(free, warm))
    decision = decide(
        local,
        [Candidate(n) for n in candidates],
        self_name="a",
        hops=hops,
        hop_limit=limit,
        path=path,
        tried=tried,
        rng=random.Random(0),
    )
    if isinstance(decision, Forward):
        assert decision.node != "a"
        assert decision.node not in path and decision.node not in tried
        assert hops < limit
        assert local.free_slots == 0
    else:
        assert isinstance(decision, RunHere)  # start_evicts is off: never a Refresh
        assert decision.cold == (warm == 0)


def test_a_function_warm_nowhere_goes_to_its_home_which_may_start_it() -> None:
    assert route(COLD, [], home="h") == Forward("h", start=True)
    assert route(COLD, [], home="a") == RunHere(cold=True)  # this node is the home
    assert route(COLD, [], home="h", tried=["h"]) == RunHere(cold=True)  # home refused
    assert route(COLD, [], home="h", hops=1) == RunHere(cold=True)  # at the hop limit
    assert route(BUSY_WARM, [], home="h") == RunHere(cold=False)  # warm here: queue here
    assert route(COLD, [B], home="h") == Forward("b")  # warm elsewhere beats the home


# -- the cluster as one cache (--cluster-cache): no evicting start on a cached answer -------

EVICTS = LocalState(warm_instances=0, free_slots=0, start_evicts=True)


def test_a_start_that_would_evict_asks_the_table_before_trusting_a_cached_empty_answer() -> None:
    assert route(EVICTS, [], fresh=False) == Refresh()
    # Answered by a lookup made for this call: run here (cold) as before.
    assert route(EVICTS, [], fresh=True) == RunHere(cold=True)


def test_a_start_that_does_not_evict_trusts_the_cache() -> None:
    assert route(COLD, [], fresh=False) == RunHere(cold=True)


def test_cached_candidates_all_tried_are_refreshed_before_an_evicting_start() -> None:
    assert route(EVICTS, [B], fresh=False, tried={"b"}) == Refresh()
    assert route(EVICTS, [B], fresh=True, tried={"b"}) == RunHere(cold=True)


def test_a_warm_candidate_still_wins_over_a_refresh() -> None:
    assert route(EVICTS, [B], fresh=False) == Forward("b")


def test_busy_here_queues_without_a_refresh() -> None:
    busy = LocalState(warm_instances=1, free_slots=0, start_evicts=True)
    assert route(busy, [], fresh=False) == RunHere(cold=False)


def test_a_forwarded_call_is_never_refreshed() -> None:
    assert route(EVICTS, [], fresh=False, hops=1) == RunHere(cold=True)
