"""The forward client (tierfaas.routing.peers) against real loopback servers.

What routing depends on: "unreachable" only when nothing was sent; every other failure is
"may have run"; connections are kept alive and reused, and one the peer closed is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tierfaas.routing.peers import PeerFailed, PeerPool, PeerResponse, PeerUnreachable
from tierfaas.testing.sockets import blackhole

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


def both_loops(check: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test once on asyncio's loop and once on uvloop's: the nodes run on
    uvloop, which calls ``connection_made`` only after ``create_connection`` returned."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    @functools.wraps(check)
    def test(loop: str, **kwargs: Any) -> None:
        LOOPS[loop](check(**kwargs))

    parameters = [inspect.Parameter("loop", inspect.Parameter.KEYWORD_ONLY)]
    parameters += [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(check).parameters.values()
    ]
    test.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    del test.__wrapped__  # pytest must see the signature above, and a plain function
    return test


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback TCP server; yields its address and a list with one entry per connection."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    host, port = srv.sockets[0].getsockname()[:2]
    try:
        yield f"{host}:{port}", connections
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return first, headers, body


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()


def echo(keep_alive: bool = True) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            first, headers, body = await read_request(reader)
            answer = first + b"|" + headers.get(b"x-test", b"") + b"|" + body
            connection = b"" if keep_alive else b"connection: close\r\n"
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nX-Load: 0.5\r\n"
                + connection
                + b"content-length: %d\r\n\r\n" % len(answer)
                + answer
            )
            await writer.drain()
            if not keep_alive:
                return

    return handle


def pool(idle_timeout_s: float = 10.0) -> PeerPool:
    return PeerPool(idle_timeout_s=idle_timeout_s)


async def call(
    peers: PeerPool, address: str, body: bytes = b"hi", timeout_s: float = 5.0
) -> PeerResponse:
    return await peers.request(
        address, "POST", "/function/f?a=1", {"x-test": "yes"}, body,
        connect_timeout_s=1.0, timeout_s=timeout_s,
    )  # fmt: skip


@both_loops
async def test_a_request_gets_status_headers_and_body_and_the_connection_is_reused() -> None:
    peers = pool()
    async with server(echo()) as (address, connections):
        for n in range(3):
            response = await call(peers, address, b"body%d" % n)
            assert response.status == 201
            assert response.headers["content-type"] == "text/plain"
            assert response.headers["x-load"] == "0.5"  # names are lower-cased
            assert response.body == b"POST /function/f?a=1 HTTP/1.1|yes|body%d" % n
        assert len(connections) == 1
        assert peers.opened == 1
    await peers.close()


@both_loops
async def test_concurrent_requests_use_separate_connections_then_pool_them() -> None:
    peers = pool()
    async with server(echo()) as (address, connections):
        answers = await asyncio.gather(*(call(peers, address, b"%d" % n) for n in range(5)))
        assert [a.body.rsplit(b"|", 1)[1] for a in answers] == [b"%d" % n for n in range(5)]
        assert len(connections) == 5
        assert peers.idle_count(address) == 5
        await asyncio.gather(*(call(peers, address) for n in range(5)))
        assert len(connections) == 5
    await peers.close()


@both_loops
async def test_a_connection_the_peer_closes_is_not_reused() -> None:
    peers = pool()
    async with server(echo(keep_alive=False)) as (address, connections):
        await call(peers, address)
        await call(peers, address)
        assert len(connections) == 2
        assert peers.idle_count(address) == 0
    await peers.close()


@both_loops
async def test_an_idle_connection_closed_by_the_peer_is_dropped_before_reuse() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_ok(reader, writer)
        await asyncio.sleep(0.1)  # then closes: a keep-alive timeout, or the peer stopped

    peers = pool()
    async with server(answer_once) as (address, connections):
        await call(peers, address)
        await asyncio.sleep(0.3)
        assert (await call(peers, address)).body == b"ok"
        assert len(connections) == 2
    await peers.close()


@both_loops
async def test_connections_idle_past_the_idle_timeout_are_not_reused() -> None:
    peers = pool(idle_timeout_s=0.1)
    async with server(echo()) as (address, connections):
        await call(peers, address)
        await asyncio.sleep(0.2)
        await call(peers, address)
        assert len(connections) == 2
    await peers.close()


@both_loops
async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    peers = pool()
    async with server(chunked) as (address, _):
        assert (await call(peers, address)).body == b"abcde"
    await peers.close()


@both_loops
async def test_a_refused_connect_is_unreachable() -> None:
    peers = pool()
    async with server(echo()) as (address, _):
        pass  # closed: its port now refuses
    with pytest.raises(PeerUnreachable) as caught:
        await call(peers, address)
    assert not caught.value.timed_out
    await peers.close()


@both_loops
async def test_a_connect_that_hangs_is_unreachable_and_timed_out() -> None:
    peers = pool()
    with blackhole() as (host, port), pytest.raises(PeerUnreachable) as caught:
        await peers.request(
            f"{host}:{port}", "POST", "/function/f", {}, b"",
            connect_timeout_s=0.2, timeout_s=5.0,
        )  # fmt: skip
    assert caught.value.timed_out
    await peers.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word: the call may have run before the peer died
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",  # cut off mid-body
        b"SMTP ready\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 200 + b"content-length: 0\r\n\r\n",
    ],
    ids=["closed", "cut-off", "garbage", "too-many-headers"],
)
@both_loops
async def test_a_broken_answer_after_sending_is_failed_not_unreachable(answer: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    peers = pool()
    async with server(broken) as (address, _):
        with pytest.raises(PeerFailed):
            await call(peers, address)
        assert peers.idle_count(address) == 0
    await peers.close()


@both_loops
async def test_an_oversized_answer_is_cut_off() -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        await reader.read()

    peers = PeerPool(idle_timeout_s=10.0, max_response_bytes=1000)
    async with server(big) as (address, _):
        with pytest.raises(PeerFailed, match="over 1000 bytes"):
            await call(peers, address)
    await peers.close()


@both_loops
async def test_an_answer_that_does_not_come_in_time_fails_and_the_connection_is_dropped() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1.0)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    peers = pool()
    async with server(slow) as (address, _):
        with pytest.raises(PeerFailed, match="no whole answer"):
            await call(peers, address, timeout_s=0.2)
        assert peers.idle_count(address) == 0
    await peers.close()


@both_loops
async def test_bytes_sent_while_idle_make_the_connection_unusable() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_ok(reader, writer)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno")  # unasked for
        await writer.drain()
        await reader.read()

    peers = pool()
    async with server(chatty) as (address, connections):
        assert (await call(peers, address)).body == b"ok"
        await asyncio.sleep(0.2)
        assert peers.idle_count(address) == 0
        assert (await call(peers, address)).body == b"ok"  # on a new connection
        assert len(connections) == 2
    await peers.close()
