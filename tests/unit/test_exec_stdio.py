"""``StdioInstance`` without a process: the bytes a program would write are fed to its
``data_received`` (whole, byte by byte, and in every split), and what it writes for a call is
taken by a fake transport. As in test_instance_deadlines.py, the instance is built with no
zygote (its pid stays 0, so nothing is signalled or asked) on a ``FakeClock``; the fake
transport, like a real one, calls ``connection_lost`` soon after it is closed, which is how
an instance's calls learn it was stopped."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgpack
import pytest

from tierfaas import errors
from tierfaas.manifest import ExecCommand, FunctionSpec
from tierfaas.runtime import protocol as p
from tierfaas.runtime.exec_instance import MAX_LINE_BYTES, StdioInstance
from tierfaas.runtime.instance import Result
from tierfaas.runtime.zygote_client import ZygoteClient
from tierfaas.testing import FakeClock
from tierfaas.testing.clock import settle

Sizes = list[int] | int | None
BYTE_BY_BYTE = 1

SPEC = FunctionSpec(
    name="f",
    handler=None,
    command=ExecCommand(("./f",), "stdio"),
    concurrency=8,
    timeout_s=5.0,
)


class Transport:
    """Keeps what the instance writes; closing it ends the connection, as a socket's does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


def make(max_body: int = 1024) -> tuple[StdioInstance, Transport, FakeClock]:
    clock = FakeClock()
    instance = StdioInstance(1, SPEC, cast(ZygoteClient, None), clock)
    transport = Transport(instance)
    instance.connection_made(cast(Any, transport))
    instance.max_body = max_body
    return instance, transport, clock


def feed(instance: StdioInstance, data: bytes, sizes: Sizes) -> None:
    """``data`` in pieces, as reads may split it: of the listed sizes (then the rest at
    once), of one size over and over (an int), or all at once (None)."""
    if sizes is None:
        instance.data_received(data)
        return
    cuts = sizes if isinstance(sizes, list) else [sizes] * len(data)
    at = 0
    for size in cuts:
        if at >= len(data):
            return
        instance.data_received(data[at : at + size])
        at += size
    if at < len(data):
        instance.data_received(data[at:])


async def ready(instance: StdioInstance) -> None:
    instance.data_received(b"READY\n")
    assert instance.ready.done() and instance.ready.exception() is None


async def stopped(instance: StdioInstance, reason: str) -> None:
    await settle()
    assert instance.dead and instance.death_reason == reason
    assert instance.closed.done()


# -- READY --------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [None, BYTE_BY_BYTE, [3, 2, 1]])
async def test_ready_completes_the_start_however_it_is_split(sizes: Sizes) -> None:
    instance, _, _ = make()
    feed(instance, b"READY\n", sizes)
    assert instance.ready.done() and instance.ready.exception() is None
    assert not instance.dead


async def test_a_partial_ready_is_waited_for() -> None:
    instance, _, _ = make()
    instance.data_received(b"READY")
    assert not instance.ready.done() and not instance.dead
    instance.data_received(b"\n")
    assert instance.ready.done()


# -- CALL ---------------------------------------------------------------------------------


async def test_the_call_bytes_are_exact() -> None:
    instance, transport, _ = make()
    await ready(instance)
    instance.call(b"hello", {"request_id": "req-1"}, 2.5)
    instance.call(b"", {"request_id": "bad id!"}, 0.0001)
    instance.call(b"\n\x00x", None, 30.0)
    assert transport.written == b""  # calls of one pass of the loop leave in one write
    await settle()
    assert bytes(transport.written) == (
        b"CALL 1 5 req-1 2500\nhelloCALL 2 0 - 1\nCALL 3 3 - 30000\n\n\x00x"
    )


async def test_calls_made_after_a_flush_are_written_later() -> None:
    instance, transport, _ = make()
    await ready(instance)
    instance.call(b"a", None, 1.0)
    await settle()
    instance.call(b"bc", None, 1.0)
    await settle()
    assert bytes(transport.written) == b"CALL 1 1 - 1000\naCALL 2 2 - 1000\nbc"


# -- RESULT -------------------------------------------------------------------------------

ANSWERS = (
    b"READY\n"
    b"RESULT 2 201 3 text/plain; charset=utf-8\ntwo"
    b"RESULT 3 404 0\n"
    b'RESULT 1 200 10 application/json\n{"a":\n"b"}'
)


