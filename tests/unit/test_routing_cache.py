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
