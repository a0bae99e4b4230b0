"""``placement.place`` (pure): where the master pins each function's ``min_instances``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tierfaas.control.placement import Wanted, place

TWO = {"f": Wanted(2, 4)}


def test_a_function_goes_to_two_nodes_the_least_loaded_first() -> None:
    warm = {"x": ["a", "b"], "y": ["a"]}  # a holds 2 functions, b 1, c none
    assert place(TWO, ["a", "b", "c"], warm) == {"f": {"c": 1, "b": 1}}


def test_nodes_where_the_function_is_warm_are_taken_first() -> None:
    warm = {"f": ["a"], "x": ["a", "b"]}
    assert place(TWO, ["a", "b", "c"], warm) == {"f": {"a": 1, "c": 1}}


def test_the_last_plan_is_kept_while_its_nodes_live() -> None:
    previous = {"f": {"a": 1, "b": 1}}
    warm = {"x": ["a", "b"]}  # busier than c, but already placed
    assert place(TWO, ["a", "b", "c"], warm, previous) == {"f": {"a": 1, "b": 1}}


def test_a_dead_nodes_pin_moves_to_another_live_node() -> None:
    previous = {"f": {"a": 1, "b": 1}}
    assert place(TWO, ["a", "c"], {}, previous) == {"f": {"a": 1, "c": 1}}


def test_fewer_nodes_than_asked_stack_up_to_max_instances() -> None:
    assert place({"f": Wanted(5, 2)}, ["a", "b"], {}) == {"f": {"a": 2, "b": 2}}
    assert place({"f": Wanted(3, 4)}, ["a"], {}) == {"f": {"a": 3}}


def test_functions_spread_over_the_nodes() -> None:
    wanted = {"f": Wanted(1, 4), "g": Wanted(1, 4), "h": Wanted(1, 4)}
    plan = place(wanted, ["a", "b", "c"], {})
    assert sorted(node for pins in plan.values() for node in pins) == ["a", "b", "c"]


def test_no_node_or_no_minimum_places_nothing() -> None:
    assert place(TWO, [], {}) == {}
    assert place({"f": Wanted(0, 4)}, ["a"], {}) == {}


def test_a_lower_minimum_drops_pins() -> None:
    previous = {"f": {"a": 1, "b": 1, "c": 1}}
    plan = place(TWO, ["a", "b", "c"], {}, previous)
    assert sum(plan["f"].values()) == 2 and set(plan["f"]) <= {"a", "b", "c"}


@given(
    minimum=st.integers(0, 10),
    maximum=st.integers(1, 4),
    nodes=st.lists(st.sampled_from("abcde"), unique=True),
    warm=st.lists(st.sampled_from("abcdefg"), unique=True),
    previous=st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 5)),
)
def test_the_plan_never_breaks_its_bounds(
    minimum: int, maximum: int, nodes: list[str], warm: list[str], previous: dict[str, int]
) -> None:
    plan = place({"f": Wanted(minimum, maximum)}, nodes, {"f": warm}, {"f": previous})
    pins = plan.get("f", {})
    assert set(pins) <= set(nodes)  # live nodes only
    assert all(0 < count <= maximum for count in pins.values())
    assert sum(pins.values()) == min(minimum, maximum * len(nodes))
    if minimum <= len(nodes):
        assert all(count == 1 for count in pins.values())  # one per node before stacking
