"""The query lane's connect has a bound: a peer whose port takes no connection (its accept
queue full, as a frozen node's fills up, or a cut that drops the SYN) fails the query at
the connect timeout instead of waiting out TCP's SYN retries (about two minutes)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest

from tierfaas.config import Address
from tierfaas.control.lane import QueryLaneClient


@contextlib.contextmanager
def unanswered_port() -> Iterator[Address]:
    """A listening port whose accept queue is full: the kernel drops further SYNs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # more than the queue takes; the rest stay in SYN_SENT
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield Address("127.0.0.1", port)
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_a_connect_that_hangs_fails_at_the_connect_timeout() -> None:
    with unanswered_port() as address:
        client = QueryLaneClient(address, key=None, timeout_s=5.0, connect_timeout_s=0.2)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError, match=r"within 0\.2 s"):
            await client.query("f")
        assert loop.time() - began < 2.0
        await client.close()


async def test_the_query_timeout_covers_the_connect() -> None:
    with unanswered_port() as address:
        client = QueryLaneClient(address, key=None, timeout_s=0.2, connect_timeout_s=30.0)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError):
            await client.query("f")
        assert loop.time() - began < 2.0
        await client.close()
