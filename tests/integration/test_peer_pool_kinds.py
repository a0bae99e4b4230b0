"""What the forward client (tierfaas.routing.peers) tells beyond an answer, against real
loopback servers: how a failed request says what happened (``PeerFailed.kind`` and
``received``), and every response header in order, repeats included (``header_list``), which
a forward relays."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.integration.test_peer_pool import Handler, both_loops, read_request, server
from tierfaas.routing.peers import PeerFailed, PeerPool, PeerResponse

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def call(peers: PeerPool, address: str, *, timeout_s: float = 5.0) -> PeerResponse:
    return await peers.request(
        address, "POST", "/f", {}, b"body", connect_timeout_s=1.0, timeout_s=timeout_s
    )


def scripted(*per_connection: list[bytes | None]) -> tuple[Handler, list[bytes]]:
    """A server handler: connection n answers its requests with ``per_connection[n]`` in turn
    (None: read the request, then close without a byte) and closes after the last; the
    connections past the script answer every request ``OK``. Also the request lines it read,
    in order."""
    numbers = itertools.count()
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(numbers)
        script = per_connection[number] if number < len(per_connection) else None
        answers = list(script) if script is not None else []
        while True:
            first, _, _ = await read_request(reader)
            seen.append(first)
            answer = answers.pop(0) if answers else OK
            if answer is None:
                return  # the server closes the connection: no byte of an answer
            writer.write(answer)
            await writer.drain()
            if script is not None and not answers:
                return  # the end of its script: closed after the answer

    return handle, seen


# -- PeerFailed: kind and received ----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind", "received"),
    [
        (None, "closed", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "closed", True),
        (b"HTTP/1.1 200 OK\r\ncont", "closed", True),
        (b"SMTP ready\r\n\r\n", "unreadable", True),
        (b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 101 + b"\r\n", "unreadable", True),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 101\r\n\r\n" + b"x" * 101, "too_large", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n65\r\n" + b"x" * 101 + b"\r\n",
         "too_large", True),
    ],
    ids=["closed-silent", "closed-mid-body", "closed-mid-head", "garbage", "too-many-headers",
         "too-large", "too-large-chunked"],
)  # fmt: skip
@both_loops
async def test_a_failed_request_says_what_happened(
    answer: bytes | None, kind: str, received: bool
) -> None:
    handler, _ = scripted([answer])  # closed after it: a cut-off answer ends there
    peers = PeerPool(idle_timeout_s=10.0, max_response_bytes=100)
    async with server(handler) as (address, connections):
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address)
        assert (caught.value.kind, caught.value.received) == (kind, received)
        assert peers.idle_count(address) == 0
        assert len(connections) == 1
    await peers.close()


@pytest.mark.parametrize(
    ("answer", "received"),
    [(b"", False), (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", True)],
    ids=["silent", "partial"],
)
@both_loops
async def test_a_request_timed_out_says_whether_any_byte_came(
    answer: bytes, received: bool
) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # nothing more until the client gives up

    peers = PeerPool(idle_timeout_s=10.0)
    async with server(slow) as (address, _):
        with pytest.raises(PeerFailed, match="no whole answer") as caught:
            await call(peers, address, timeout_s=0.3)
        assert (caught.value.kind, caught.value.received) == ("timeout", received)
        assert peers.idle_count(address) == 0
    await peers.close()


# -- header_list --------------------------------------------------------------------------


@both_loops
async def test_header_list_keeps_every_header_in_order_with_repeats() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-One: 1\r\nset-cookie: b=2; Path=/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    handler, _ = scripted([answer])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, _):
        response = await call(peers, address)
    await peers.close()
    assert response.header_list() == [
        (b"set-cookie", b"a=1"),
        (b"x-one", b"1"),
        (b"set-cookie", b"b=2; Path=/"),
        (b"content-length", b"0"),
    ]
    assert response.headers["set-cookie"] == "b=2; Path=/"  # the dict keeps the last one


def test_header_list_without_raw_headers_is_the_dict() -> None:
    response = PeerResponse(200, {"x-a": "1", "content-type": "text/plain"}, b"")
    assert response.header_list() == [(b"x-a", b"1"), (b"content-type", b"text/plain")]


@both_loops
async def test_each_answer_on_a_kept_alive_connection_has_its_own_headers() -> None:
    first = b"HTTP/1.1 200 OK\r\nx-first: 1\r\ncontent-length: 0\r\n\r\n"
    second = b"HTTP/1.1 200 OK\r\nx-second: 2\r\ncontent-length: 0\r\n\r\n"
    handler, _ = scripted([first, second])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await call(peers, address)
        response = await call(peers, address)
        assert len(connections) == 1
    await peers.close()
    assert response.header_list() == [(b"x-second", b"2"), (b"content-length", b"0")]
    assert "x-first" not in response.headers
