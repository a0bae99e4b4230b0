"""The ``Prewarm`` RPC (min_instances, issue 19.5) over real gRPC on loopback: the node's sink
gets the master's pins, a sender that is not the node's master is refused with its address,
and a malformed placement is INVALID_ARGUMENT without reaching the sink."""

from __future__ import annotations

import math
import time

import grpc
import pytest
from grpc import aio

from tierfaas.config import Address
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import NotMasterError
from tierfaas.control.backend import TableBackend
from tierfaas.control.server import ControlServer
from tierfaas.control.transport import Channels, NotMaster

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = bytes(range(32))


async def test_prewarm_reaches_the_sink_and_is_fenced_by_the_master() -> None:
    taken: list[tuple[str, dict[str, int], float]] = []

    def sink(master: str, pins: dict[str, int], lease_s: float) -> tuple[dict[str, int], str]:
        if master != "m":
            raise NotMasterError("127.0.0.9:1")
        taken.append((master, pins, lease_s))
        return {f: c for f, c in pins.items() if f != "gone"}, "no function 'gone'"

    backend = TableBackend(lambda _: None, time.monotonic, master=False, master_rpc="127.0.0.9:1")
    server = ControlServer(backend, bind=Address("127.0.0.4", 0), key=KEY, node="n")
    server.on_prewarm = sink
    await server.start()
    channels = Channels(KEY)
    try:
        client = channels.get(str(server.address))
        reply = await client.prewarm({"f": 2, "gone": 1}, 5.0, "m")
        assert taken == [("m", {"f": 2, "gone": 1}, 5.0)]
        assert {p.function: p.count for p in reply.instances} == {"f": 2}
        assert "gone" in reply.error
        with pytest.raises(NotMaster) as refused:
            await client.prewarm({"f": 1}, 5.0, "old-master")
        assert refused.value.master == "127.0.0.9:1"
        for lease in (0.0, -1.0, math.nan, 1e9):
            with pytest.raises(aio.AioRpcError) as bad:
                await client.prewarm({"f": 1}, lease, "m")
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(aio.AioRpcError) as bad:
            await client.prewarm({"no/such": 1}, 5.0, "m")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(taken) == 1
        server.on_prewarm = None
        assert (await client.prewarm({"f": 1}, 5.0, "m")).error == "n takes no placement"
        assert isinstance(reply, pb.PrewarmReply)
    finally:
        await channels.close()
        await server.stop(0)
