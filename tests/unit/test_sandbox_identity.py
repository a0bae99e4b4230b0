"""``identity.assign``: the uid map of a release's user namespace and each function's uid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.sandbox.identity import IdentityError, assign

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to setresuid: the largest usable id is one less


def test_root_maps_the_range_and_numbers_functions_in_sorted_order_from_one() -> None:
    ids = assign(["zeta", "alpha", "mid"], node_uid=0, base=200000, count=65536)
    assert ids.uid_map == "0 200000 65536\n"
    assert ids.zygote == 0
    assert ids.functions == {"alpha": 1, "mid": 2, "zeta": 3}
    assert (ids.of("alpha"), ids.of("zeta")) == (1, 3)


def test_uids_do_not_depend_on_the_order_the_names_come_in() -> None:
    names = ["b", "c", "a", "d"]
    first = assign(names, node_uid=0, base=1000, count=10)
    assert assign(set(names), node_uid=0, base=1000, count=10) == first
    assert assign(list(reversed(names)), node_uid=0, base=1000, count=10) == first


@given(st.sets(st.text(min_size=1, max_size=8), max_size=30))
def test_every_function_has_its_own_uid_never_the_zygotes(names: set[str]) -> None:
    ids = assign(names, node_uid=0, base=100000, count=64)
    uids = list(ids.functions.values())
    assert set(ids.functions) == names
    assert len(set(uids)) == len(uids)
    assert all(1 <= uid < 64 for uid in uids)  # inside the map, never 0 (the zygote)


def test_a_node_that_is_not_root_maps_only_its_own_uid_for_everyone() -> None:
    # The range settings are not used (a non-root node cannot map them), so none is checked.
    ids = assign(["a", "b"], node_uid=1000, base=0, count=0)
    assert ids.uid_map == "0 1000 1\n"
    assert ids.zygote == 0
    assert ids.functions == {"a": 0, "b": 0}


def test_the_range_must_hold_the_zygote_and_every_function() -> None:
    assert assign(["a", "b"], node_uid=0, base=5000, count=3).functions == {"a": 1, "b": 2}
    with pytest.raises(IdentityError, match="--sandbox-uid-count") as info:
        assign(["a", "b", "c"], node_uid=0, base=5000, count=3)
    assert "3 functions" in str(info.value)


def test_a_release_without_functions_still_needs_a_valid_range() -> None:
    assert assign([], node_uid=0, base=5000, count=2).functions == {}


@pytest.mark.parametrize(("base", "count"), [(0, 10), (-5, 10), (1000, 1), (1000, 0)])
def test_a_range_at_uid_0_or_of_fewer_than_2_ids_is_refused(base: int, count: int) -> None:
    with pytest.raises(IdentityError, match="start above 0 and hold 2 ids"):
        assign(["a"], node_uid=0, base=base, count=count)


def test_the_range_may_end_at_the_largest_uid_but_not_past_it() -> None:
    last = assign(["a"], node_uid=0, base=MAX_ID - 9, count=10)
    assert last.uid_map == f"0 {MAX_ID - 9} 10\n"
    with pytest.raises(IdentityError, match="past the largest uid"):
        assign(["a"], node_uid=0, base=MAX_ID - 8, count=10)  # would include (uid_t)-1
    with pytest.raises(IdentityError, match="past the largest uid"):
        assign(["a"], node_uid=0, base=2**32, count=10)
