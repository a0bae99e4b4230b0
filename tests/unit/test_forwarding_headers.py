from tierfaas.routing.forwarding import Hop, next_hop, sign, verify

KEY = b"k" * 32


def test_signed_hops_verify() -> None:
    hop = next_hop(Hop(), "a", deadline=1000.5)
    headers = sign(KEY, "req1", "hello", hop, now=100.0)
    assert verify(KEY, "req1", "hello", headers, now=101.0) == Hop(1, ("a",), 1000.5)


def test_forged_or_tampered_headers_count_as_outside() -> None:
    hop = next_hop(Hop(), "a", deadline=1000.0)
    headers = sign(KEY, "req1", "hello", hop, now=100.0)
    assert verify(b"x" * 32, "req1", "hello", headers, now=100.0) == Hop()  # wrong key
    assert verify(KEY, "req2", "hello", headers, now=100.0) == Hop()  # another request
    assert verify(KEY, "req1", "other", headers, now=100.0) == Hop()  # another function
    assert verify(KEY, "req1", "hello", {**headers, "x-tierfaas-path": ""}, now=100.0) == Hop()
    assert verify(KEY, "req1", "hello", {**headers, "x-tierfaas-hops": "0"}, now=100.0) == Hop()
    assert verify(KEY, "req1", "hello", headers, now=200.0) == Hop()  # too old: replayed
    assert verify(KEY, "req1", "hello", {"x-tierfaas-hops": "5"}, now=100.0) == Hop()
    assert verify(KEY, "req1", "hello", {"x-tierfaas-forward": "zz"}, now=100.0) == Hop()


def test_next_hop_appends_self_and_counts() -> None:
    second = next_hop(next_hop(Hop(), "a", 5.0), "b", 4.0)
    assert second == Hop(2, ("a", "b"), 4.0)
    assert second.forwarded and not Hop().forwarded