def splits() -> list[Sizes]:
    every: list[Sizes] = [[cut] for cut in range(1, len(ANSWERS))]  # two reads, cut anywhere
    return [None, BYTE_BY_BYTE, 2, 7, [7, 1, 40, 2, 2, 9], *every]


@pytest.mark.parametrize("sizes", splits())
async def test_results_answer_their_calls_out_of_order_however_split(
    sizes: Sizes,
) -> None:
    instance, _, _ = make()
    # Called before READY only to have the three futures: the node calls once it is ready,
    # and what the program answers is read the same either way.
    first = instance.call(b"1", None, 5.0)
    second = instance.call(b"2", None, 5.0)
    third = instance.call(b"3", None, 5.0)
    feed(instance, ANSWERS, sizes)
    assert instance.ready.done() and not instance.dead
    assert first.result() == Result(b'{"a":\n"b"}', "application/json", 200)
    assert second.result() == Result(b"two", "text/plain; charset=utf-8", 201)
    assert third.result() == Result(b"", "application/octet-stream", 404)
    assert instance.calls == {} and instance.deadlines == []
    assert instance.buffer == b"" and instance.body_of is None


async def test_a_body_split_across_reads_is_waited_for() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    instance.data_received(b"RESULT 1 200 10\n0123")
    assert not call.done()
    instance.data_received(b"456")
    assert not call.done()
    instance.data_received(b"789RESULT")  # the body ends; a next header begins
    assert call.result().body == b"0123456789"
    assert instance.buffer == b"RESULT" and not instance.dead


async def test_a_body_may_hold_anything_a_header_line_would_refuse() -> None:
    instance, _, _ = make(max_body=4096)
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    body = b"READY\n" + b"\xff" * 1000 + b"\nRESULT 9 9 9\n"
    instance.data_received(b"RESULT 1 200 %d\n" % len(body) + body)
    assert call.result().body == body and not instance.dead


async def test_an_answer_of_exactly_max_body_is_taken() -> None:
    instance, _, _ = make(max_body=16)
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    instance.data_received(b"RESULT 1 200 16\n" + b"b" * 16)
    assert call.result().body == b"b" * 16 and not instance.dead


async def test_an_answered_call_leaves_its_deadline_and_the_instance_lives_past_it() -> None:
    instance, _, clock = make()
    await ready(instance)
    call = instance.call(b"x", None, 1.0)
    instance.data_received(b"RESULT 1 200 0\n")
    assert call.done()
    await clock.run_for(10.0)
    assert not instance.dead


async def test_an_unanswered_call_times_out_and_stops_the_instance() -> None:
    instance, _, clock = make()
    await ready(instance)
    call = instance.call(b"x", None, 1.0)
    await clock.run_for(0.99)
    assert not call.done()
    await clock.run_for(0.02)
    with pytest.raises(errors.FunctionTimeout):
        await call
    await stopped(instance, "timeout")


# -- protocol errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"RESULT 1 200 0\n", "expected READY first"),
        (b"HELLO\n", "expected READY first"),
        (b"READY \n", "expected READY first"),
        (b"READY\r\n", "expected READY first"),
        (b"x" * MAX_LINE_BYTES, f"longer than {MAX_LINE_BYTES} bytes"),
    ],
)
async def test_a_broken_start_fails_the_start_and_stops_the_instance(
    data: bytes, detail: str
) -> None:
    instance, _, _ = make()
    instance.data_received(data)
    with pytest.raises(errors.ProtocolError, match="broke the stdio protocol during its start"):
        await instance.ready
    assert detail in instance.protocol_detail
    await stopped(instance, "protocol_error")


async def test_a_line_of_the_longest_length_is_read_and_one_byte_more_is_not() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    content_type = b"t/" + b"x" * (MAX_LINE_BYTES - len(b"RESULT 1 200 0 t/\n"))
    line = b"RESULT 1 200 0 " + content_type + b"\n"
    assert len(line) == MAX_LINE_BYTES
    # The content type is over its own limit of 200 characters: a protocol error, but found
    # by reading the whole line, not by the line's length.
    instance.data_received(line)
    await stopped(instance, "protocol_error")
    assert "content type" in instance.protocol_detail
    with pytest.raises(errors.ProtocolError):
        await call


async def test_a_line_one_byte_over_the_limit_is_refused_for_its_length() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    line = b"RESULT 1 200 0 " + b"t" * (MAX_LINE_BYTES - 15) + b"\n"
    assert len(line) == MAX_LINE_BYTES + 1
    instance.data_received(line)  # its newline in the same read
    await stopped(instance, "protocol_error")
    assert f"longer than {MAX_LINE_BYTES}" in instance.protocol_detail
    with pytest.raises(errors.ProtocolError):
        await call


