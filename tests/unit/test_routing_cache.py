import pytest

from tierfaas.routing.cache import RouteCache
from tierfaas.routing.decision import Candidate
from tierfaas.testing import FakeClock


def test_hit_miss_and_ttl() -> None:
    clock = FakeClock()
    cache = RouteCache(clock, size=10, ttl_s=5)
    assert cache.get("f") is None
    cache.put("f", (Candidate("b"),))
    assert cache.get("f") == (Candidate("b"),)
    clock.advance(4.9)
    assert cache.get("f") is not None
    clock.advance(0.2)
    assert cache.get("f") is None
    assert (cache.hits, cache.misses) == (2, 2)


def test_lru_bound_evicts_least_recently_used() -> None:
    cache = RouteCache(FakeClock(), size=2, ttl_s=60)
    cache.put("a", ())
    cache.put("b", ())
    cache.get("a")
    cache.put("c", ())
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


def test_drop_node_everywhere_and_per_function() -> None:
    cache = RouteCache(FakeClock(), ttl_s=60)
    cache.put("f", (Candidate("b"), Candidate("c")))
    cache.put("g", (Candidate("b"),))
    cache.drop("f", "c")
    assert cache.get("f") == (Candidate("b"),)
    cache.drop_node("b")
    assert cache.get("f") == () and cache.get("g") == ()


def test_load_is_recorded_for_two_choices() -> None:
    cache = RouteCache(FakeClock(), ttl_s=60)
    cache.put("f", (Candidate("b"), Candidate("c")))
    cache.note_load("f", "c", 0.75)
    assert cache.get("f") == (Candidate("b"), Candidate("c", 0.75))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RouteCache(FakeClock(), size=0)


def test_an_entry_emptied_by_a_drop_expires_as_fast_as_an_empty_answer() -> None:
    clock = FakeClock()
    cache = RouteCache(clock, ttl_s=5, empty_ttl_s=0.05)
    cache.put("f", (Candidate("c"), Candidate("d")))
    cache.put("g", (Candidate("b"),))
    cache.drop("f", "c")  # a refusal: still a candidate left, the entry keeps its TTL
    cache.drop_node("b")  # a suspicion: g is left empty
    assert cache.get("g") == ()
    clock.advance(0.06)
    assert cache.get("g") is None  # asked again: the function may be warm elsewhere
    assert cache.get("f") == (Candidate("d"),)
    cache.drop("f", "d")
    clock.advance(0.06)
    assert cache.get("f") is None
    cache.put("h", ())  # an empty answer, by default
    clock.advance(0.06)
    assert cache.get("h") is None


def test_a_drop_never_extends_an_entry() -> None:
    clock = FakeClock()
    cache = RouteCache(clock, ttl_s=5, empty_ttl_s=0.05)
    cache.put("f", (Candidate("b"),), ttl_s=0.01)
    cache.drop("f", "b")
    clock.advance(0.02)
    assert cache.get("f") is None
