"""Call ids, holders and homes by rendezvous hashing, takeover and claim decisions, the wire
forms of a call (no sockets)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfaas.calls import ids, lane, store, takeover, wire
from tierfaas.calls.model import Call, Failure, Request, Result, as_copy, view
from tierfaas.calls.replication import holders, keyed_homes, ranked
from tierfaas.control.lane import CALL_COPIES, CALL_OUTCOMES, CALLS_ACK
from tierfaas.control.wire import BadMessage


def test_ids_name_their_two_nodes() -> None:
    call_id = ids.new_id("node-a", "node.b", random_part="0101010101010101")
    assert call_id == "node-a~node.b~0101010101010101"
    assert ids.is_valid(call_id) and ids.parse(ids.new_id("a", "b"))
    assert ids.parse(call_id) == ("node-a", "node.b", "0101010101010101")
    assert ids.request_id(call_id, 3) == "c0101010101010101.3"


def test_ids_are_ordered_by_time_then_by_the_counter() -> None:
    sequence = iter([0xFFFFFE, 0xFFFFFF, 0x1000000, 5]).__next__
    made = [ids.new_random(lambda: 1764790000.123, sequence) for _ in range(3)]
    made.append(ids.new_random(lambda: 1764790000.124, sequence))
    assert made[0] == "9ae5ae59fbfffffe"  # 1764790000123 ms in 40 bits, then the counter
    assert all(ids.is_valid(f"a~b~{m}") for m in made) and len(set(made)) == 4
    assert made[0] < made[1] and made[3] > made[2]  # the counter wraps within its 24 bits
    assert made[2].endswith("000000") and made[3].endswith("000005")


@pytest.mark.parametrize(
    "bad", ["", "a~b", "a~b~c~d", "a~b~XYZ", "~b~0101010101010101", "a b~c~0101010101010101",
            "a~b~" + "0" * 17]
)  # fmt: skip
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ids.parse(bad)


def test_rendezvous_is_stable_and_moves_only_a_gone_nodes_keys() -> None:
    nodes = [f"n{i}" for i in range(5)]
    keys = [f"k{i}" for i in range(200)]
    before = {k: ranked(k, nodes)[0] for k in keys}
    assert before == {k: ranked(k, list(reversed(nodes)))[0] for k in keys}  # order-free
    after = {k: ranked(k, nodes[1:])[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "n0" for k in moved)
    assert len(set(before.values())) == 5  # spread over every node


def test_holders_never_include_the_origin() -> None:
    assert "a" not in holders("x", "a", ["a", "b", "c"])
    assert holders("x", "a", ["a"]) == []


def test_a_keyed_calls_second_choice_becomes_its_home() -> None:
    members = ["a", "b", "c", "d"]
    home, holder = keyed_homes("f", "key-1", members)[:2]
    rest = [m for m in members if m != home]
    assert keyed_homes("f", "key-1", rest)[0] == holder


def _call(origin: str, holder: str, n: int, **changes: object) -> Call:
    call = Call(f"{origin}~{holder}~{n:016x}", "f", accepted_at=1.0)
    return replace(call, **changes)  # type: ignore[arg-type]


def test_orphans_are_the_gone_origins_unfinished_copies() -> None:
    copies = [_call("a", "me", 1), _call("a", "me", 2, state="succeeded"), _call("b", "me", 3)]
    assert takeover.orphans(copies, "a", 5, {}) == [copies[0]]
    assert takeover.orphans(copies, "a", 5, {"a": 6}) == []  # claimed back by a newer run
    assert takeover.orphans(copies, "a", 7, {"a": 6}) == [copies[0]]  # and that one died too


def test_claims_go_to_the_holder_named_in_the_id() -> None:
    own = [_call("me", "h1", 1), _call("me", "h2", 2), _call("me", "h1", 3, state="dead"),
           _call("other", "me", 4), _call("me", "me", 5)]  # fmt: skip
    assert takeover.claims_by_holder(own, "me") == {
        "h1": [own[0].call_id],
        "h2": [own[1].call_id],
    }


# A call with every field set, for the round trips.
EVERY_FIELD = Call(
    "a~b~0123456789abcdef", "fn", accepted_at=5.0, due_at=7.0, attempts=2,
    request=Request(b"\x00body", "/p", "q=1", (("x-a", "1"), ("x-a", "2"))),
    idem_key="k", callback_url="http://127.0.0.1:1/", callback_state="pending",
    state="dead", finished_at=9.0, node="a", result=Result(500, "text/plain", b"no"),
    failure=Failure(504, "timeout", "too slow"),
)  # fmt: skip


def test_a_call_survives_the_wire() -> None:
    call = EVERY_FIELD
    assert wire.from_pb(wire.to_pb(call)) == call
    outcome = wire.from_pb(wire.to_pb(call, with_request=False))
    assert outcome.request == Request() and outcome.state == "dead"


@pytest.mark.parametrize(
    "changes",
    [{"call_id": "nope"}, {"function": "bad name"}, {"state": "lost"}, {"accepted_at": -1.0}],
)
def test_a_bad_record_is_refused(changes: dict[str, object]) -> None:
    record = wire.to_pb(Call("a~b~0123456789abcdef", "fn", accepted_at=1.0))
    for key, value in changes.items():
        setattr(record, key, value)
    with pytest.raises(BadMessage):
        wire.from_pb(record)


def _through_msgpack(row: list[object]) -> object:
    return msgpack.unpackb(msgpack.packb(row), raw=False)


def test_a_call_survives_the_lane_as_a_row() -> None:
    call = EVERY_FIELD
    assert wire.from_row(_through_msgpack(wire.to_row(call))) == call
    outcome = wire.from_row(_through_msgpack(wire.to_row(call, with_request=False)))
    assert outcome.request == Request() and outcome.state == "dead"
    assert outcome.result == call.result and outcome.failure == call.failure
    # A newer node's row has more fields at its end: they are ignored.
    assert wire.from_row(_through_msgpack([*wire.to_row(call), "later"])) == call


@pytest.mark.parametrize(
    ("field", "value"),
    [("call_id", "nope"), ("function", "bad name"), ("state", "lost"), ("accepted_at", -1.0),
     ("accepted_at", "1"), ("accepted_at", float("nan")), ("due_at", True),
     ("due_at", float("inf")), ("attempts", True), ("attempts", -1), ("body", "text"),
     ("headers", [["x", 1]]), ("result", [200, "t"]), ("failure", "boom"), ("node", None)],
)  # fmt: skip
def test_a_bad_row_is_refused(field: str, value: object) -> None:
    row = wire.to_row(Call("a~b~0123456789abcdef", "fn", accepted_at=1.0))
    row[wire.ROW_FIELDS.index(field)] = value
    with pytest.raises(BadMessage):
        wire.from_row(_through_msgpack(row))
    with pytest.raises(BadMessage):
        wire.from_row(row[:5])


class _Holder:
    """The part of a call service the lane's handlers use; keeps what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.copies: list[tuple[str, list[Call]]] = []
        self.outcomes: list[tuple[str, list[Call]]] = []
        self.fail = fail

    async def take_copies(self, origin: str, calls: list[Call]) -> int:
        if self.fail:
            raise OSError("disk full")
        self.copies.append((origin, calls))
        return len(calls)

    async def take_outcomes(self, origin: str, calls: list[Call]) -> None:
        self.outcomes.append((origin, calls))


