"""The parts of the forward client (tierfaas.routing.peers) an http exec function's instance
depends on, against real loopback servers: how a failed request says what happened
(``PeerFailed.kind`` and ``received``), every response header in order (``header_list``),
a connection opened ahead (``warm``), and ``retry_stale``: a request on a reused connection
that the server closed before answering a byte is sent again, once, on a new connection, and
never in any other case (the request may have run)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.integration.test_peer_pool import Handler, both_loops, read_request, server
from tierfaas.routing.peers import PeerFailed, PeerPool, PeerResponse, PeerUnreachable

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def call(
    peers: PeerPool, address: str, *, retry_stale: bool = False, timeout_s: float = 5.0
) -> PeerResponse:
    return await peers.request(
        address, "POST", "/f", {}, b"body",
        connect_timeout_s=1.0, timeout_s=timeout_s, retry_stale=retry_stale,
    )  # fmt: skip


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


# -- warm ---------------------------------------------------------------------------------


@both_loops
async def test_warm_opens_one_idle_connection_the_next_request_uses() -> None:
    handler, seen = scripted()
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await peers.warm(address, connect_timeout_s=1.0)
        assert peers.idle_count(address) == 1 and peers.opened == 1
        assert seen == []  # nothing is sent
        assert (await call(peers, address)).body == b"ok"
        assert len(connections) == 1 and peers.opened == 1
        assert peers.idle_count(address) == 1
    await peers.close()


@both_loops
async def test_warm_beyond_the_idle_limit_keeps_only_the_limit() -> None:
    handler, _ = scripted()
    peers = PeerPool(idle_timeout_s=10.0, max_idle_per_peer=2)
    async with server(handler) as (address, _):
        for _ in range(3):
            await peers.warm(address, connect_timeout_s=1.0)
        assert peers.opened == 3 and peers.idle_count(address) == 2
    await peers.close()


@both_loops
async def test_warm_to_a_closed_port_is_unreachable() -> None:
    handler, _ = scripted()
    async with server(handler) as (address, _):
        pass  # closed: its port now refuses
    peers = PeerPool(idle_timeout_s=10.0)
    with pytest.raises(PeerUnreachable):
        await peers.warm(address, connect_timeout_s=1.0)
    assert peers.idle_count(address) == 0
    await peers.close()


# -- retry_stale --------------------------------------------------------------------------


@both_loops
async def test_a_reused_connection_closed_before_a_byte_is_retried_once_on_a_new_one() -> None:
    handler, seen = scripted([OK, None])  # the second request on the first connection: closed
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await call(peers, address)
        response = await call(peers, address, retry_stale=True)
        assert response.body == b"ok"
        assert len(connections) == 2 and len(seen) == 3
    await peers.close()


@both_loops
async def test_a_warmed_connection_closed_before_a_byte_is_retried() -> None:
    handler, seen = scripted([None])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await peers.warm(address, connect_timeout_s=1.0)
        assert (await call(peers, address, retry_stale=True)).body == b"ok"
        assert len(connections) == 2 and len(seen) == 2
    await peers.close()


@both_loops
async def test_without_retry_stale_a_reused_connection_closed_fails() -> None:
    handler, seen = scripted([OK, None])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await call(peers, address)
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address)
        assert (caught.value.kind, caught.value.received) == ("closed", False)
        assert len(connections) == 1 and len(seen) == 2
    await peers.close()


@both_loops
async def test_the_retry_is_made_once_only() -> None:
    handler, seen = scripted([OK, None], [None], [None])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        await call(peers, address)
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address, retry_stale=True)
        assert caught.value.kind == "closed"
        assert len(connections) == 2 and len(seen) == 3
    await peers.close()


@both_loops
async def test_a_new_connection_closed_before_a_byte_is_not_retried() -> None:
    handler, seen = scripted([None])
    peers = PeerPool(idle_timeout_s=10.0)
    async with server(handler) as (address, connections):
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address, retry_stale=True)
        assert (caught.value.kind, caught.value.received) == ("closed", False)
        assert len(connections) == 1 and len(seen) == 1
    await peers.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",  # closed after a byte came
        b"GARBAGE\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000,
    ],
    ids=["closed-after-a-byte", "garbage", "too-large"],
)
@both_loops
async def test_a_reused_connection_that_answered_anything_is_not_retried(answer: bytes) -> None:
    handler, seen = scripted([OK, answer])
    peers = PeerPool(idle_timeout_s=10.0, max_response_bytes=1000)
    async with server(handler) as (address, connections):
        await call(peers, address)
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address, retry_stale=True)
        assert caught.value.received
        assert len(connections) == 1 and len(seen) == 2
    await peers.close()


@both_loops
async def test_a_reused_connection_that_times_out_is_not_retried() -> None:
    async def silent_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        await reader.read()  # never answers the second

    peers = PeerPool(idle_timeout_s=10.0)
    async with server(silent_second) as (address, connections):
        await call(peers, address)
        with pytest.raises(PeerFailed) as caught:
            await call(peers, address, retry_stale=True, timeout_s=0.3)
        assert caught.value.kind == "timeout"
        assert len(connections) == 1
    await peers.close()
