"""Hop headers: what a receiver takes as a verified forward, and what it refuses (fails closed).

No wall clock anywhere: freshness is the receiver's rotating token, counted on its monotonic
clock (a FakeClock here), and replays are caught by the per-sender sequence window."""

from __future__ import annotations

import itertools

import pytest

from tierfaas import errors
from tierfaas.routing import forwarding as fw
from tierfaas.routing.forwarding import Hop, Refusal, Signer, Verifier, next_hop
from tierfaas.testing import FakeClock

KEY = b"k" * 32


def tokens() -> itertools.count[int]:
    return itertools.count(1)


def verifier(clock: FakeClock) -> Verifier:
    counter = tokens()
    return Verifier(KEY, clock, new_token=lambda: f"{next(counter):016x}")


def signed(
    signer: Signer, hop: Hop | None = None, request_id: str = "req1", function: str = "hello"
) -> dict[str, str]:
    hop = hop or next_hop(Hop(), "a", remaining_s=2.5)
    return signer.sign("b", request_id, function, hop)


def reason(result: Hop | Refusal) -> str:
    assert isinstance(result, Refusal), result
    return result.reason


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_signed_forward_verifies_with_the_remaining_time(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    hop = next_hop(Hop(), "a", remaining_s=2.5, start=True)
    assert receiver.check("req1", "hello", signed(signer, hop)) == Hop(1, ("a",), 2.5, True)
    # Deadlines travel as time left, never as a time of day.
    assert signed(signer)[fw.REMAINING] == "2500"
    assert fw.DEADLINE not in signed(signer)


def test_the_first_forward_to_a_node_is_stale_and_the_retry_with_its_token_passes(
    clock: FakeClock,
) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    assert reason(receiver.check("req1", "hello", signed(signer))) == "stale"
    assert errors.HopRefused("", reason="stale", token="").reject == fw.STALE  # retry once
    assert errors.HopRefused("", reason="forged", token="").reject == fw.REFUSED
    signer.learn("b", receiver.token)
    assert receiver.check("req1", "hello", signed(signer)).forwarded  # type: ignore[union-attr]


def test_forged_tampered_or_malformed_headers_are_refused(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    good = signed(signer)

    def check(headers: dict[str, str], request_id: str = "req1", function: str = "hello") -> str:
        return reason(receiver.check(request_id, function, headers))

    assert check(signed(Signer(b"x" * 32, run=signer.run))) == "forged"  # wrong key
    assert check(good, request_id="req2") == "forged"  # another request
    assert check(good, function="other") == "forged"  # another function
    assert check({**good, fw.PATH: "a,b"}) == "forged"
    assert check({**good, fw.HOPS: "2"}) == "forged"
    assert check({**good, fw.REMAINING: "60000"}) == "forged"  # more time than given
    assert check({**good, fw.START: "1"}) == "forged"  # permission to start it
    assert check({**good, fw.HOPS: "0"}) == "malformed"
    assert check({**good, fw.HOPS: "-3"}) == "malformed"
    assert check({**good, fw.PATH: ""}) == "malformed"
    assert check({**good, fw.REMAINING: "0"}) == "malformed"
    assert check({**good, fw.START: "yes"}) == "malformed"
    assert check({**good, fw.SIGNATURE: "zz"}) == "malformed"
    assert check({**good, fw.SIGNATURE: f"1700000000.000:{'0' * 64}"}) == "malformed"  # v1
    assert check({**good, fw.DEADLINE: "1700000000.000"}) == "malformed"  # retired header
    # Any hop header alone is a claim to be a forward: refused, never taken as outside.
    assert check({fw.HOPS: "1", fw.PATH: "a"}) == "unsigned"
    assert check({fw.START: "1"}) == "unsigned"
    assert check({fw.REMAINING: "1000"}) == "unsigned"


def test_a_replayed_signature_is_refused_and_reordering_is_not(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    first, second, third = signed(signer), signed(signer), signed(signer)
    assert isinstance(receiver.check("req1", "hello", third), Hop)
    assert isinstance(receiver.check("req1", "hello", first), Hop)  # overtaken: still fine
    assert reason(receiver.check("req1", "hello", first)) == "replayed"
    assert reason(receiver.check("req1", "hello", third)) == "replayed"
    assert isinstance(receiver.check("req1", "hello", second), Hop)
    # A client retrying with the same request id gets a new signature: not a replay.
    assert isinstance(receiver.check("req1", "hello", signed(signer)), Hop)


def test_a_signature_far_behind_the_senders_window_is_refused(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    old = signed(signer)
    signer._seq = itertools.count(fw.WINDOW + 1)  # a whole window of forwards later
    assert isinstance(receiver.check("req1", "hello", signed(signer)), Hop)
    assert reason(receiver.check("req1", "hello", old)) == "replayed"


def test_tokens_expire_on_the_receivers_monotonic_clock(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    held = signed(signer)  # captured now, replayed later
    clock.advance(fw.ROTATE_S)
    assert isinstance(receiver.check("req1", "hello", signed(signer)), Hop)  # previous token
    clock.advance(fw.ROTATE_S)
    assert reason(receiver.check("req1", "hello", held)) == "stale"
    assert reason(receiver.check("req1", "hello", signed(signer))) == "stale"
    signer.learn("b", receiver.token)
    assert isinstance(receiver.check("req1", "hello", signed(signer)), Hop)


def test_a_long_silence_drops_both_tokens(clock: FakeClock) -> None:
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    before = receiver.token
    clock.advance(10 * fw.ROTATE_S + 1)
    assert receiver.token != before
    assert receiver.previous is None
    assert reason(receiver.check("req1", "hello", signed(signer))) == "stale"


def test_a_restarted_receiver_refuses_what_was_signed_for_its_last_run(clock: FakeClock) -> None:
    # Tokens are random per run, so a capture made before a restart is stale after it.
    signer = Signer(KEY)
    first_run = Verifier(KEY, clock)
    signer.learn("b", first_run.token)
    captured = signed(signer)
    assert isinstance(first_run.check("req1", "hello", captured), Hop)
    second_run = Verifier(KEY, clock)
    assert reason(second_run.check("req1", "hello", captured)) == "stale"


def test_signatures_are_bound_to_the_target_node(clock: FakeClock) -> None:
    b, c = verifier(clock), Verifier(KEY, clock)
    signer = Signer(KEY)
    signer.learn("b", b.token)
    assert reason(c.check("req1", "hello", signed(signer))) == "stale"


def test_no_wall_clock_is_read(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node whose clock says it is another day verifies and signs the same.
    import time

    monkeypatch.setattr(time, "time", lambda: pytest.fail("read the wall clock"))
    receiver = verifier(clock)
    signer = Signer(KEY)
    signer.learn("b", receiver.token)
    assert isinstance(receiver.check("req1", "hello", signed(signer)), Hop)


def test_learn_ignores_what_is_not_a_token() -> None:
    signer = Signer(KEY)
    signer.learn("b", None)
    signer.learn("b", "not-a-token")
    assert signer.tokens == {}
    signer.learn("b", "0123456789abcdef")
    signer.forget("b")
    assert signer.tokens == {}


def test_next_hop_appends_self_and_counts() -> None:
    second = next_hop(next_hop(Hop(), "a", 5.0), "b", 4.0)
    assert second == Hop(2, ("a", "b"), 4.0)
    assert second.forwarded and not Hop().forwarded