async def test_the_holder_acks_a_batch_once_kept_and_says_why_it_did_not() -> None:
    holder = _Holder()
    frames = lane.holder_frames(lambda: holder)  # type: ignore[arg-type,return-value]
    acks: list[tuple[int, list[object]]] = []

    def reply(kind: int, payload: bytes) -> None:
        acks.append((kind, msgpack.unpackb(payload)))

    call = Call("a~b~0123456789abcdef", "fn", accepted_at=1.0)
    frames[CALL_COPIES](msgpack.packb([7, "a", [wire.to_row(call)]]), reply)
    frames[CALL_OUTCOMES](msgpack.packb([8, "a", [wire.to_row(call, with_request=False)]]), reply)
    frames[CALL_COPIES](msgpack.packb([9, "a", [["not", "a", "call"]]]), reply)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert holder.copies == [("a", [as_copy(call)])] and len(holder.outcomes) == 1
    assert acks[0] == (CALLS_ACK, [9, 0, acks[0][1][2]]) and "bad call" in str(acks[0][1][2])
    assert sorted(acks[1:]) == [(CALLS_ACK, [7, 1, ""]), (CALLS_ACK, [8, 1, ""])]
    holder.fail = True
    frames[CALL_COPIES](msgpack.packb([10, "a", [wire.to_row(call)]]), reply)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert acks[-1][1][:2] == [10, 0] and "disk full" in str(acks[-1][1][2])
    # A node still starting (no call service yet) keeps nothing, and says so.
    starting = lane.holder_frames(lambda: None)
    starting[CALL_COPIES](msgpack.packb([11, "a", []]), reply)
    assert acks[-1] == (CALLS_ACK, [11, 0, "this node takes no calls yet"])


@pytest.mark.parametrize(
    "payload", [b"\xc1", msgpack.packb({"seq": 1}), msgpack.packb([1, "bad name", []]),
                msgpack.packb(["1", "a", []]), msgpack.packb([1, "a", [[]] * 513])],
)  # fmt: skip
def test_a_frame_that_is_no_batch_closes_the_connection(payload: bytes) -> None:
    frames = lane.holder_frames(lambda: None)
    with pytest.raises(ValueError):
        frames[CALL_COPIES](payload, lambda kind, data: None)


