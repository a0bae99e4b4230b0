"""A Subscribe stream has no deadline, but it has a bound on silence: when the master goes
silent (frozen, or a cut that sends no reset), the channel's keepalive pings go unanswered
and the stream ends within ``STREAM_SILENCE_BOUND_S``, so the replica resubscribes instead of
waiting on a dead connection for as long as the cut lasts.

The master is a real ``ControlServer`` behind a TCP relay; freezing the relay stops every byte
in both directions while keeping both connections open, as a SIGSTOPped peer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from grpc import aio

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.backend import TableBackend
from tierfaas.control.constants import STREAM_SILENCE_BOUND_S
from tierfaas.control.server import ControlServer
from tierfaas.control.transport import ControlClient

KEY = bytes(range(32))


class Relay:
    """Copies bytes between its clients and ``upstream`` until frozen."""

    def __init__(self, upstream: Address) -> None:
        self.upstream = upstream
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream.host, self.upstream.port)
        self.writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(source, sink))
            self.tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # hold the bytes, keep the socket open
                sink.write(data)
                await sink.drain()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_silent_master_ends_the_subscribe_stream_within_its_bound() -> None:
    members = {"w1": NodeEndpoint("w1", 7, Address("127.0.0.1", 9000), None)}
    master = TableBackend(members.get, time.monotonic, master=True, window_s=0.02)
    server = ControlServer(master, bind=Address("127.0.0.1", 0), key=KEY, node="m")
    await server.start()
    assert server.address is not None
    relay = Relay(server.address)
    client = ControlClient(await relay.start(), key=KEY)
    try:
        stream = client.subscribe(0, "", "r")
        first = await asyncio.wait_for(anext(stream), 5.0)  # the snapshot: the stream is open
        assert first is not None
        relay.frozen.set()
        began = time.monotonic()
        with pytest.raises(aio.AioRpcError):
            await asyncio.wait_for(anext(stream), STREAM_SILENCE_BOUND_S + 10.0)
        assert time.monotonic() - began <= STREAM_SILENCE_BOUND_S + 3.0
    finally:
        await client.close()
        await relay.close()
        await server.stop(0)