async def test_an_over_long_line_stops_the_instance_without_waiting_for_its_end() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    feed(instance, b"RESULT 1 200 0 " + b"t" * (MAX_LINE_BYTES - 16), BYTE_BY_BYTE)
    assert not instance.dead  # 255 bytes without a newline: still a line
    instance.data_received(b"t")
    await stopped(instance, "protocol_error")
    assert f"longer than {MAX_LINE_BYTES}" in instance.protocol_detail
    with pytest.raises(errors.ProtocolError, match="broke the protocol"):
        await call


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"READY\n", "a second READY"),
        (b"RESULT 7 200 0\n", "call 7, which is not in flight"),
        (b"RESULT 1 200\n", "expected READY or RESULT"),
        (b"RESULT 1 999 0\n", "outside 200..599"),
        (b"RESULT 1 200 -1\n", "not a decimal number"),
        (b"RESULT 1 200 0 text/\xe9\n", "not printable ASCII"),
        (b"\n", "expected READY or RESULT"),
        (b"garbage", None),  # no newline: not an error yet
    ],
)
async def test_a_broken_answer_fails_every_call_in_flight(data: bytes, detail: str | None) -> None:
    instance, _, _ = make()
    await ready(instance)
    calls = [instance.call(b"x", None, 5.0) for _ in range(3)]
    instance.data_received(data)
    if detail is None:
        await settle()
        assert not instance.dead and not any(call.done() for call in calls)
        return
    await stopped(instance, "protocol_error")
    assert detail in instance.protocol_detail
    for call in calls:
        with pytest.raises(errors.ProtocolError, match="broke the protocol"):
            await call


async def test_a_result_for_an_answered_call_is_a_protocol_error() -> None:
    instance, _, _ = make()
    await ready(instance)
    first = instance.call(b"x", None, 5.0)
    second = instance.call(b"y", None, 5.0)
    instance.data_received(b"RESULT 1 200 1\naRESULT 1 200 1\na")
    assert first.result().body == b"a"
    await stopped(instance, "protocol_error")
    assert "call 1, which is not in flight" in instance.protocol_detail
    with pytest.raises(errors.ProtocolError):
        await second


async def test_bytes_after_a_protocol_error_are_not_read() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    instance.data_received(b"NONSENSE\nRESULT 1 200 0\n")
    await stopped(instance, "protocol_error")
    with pytest.raises(errors.ProtocolError):
        await call


# -- answers over the limit ---------------------------------------------------------------


async def test_an_answer_over_max_body_fails_its_call_and_stops_the_instance() -> None:
    instance, _, _ = make(max_body=16)
    await ready(instance)
    big = instance.call(b"x", None, 5.0)
    other = instance.call(b"y", None, 5.0)
    instance.data_received(b"RESULT 1 200 17\n")  # refused on its header: no body is read
    assert big.done()
    with pytest.raises(errors.ResponseTooLarge, match="answered 17 bytes, over the limit of 16"):
        await big
    await stopped(instance, "response_too_large")
    with pytest.raises(errors.InstanceCrashed):  # the instance was stopped under it
        await other


# -- the start failing in the process, before the program ------------------------------------


@pytest.mark.parametrize("sizes", [None, BYTE_BY_BYTE, [1, 5]])
async def test_a_start_failed_frame_before_ready_fails_the_start_with_its_message(
    sizes: Sizes,
) -> None:
    instance, _, _ = make()
    frame = msgpack.packb([p.START_FAILED, "ExecFailed", "cannot run './f': No such file"])
    feed(instance, frame, sizes)
    assert instance.ready.done()  # at once: not at the start's timeout
    with pytest.raises(errors.StartFailed) as info:
        await instance.ready
    assert "ExecFailed: cannot run './f': No such file" in str(info.value)
    assert instance.protocol_detail == ""


async def test_a_result_with_the_first_byte_of_a_msgpack_array_after_ready_is_broken() -> None:
    instance, _, _ = make()
    await ready(instance)
    call = instance.call(b"x", None, 5.0)
    instance.data_received(msgpack.packb([p.RESULT, 1, p.OK, b"x", "application/json", ""]))
    instance.data_received(b"\n")
    await stopped(instance, "protocol_error")
    with pytest.raises(errors.ProtocolError):
        await call