def test_batches_keep_submissions_whole_and_bounded() -> None:
    def calls(n: int, body: bytes = b"") -> list[Call]:
        return [Call(f"a~b~{i:016x}", "f", 1.0, Request(body)) for i in range(n)]

    def pending(cs: list[Call], with_request: bool = True) -> tuple[list[Call], int, Any]:
        [(part, size)] = lane._parts(cs, with_request=with_request)
        return (part, size, loop.create_future())

    loop = asyncio.new_event_loop()
    try:
        queue = [pending(calls(300)), pending(calls(300)), pending(calls(1))]
        batches = lane._batches(queue)
        assert [[len(c) for c, _, _ in b] for b in batches] == [[300], [300, 1]]
        big = [pending(calls(1, b"x" * (5 << 20))) for _ in range(2)]
        assert [len(b) for b in lane._batches(big)] == [1, 1]
        small = [pending(calls(1, b"x" * (5 << 20)), with_request=False) for _ in range(2)]
        assert [len(b) for b in lane._batches(small)] == [2]
    finally:
        loop.close()


def test_a_submission_too_large_for_a_frame_is_cut_in_parts() -> None:
    many = [Call(f"a~b~{i:016x}", "f", 1.0) for i in range(lane.MAX_BATCH_ITEMS + 1)]
    assert [len(p) for p, _ in lane._parts(many, with_request=True)] == [512, 1]
    large = [Call(f"a~b~{i:016x}", "f", 1.0, Request(b"x" * (5 << 20))) for i in range(3)]
    assert [len(p) for p, _ in lane._parts(large, with_request=True)] == [1, 1, 1]
    assert [len(p) for p, _ in lane._parts(large, with_request=False)] == [3]


async def test_a_future_of_parts_resolves_when_all_are_done_or_one_failed() -> None:
    loop = asyncio.get_running_loop()
    parts = [loop.create_future() for _ in range(2)]
    whole: asyncio.Future[None] = loop.create_future()
    lane._all(parts, whole)
    parts[0].set_result(None)
    await asyncio.sleep(0)
    assert not whole.done()
    parts[1].set_result(None)
    await asyncio.sleep(0)
    assert whole.done() and whole.result() is None
    parts = [loop.create_future() for _ in range(2)]
    whole = loop.create_future()
    lane._all(parts, whole)
    parts[1].set_exception(lane.LaneError("lost"))
    await asyncio.sleep(0)
    assert isinstance(whole.exception(), lane.LaneError)


def test_the_view_shows_text_or_base64_bodies() -> None:
    text = view(Call("a~b~0123456789abcdef", "f", 1.0, result=Result(200, "t", b"hi")))
    assert text["result"] == {"status": 200, "content_type": "t", "body": "hi"}
    raw = view(Call("a~b~0123456789abcdef", "f", 1.0, result=Result(200, "t", b"\xff")))
    assert raw["result"]["body_base64"] == "/w=="
    assert raw["error"] is None and raw["callback"] is None


@pytest.mark.parametrize(
    ("status", "attempt", "expected"),
    [
        (200, 1, ("succeeded", None)),
        (204, 3, ("succeeded", None)),
        (404, 1, ("failed", None)),
        (429, 1, ("failed", None)),  # the function's own 429: its answer, not the node's
        (302, 1, ("failed", None)),
        (500, 1, ("queued", 0.5)),  # draw 0.5 below the first bound, 1 s
        (504, 2, ("queued", 1.0)),  # the second bound, 2 s
        (503, 3, ("dead", None)),  # max_retries 2: the third attempt is the last
    ],
)
def test_judge_an_attempt(status: int, attempt: int, expected: tuple[str, float | None]) -> None:
    from tierfaas.calls.retry import RetryPolicy
    from tierfaas.calls.service import judge

    assert judge(status, attempt, RetryPolicy(max_retries=2), draw=0.5) == expected


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6))
def test_kept_headers_are_written_as_json_dumps_writes_them(headers: list[tuple[str, str]]) -> None:
    pairs = tuple(headers)
    assert store._headers_json(pairs) == json.dumps(pairs)


def test_calls_are_values_equal_and_hashed_by_their_fields() -> None:
    """``model.record`` builds calls without a frozen dataclass's costly ``__init__``; they
    still compare and hash by value (a set or a dict key of calls keeps working)."""
    request = Request(b"x", "/p", "q=1", (("a", "b"),))
    one = Call("a~b~0101010101010101", "echo", 1.0, request, result=Result(200, "t", b"ok"))
    same = Call(
        "a~b~0101010101010101", "echo", 1.0, replace(request), result=Result(200, "t", b"ok")
    )
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    assert replace(one, state="dead") != one and one.state == "queued"
    assert hash(Failure(500, "e", "m")) == hash(Failure(500, "e", "m"))
