"""The front door's rotation, health skipping and splicing, against small local servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from tierfaas.up.frontdoor import FrontDoor

HOST = "127.0.1.200"  # this file's loopback address; no other test uses it


class FakeNode:
    """Answers ``GET /readyz`` (200, or 503 when not ready); any other first bytes get the
    node's name and a newline, then an echo of everything until EOF."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.server: asyncio.Server | None = None

    async def start(self) -> FakeNode:
        self.server = await asyncio.start_server(self.handle, HOST, 0)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return HOST, int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(65536)
            if first.startswith(b"GET /readyz"):
                status = b"200 OK" if self.ready else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            elif first:
                writer.write(self.name.encode() + b"\n" + first)
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


def dead_address() -> tuple[str, int]:
    """An address where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return HOST, int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def front_door(addresses: list[tuple[str, int]]) -> AsyncIterator[FrontDoor]:
    door = FrontDoor(addresses, interval_s=30.0)  # checks only when a test asks
    await door.start(HOST, 0)
    try:
        yield door
    finally:
        await door.close()


async def ask(door: FrontDoor, payload: bytes = b"who") -> bytes:
    """One connection through the door: send, half-close, read everything."""
    reader, writer = await asyncio.open_connection(HOST, door.port)
    writer.write(payload)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def names(door: FrontDoor, count: int) -> list[str]:
    return [(await ask(door)).split(b"\n", 1)[0].decode() for _ in range(count)]


@pytest.fixture
async def nodes() -> AsyncIterator[list[FakeNode]]:
    started = [await FakeNode(name).start() for name in ("a", "b", "c")]
    yield started
    for node in started:
        await node.close()


async def test_round_robin_per_connection(nodes: list[FakeNode]) -> None:
    async with front_door([n.address for n in nodes]) as door:
        assert await names(door, 7) == ["a", "b", "c", "a", "b", "c", "a"]
        assert [b.connections for b in door.backends] == [3, 2, 2]


async def test_skips_a_backend_failing_its_health_check(nodes: list[FakeNode]) -> None:
    async with front_door([n.address for n in nodes]) as door:
        nodes[1].ready = False
        await door.check_all()
        assert [b.healthy for b in door.backends] == [True, False, True]
        assert await names(door, 4) == ["a", "c", "a", "c"]
        nodes[1].ready = True
        await door.check_all()
        assert sorted(await names(door, 3)) == ["a", "b", "c"]


async def test_refused_connection_tries_the_next_backend(nodes: list[FakeNode]) -> None:
    async with front_door([dead_address(), nodes[0].address, nodes[1].address]) as door:
        got = await names(door, 4)
        assert set(got) == {"a", "b"} and got[0] == "a"
        assert door.backends[0].healthy is False  # marked at the refusal, before any check
        assert door.rejected == 0


async def test_no_backend_answers_503(nodes: list[FakeNode]) -> None:
    async with front_door([dead_address(), dead_address()]) as door:
        answer = await ask(door, b"GET / HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"no_backend" in answer
        assert door.rejected == 1


async def test_splices_large_bodies_both_ways(nodes: list[FakeNode]) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: past the write-buffer limits
    async with front_door([nodes[0].address]) as door:
        answer = await ask(door, payload)
    assert answer == b"a\n" + payload


async def test_a_health_check_that_raises_does_not_end_the_checks(
    nodes: list[FakeNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    door = FrontDoor([n.address for n in nodes], interval_s=0.05)
    rounds = 0
    check_all = door.check_all

    async def flaky() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a bug in a check (test)")
        await check_all()

    monkeypatch.setattr(door, "check_all", flaky)
    await door.start(HOST, 0)
    try:
        nodes[1].ready = False
        async with asyncio.timeout(5):  # the loop went on after the first round raised
            while door.backends[1].healthy:
                await asyncio.sleep(0.02)
        assert rounds >= 2
    finally:
        await door.close()
