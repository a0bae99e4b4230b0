"""A control call whose channel ``Channels`` closes under it (its peer left the member view)
fails with ``ChannelClosed``, a ``ConnectionError``, and the task that made it goes on:
grpc.aio cancels such a call, which used to end a replica's Subscribe loop as if it had been
stopped, so the replica never followed the next master."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tierfaas.clock import monotonic
from tierfaas.cluster.state import NodeEndpoint
from tierfaas.config import Address
from tierfaas.control.backend import TableBackend
from tierfaas.control.replica_copy import ReplicaCopy
from tierfaas.control.replicator import Replicator
from tierfaas.control.server import ControlServer
from tierfaas.control.transport import ChannelClosed, Channels


async def test_a_subscription_whose_channel_is_closed_raises_channel_closed() -> None:
    backend = TableBackend(lambda name: None, monotonic, master=True)
    server = ControlServer(backend, bind=Address("127.0.0.1", 0), key=None, node="m")
    await server.start()
    channels = Channels(None)
    try:
        client = channels.get(str(server.address))
        stream = client.subscribe(0, "", "r")
        first = await anext(stream)  # the snapshot: the stream is open
        assert first is not None
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        channels.retain(())  # the master left the view: its channel is closed
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(waiting, 5)
    finally:
        await channels.close()
        await server.stop()


async def test_a_replicator_whose_channel_is_closed_subscribes_again() -> None:
    route = NodeEndpoint("w", 1, Address("127.0.0.2", 1), Address("127.0.0.2", 2))
    backend = TableBackend({"w": route}.get, monotonic, master=True, window_s=0.01)
    assert backend.hub is not None
    flusher = asyncio.get_running_loop().create_task(backend.hub.run())
    server = ControlServer(backend, bind=Address("127.0.0.1", 0), key=None, node="m")
    await server.start()
    channels = Channels(None)
    copy = ReplicaCopy()
    replicator = Replicator(
        copy, master=lambda: str(server.address), channels=channels, replica="r",
        initial_backoff_s=0.01, max_backoff_s=0.05,
    )  # fmt: skip
    replicator.start()
    try:
        async with asyncio.timeout(5):
            while replicator.subscriptions < 1 or not copy.loaded:
                await asyncio.sleep(0.01)
        channels.retain(())  # closes the channel the stream is on
        async with asyncio.timeout(5):
            while replicator.subscriptions < 2:
                await asyncio.sleep(0.01)
        backend.hub.batcher.register("f", route)
        backend.hub.wrote()
        async with asyncio.timeout(5):  # the new subscription is live
            while not copy.table.query("f"):
                await asyncio.sleep(0.01)
    finally:
        with contextlib.suppress(Exception):
            await replicator.stop()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await channels.close()
        await server.stop()
