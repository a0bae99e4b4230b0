"""Idle histories on the control plane (issue 19, local cold starts), on a FakeClock: the
master keeps the latest summary per function from the Unregisters, hands it to the next
Register of the function and forgets it, ages it by the time it held it, bounds what it holds,
refuses garbage without refusing the write, and loses it all with the role. The write queue
carries a FunctionCold's history and gives the Register answer's to the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import Write
from tierfaas.control.backend import TableBackend
from tierfaas.control.histories import HistoryStore
from tierfaas.control.table import Op
from tierfaas.control.write_queue import WriteQueue
from tierfaas.runtime import idle_summary, keepalive
from tierfaas.runtime.events import FunctionCold, FunctionWarm
from tierfaas.testing import FakeClock


def summary_bytes(period_s: float = 300.0, calls: int = 12, ended_ago_s: float = 0.0) -> bytes:
    tracker = keepalive.IdleTracker()
    for i in range(calls):
        tracker.arrived(i * period_s)
        tracker.ended(i * period_s + 1.0)
    return idle_summary.encode(tracker.summary(now=(calls - 1) * period_s + 1.0 + ended_ago_s))


def ended_ago(data: bytes) -> float | None:
    return keepalive.decode_summary(data).ended_ago_s


# -- the master's store ---------------------------------------------------------------------------


def test_the_store_hands_a_history_out_once_aged_by_the_time_it_held_it() -> None:
    clock = FakeClock()
    store = HistoryStore(clock)
    assert store.put("resize", summary_bytes(ended_ago_s=10.0))
    clock.advance(290.0)
    data = store.take("resize")
    assert data is not None and ended_ago(data) == 300.0
    assert store.take("resize") is None and len(store) == 0 and store.bytes == 0


def test_the_store_keeps_the_latest_history_of_a_function() -> None:
    store = HistoryStore(FakeClock())
    store.put("resize", summary_bytes(calls=12))
    store.put("resize", summary_bytes(calls=20))
    data = store.take("resize")
    assert data is not None
    assert (
        keepalive.decode_summary(data).histogram
        == keepalive.decode_summary(summary_bytes(calls=20)).histogram
    )


def test_the_store_refuses_garbage_and_counts_it() -> None:
    store = HistoryStore(FakeClock())
    store.put("resize", summary_bytes())
    assert not store.put("resize", b"\x93garbage")
    assert store.refused == 1
    assert "resize" in store  # the valid one it held stays


def test_the_store_is_bounded_in_entries_and_bytes_dropping_the_oldest_first() -> None:
    one = summary_bytes()
    store = HistoryStore(FakeClock(), max_entries=3, max_bytes=10 * len(one))
    for name in ("a", "b", "c", "d"):
        store.put(name, one)
    assert len(store) == 3 and "a" not in store and store.dropped == 1
    store = HistoryStore(FakeClock(), max_entries=100, max_bytes=2 * len(one))
    for name in ("a", "b", "c"):
        store.put(name, one)
    assert len(store) == 2 and "a" not in store and store.bytes == 2 * len(one)


# -- the master's backend -------------------------------------------------------------------------


def master(clock: FakeClock) -> TableBackend:
    members = {n: NodeEndpoint(n, 1, None, None) for n in ("w1", "w2")}
    return TableBackend(members.get, clock, master=True, window_s=0.1)


async def unregister_then_register() -> None:
    clock = FakeClock()
    backend = master(clock)
    await backend.apply_writes([Write(Op.ADD, "resize", "w1")])
    history = summary_bytes()
    result = await backend.apply_writes([Write(Op.REMOVE, "resize", "w1", history=history)])
    assert result.accepted == 1 and not result.histories
    clock.advance(120.0)
    result = await backend.apply_writes([Write(Op.ADD, "resize", "w2")])
    ((function, data),) = result.histories
    assert function == "resize" and ended_ago(data) == 120.0
    # Taken: a second node registering gets none.
    result = await backend.apply_writes([Write(Op.ADD, "resize", "w1")])
    assert not result.histories
    # Garbage is ignored, the unregistration applied all the same.
    result = await backend.apply_writes([Write(Op.REMOVE, "resize", "w1", history=b"junk")])
    assert result.accepted == 1 and backend.histories is not None
    assert backend.histories.refused == 1 and "resize" not in backend.histories
    # Soft state: the role's end loses them; a new master starts with none.
    await backend.apply_writes([Write(Op.REMOVE, "resize", "w2", history=history)])
    backend.demote("elsewhere:1")
    assert backend.histories is None
    backend.promote()
    assert backend.histories is not None and len(backend.histories) == 0


def test_the_master_hands_the_last_nodes_history_to_the_next_that_registers() -> None:
    asyncio.run(unregister_then_register())


def test_the_history_crosses_the_wire_in_both_directions() -> None:
    history = summary_bytes()
    routes = wire.writes_to_pb([Write(Op.REMOVE, "resize", "w1", 3, history)])
    (back,) = wire.writes_from_pb(Op.REMOVE, routes)
    assert back.history == history
    # A history on a Register's pair means nothing and is not read.
    (add,) = wire.writes_from_pb(Op.ADD, routes)
    assert add.history == b""
    reply = wire.write_reply(
        type("R", (), {"accepted": 1, "rejected": (), "histories": [("resize", history)]})()  # type: ignore[arg-type]
    )
    reply = pb.WriteReply.FromString(reply.SerializeToString())
    assert [(r.function, r.history) for r in reply.histories] == [("resize", history)]


# -- the node's write queue -----------------------------------------------------------------------


class RecordingMaster:
    """A master in memory (the real backend) that records what each call carried."""

    def __init__(self, clock: FakeClock) -> None:
        self.backend = master(clock)
        self.unregistered: list[Write] = []

    async def register(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        return wire.write_reply(await self.backend.apply_writes(writes))

    async def unregister(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        self.unregistered += writes
        return wire.write_reply(await self.backend.apply_writes(writes))

    async def digest(self, node: str, epoch: int, **_: Any) -> Any:
        return self.backend.digest(node, epoch)


class OneChannel:
    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, address: str) -> Any:
        return self.client


def queue(name: str, to: RecordingMaster, clock: FakeClock) -> WriteQueue:
    return WriteQueue(
        name, 1, master=lambda: "m:1", channels=OneChannel(to),  # type: ignore[arg-type]
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip


async def through_two_queues() -> None:
    clock = FakeClock()
    to = RecordingMaster(clock)
    w1, w2 = queue("w1", to, clock), queue("w2", to, clock)
    adopted: list[tuple[str, bytes]] = []
    w2.on_history = lambda function, data: adopted.append((function, data))
    w1.start()
    w2.start()
    history = summary_bytes()
    w1.on_event(FunctionWarm("resize"))
    await clock.run_for(0.01)
    w1.on_event(FunctionCold("resize", history))
    await clock.run_for(0.01)
    assert [(w.function, w.history) for w in to.unregistered] == [("resize", history)]
    clock.advance(60.0)
    w2.on_event(FunctionWarm("resize"))
    await clock.run_for(0.01)
    ((function, data),) = adopted
    assert function == "resize" and ended_ago(data) == pytest.approx(60.01)
    # Warm again before the Unregister left: the history stays home with the function.
    w1.on_event(FunctionWarm("thumb"))
    await clock.run_for(0.01)
    w1.cold("thumb", history)
    w1.warm("thumb")
    await clock.run_for(0.01)
    assert to.backend.histories is not None and "thumb" not in to.backend.histories
    await w1.stop()
    await w2.stop()


def test_a_cold_functions_history_reaches_the_node_that_registers_it_next() -> None:
    asyncio.run(through_two_queues())


def test_a_copys_poorer_history_does_not_replace_the_one_the_master_holds() -> None:
    # The node that carried the function's history went cold first (12 idle times); a copy
    # that served it beside it goes cold 30 s later with 3: the master keeps the richer
    # histograms, and the copy's end, the function's last activity in the cluster.
    clock = FakeClock()
    store = HistoryStore(clock)
    store.put("resize", summary_bytes(calls=13, ended_ago_s=0.0))
    clock.advance(30.0)
    store.put("resize", summary_bytes(calls=4, ended_ago_s=5.0))
    data = store.take("resize")
    assert data is not None
    merged = keepalive.decode_summary(data)
    rich = keepalive.decode_summary(summary_bytes(calls=13))
    assert merged.histogram == rich.histogram and merged.gaps == rich.gaps
    assert merged.ended_ago_s == pytest.approx(5.0)


class OlderMaster(RecordingMaster):
    """A master of a release before idle histories: its answers do not say it keeps them."""

    async def register(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        reply = await super().register(writes)
        reply.ClearField("keeps_histories")
        return reply


async def against(master: RecordingMaster) -> bool:
    clock = master.backend._clock  # type: ignore[attr-defined]
    w1 = queue("w1", master, clock)
    w1.start()
    assert not w1.master_keeps_histories  # until a master says so
    w1.on_event(FunctionWarm("resize"))
    await clock.run_for(0.01)
    await w1.stop()
    return w1.master_keeps_histories


def test_the_queue_knows_whether_the_master_keeps_histories() -> None:
    assert asyncio.run(against(RecordingMaster(FakeClock())))
    assert not asyncio.run(against(OlderMaster(FakeClock())))
