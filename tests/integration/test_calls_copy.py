"""Asynchronous calls between real control servers on loopback, each node with its real
store in a tmp dir; the function is a fake (``run``), the member view is set by the test.

An accept is answered only once the holder has the copy; outcomes reach the holder; the
holder takes over a gone origin's unfinished calls and a restarted origin claims back only
those the holder did not take; a keyed call is accepted by its home through any node; a
read on any node finds the call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tierfaas import errors
from tierfaas.calls import ids
from tierfaas.calls.logstore import CallLog
from tierfaas.calls.metrics import CallMetrics
from tierfaas.calls.model import Request
from tierfaas.calls.peers import RemotePeers
from tierfaas.calls.replication import keyed_homes
from tierfaas.calls.service import CallService, CallSettings
from tierfaas.clock import LoopScheduler
from tierfaas.cluster.state import MemberView
from tierfaas.config import Address
from tierfaas.control.api import QueryResult
from tierfaas.control.backend import TableBackend
from tierfaas.control.lane import QueryLaneServer
from tierfaas.control.server import ControlServer
from tierfaas.control.transport import Channels
from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.testing import fake_release

KEY = bytes(range(32))
RELEASE = fake_release({"f": {"max_instances": 2}})


@dataclass
class FakeReply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Cluster:
    """The member view every node of the test shares (each node sees the same runs)."""

    def __init__(self) -> None:
        self.runs: dict[str, MemberInfo] = {}

    def view(self) -> MemberView:
        return MemberView(dict(self.runs))


class Node:
    def __init__(self, name: str, folder: Path, cluster: Cluster, epoch: int = 1) -> None:
        self.name = name
        self.folder = folder
        self.cluster = cluster
        self.epoch = epoch
        self.ran: list[tuple[str, int]] = []
        self.gate: asyncio.Event | None = None  # set: calls wait for it before they answer
        self.status = 200
        self.server: ControlServer | None = None
        self.channels = Channels(KEY)
        self.service: CallService | None = None

    async def run(self, name: str, body: bytes, **kw: object) -> FakeReply:
        call = kw["call"]
        assert isinstance(call, tuple)
        self.ran.append(call)
        if self.gate is not None:
            await self.gate.wait()
        return FakeReply(self.status, b"ran " + body, [(b"content-type", b"text/plain")])

    async def start(self, claim: bool = False) -> CallService:
        backend = TableBackend(lambda _: None, time.monotonic, master=False)
        self.server = ControlServer(
            backend, bind=Address("127.0.0.1", 0), key=KEY, node=self.name,
            lane=Address("127.0.0.1", 0),
        )  # fmt: skip
        await self.server.start()
        assert self.server.address is not None
        store = CallLog(self.folder / "calls.log")
        store.open()
        peers = RemotePeers(
            name=self.name,
            view=self.cluster.view,
            epoch=lambda: self.epoch,
            channels=self.channels,
            key=KEY,
        )
        self.service = CallService(
            node=self.name,
            store=store,
            functions=RELEASE.functions,
            run=self.run,
            peers=peers,
            settings=CallSettings(retry_base_s=0.01, retry_cap_s=0.02, queue_max=50),
            scheduler=LoopScheduler(time.time),
            wall=time.time,
            metrics=CallMetrics(),
        )
        self.server.calls = self.service
        self.cluster.runs[self.name] = MemberInfo(
            self.name, self.epoch, MemberState.ALIVE, "x", rpc=self.server.address
        )
        await self.service.start(claim=claim)
        return self.service

    async def kill(self) -> None:
        """Gone as after kill -9: no goodbye, the store as it was committed."""
        self.cluster.runs.pop(self.name, None)
        if self.service is not None:
            await self.service.stop()
            self.service.store.close()
        if self.server is not None:
            await self.server.stop(0)
        await self.channels.close()
        self.channels = Channels(KEY)


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def nodes(tmp_path: Path) -> object:
    cluster = Cluster()
    made = [Node(n, tmp_path / n, cluster) for n in ("a", "b")]
    for node in made:
        await node.start()
    yield made
    for node in made:
        await node.kill()


async def test_an_accept_is_kept_on_two_nodes_and_its_outcome_reaches_the_holder(
    nodes: list[Node],
) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    accepted = await a.service.accept("f", Request(b"x", headers=(("x-h", "1"),)))
    origin, holder, _ = ids.parse(accepted.call_id)
    assert (origin, holder) == ("a", "b")
    copy = b.service.store.get(accepted.call_id)  # committed on b before the answer
    assert copy is not None and copy.role == "copy" and copy.request.headers == (("x-h", "1"),)
    await _until(lambda: a.ran == [(accepted.call_id, 1)])
    store = b.service.store
    await _until(lambda: (store.get(accepted.call_id) or copy).state == "succeeded")
    held = b.service.store.get(accepted.call_id)
    assert held is not None and held.result is not None and held.result.body == b"ran x"
    # Read through the holder: the origin's record answers.
    view = await b.service.get(accepted.call_id)
    assert view["state"] == "succeeded" and view["node"] == "a"


async def test_many_accepts_share_copy_round_trips(nodes: list[Node]) -> None:
    a = nodes[0]
    assert a.service is not None
    a.gate = asyncio.Event()
    accepted = await asyncio.gather(*(a.service.accept("f", Request(b"%d" % n)) for n in range(40)))
    assert len({x.call_id for x in accepted}) == 40
    assert isinstance(a.service.peers, RemotePeers)
    assert a.service.peers.frames < 40
    a.gate.set()


async def test_copies_wait_for_an_ack_when_enough_frames_are_in_flight(
    nodes: list[Node],
) -> None:
    """Accepts of successive loop turns (each turn's alone would be a frame) share frames once
    ``COPIES_IN_FLIGHT`` frames wait for their acks; every one is still answered."""
    a = nodes[0]
    assert a.service is not None and isinstance(a.service.peers, RemotePeers)
    a.gate = asyncio.Event()
    await a.service.accept("f", Request(b"warm"))  # the lane is connected
    before = a.service.peers.frames
    accepts = []
    for n in range(40):
        accepts.append(asyncio.ensure_future(a.service.accept("f", Request(b"%d" % n))))
        await asyncio.sleep(0)  # the next accept in another turn of the loop
    accepted = await asyncio.gather(*accepts)
    assert len({x.call_id for x in accepted}) == 40
    assert a.service.peers.frames - before <= 20
    a.gate.set()


async def test_the_holder_takes_over_a_gone_origins_calls(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    a.gate = asyncio.Event()  # a never finishes its calls
    accepted = [await a.service.accept("f", Request(b"%d" % n)) for n in range(3)]
    await _until(lambda: len(a.ran) == 1)  # its async share of f's 2 slots: 1
    await a.kill()
    taken = await b.service.take_over("a", 1)
    assert taken == 3
    await _until(lambda: len(b.ran) == 3)
    assert {call_id for call_id, _ in b.ran} == {x.call_id for x in accepted}
    await _until(lambda: all(b.service.store.get(x.call_id).state == "succeeded"  # type: ignore[union-attr]
                             for x in accepted))  # fmt: skip
    # The origin restarts on its store: the holder took them over, so it drops them all.
    a.epoch = 2
    a.gate = None
    a.ran.clear()
    restarted = await a.start(claim=True)
    await _until(lambda: all(restarted.store.get(x.call_id) is None for x in accepted))
    assert restarted.unfinished == 0
    # New calls run at once, while and after the claim: the dropped ones never.
    fresh = await restarted.accept("f", Request(b"new"))
    await _until(lambda: a.ran == [(fresh.call_id, 1)])
    assert (await restarted.get(accepted[0].call_id))["node"] == "b"


async def test_a_restarted_origin_keeps_what_the_holder_did_not_take(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    a.gate = asyncio.Event()
    accepted = await a.service.accept("f", Request(b"x"))
    await _until(lambda: len(a.ran) == 1)
    await a.kill()
    a.epoch = 2
    a.gate = None
    restarted = await a.start(claim=True)
    await _until(lambda: len(a.ran) == 2)  # run again: the first attempt was cut
    # Under the same attempt number: ``running`` is not written, and a cut attempt was
    # never judged (it uses none of the call's retries).
    assert a.ran[-1] == (accepted.call_id, 1)
    # A late notice of the old run's end takes nothing over: the new run claimed them.
    assert await b.service.take_over("a", 1) == 0
    await _until(lambda: restarted.store.get(accepted.call_id).state == "succeeded")  # type: ignore[union-attr]


async def test_a_running_call_reads_running_though_its_record_stays_queued(
    nodes: list[Node],
) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    a.gate = asyncio.Event()
    accepted = await a.service.accept("f", Request(b"x"))
    await _until(lambda: len(a.ran) == 1)
    kept = a.service.store.get(accepted.call_id)
    assert kept is not None and (kept.state, kept.attempts) == ("queued", 0)  # no write
    for node in (a, b):
        assert node.service is not None
        view = await node.service.get(accepted.call_id)
        assert (view["state"], view["attempts"]) == ("running", 1)
    assert [c["call_id"] for c in a.service.listed("running")] == [accepted.call_id]
    assert a.service.listed("queued") == []
    assert [c["state"] for c in a.service.listed()] == ["running"]
    a.gate.set()
    await _until(lambda: a.service.listed("running") == [])  # type: ignore[union-attr]
    assert (await a.service.get(accepted.call_id))["state"] == "succeeded"


async def test_a_keyed_call_is_accepted_once_through_any_node(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    first = await a.service.accept("f", Request(b"1"), idem_key="k")
    again = await b.service.accept("f", Request(b"2"), idem_key="k")
    assert again.call_id == first.call_id and again.replay
    home = ids.parse(first.call_id).origin
    await _until(lambda: len(a.ran) + len(b.ran) == 1)
    assert (a if home == "a" else b).ran == [(first.call_id, 1)]


async def test_no_second_copy_no_accept(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None
    await b.kill()
    with pytest.raises(errors.ClusterError):
        await a.service.accept("f", Request(b"x"))
    assert a.service.store.listed() == []
    assert a.service.unfinished == 0


async def test_dead_letters_of_every_node_and_retry(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    a.status = b.status = 503
    x = await a.service.accept("f", Request(b"x"))
    y = await b.service.accept("f", Request(b"y"))
    await _until(lambda: len(a.ran) == 3 and len(b.ran) == 3)  # max_retries 2: 3 attempts
    letters: dict[str, list[dict[str, object]]] = {"calls": []}

    async def dead() -> None:
        letters.update(await a.service.dead_letters(None, 10))  # type: ignore[union-attr]

    for _ in range(100):
        await dead()
        if len(letters["calls"]) == 2:
            break
        await asyncio.sleep(0.02)
    assert {c["call_id"] for c in letters["calls"]} == {x.call_id, y.call_id}
    b.status = 200
    retried = await a.service.get(y.call_id, retry=True)  # asked of b, its origin
    assert retried["state"] == "queued" and retried["attempts"] == 0
    await _until(lambda: len(b.ran) == 4)
    with pytest.raises(errors.NotFound):
        await a.service.get(ids.new_id("a", "b"))


async def test_an_accept_whose_caller_goes_away_still_runs(nodes: list[Node]) -> None:
    """The caller of an accept (its client, or the node that forwarded a keyed accept) is
    cancelled while the holder commits the copy: the call kept on both nodes is still
    queued and run, and a repeat of its key finds it."""
    a, b = nodes
    assert a.service is not None and b.service is not None
    key = next(
        k for k in (f"k{n}" for n in range(1000)) if keyed_homes("f", k, ["a", "b"])[0] == "a"
    )
    release = asyncio.Event()
    taking = b.service.take_copies

    async def slow_copies(origin: str, calls: Any) -> int:
        await release.wait()
        return await taking(origin, calls)

    b.service.take_copies = slow_copies  # type: ignore[method-assign]
    caller = asyncio.ensure_future(a.service.accept("f", Request(b"x"), idem_key=key))
    await asyncio.sleep(0.2)
    caller.cancel()
    release.set()
    await _until(lambda: len(a.ran) == 1)
    again = await a.service.accept("f", Request(b"x"), idem_key=key)
    assert again.replay and a.ran == [(again.call_id, 1)]


async def test_a_drain_lets_running_calls_end_and_tells_their_holder_first(
    nodes: list[Node],
) -> None:
    """What a draining origin does before it leaves: its running calls end and their holder
    records them, so the leave makes the holder take over only what is still queued."""
    a, b = nodes
    assert a.service is not None and b.service is not None
    a.gate = asyncio.Event()
    running = await a.service.accept("f", Request(b"1"))
    queued = await a.service.accept("f", Request(b"2"))  # f's async share here is 1
    await _until(lambda: len(a.ran) == 1)
    a.service.draining = True
    a.service.dispatcher.paused = True
    finishing = asyncio.ensure_future(a.service.finish_running(10.0))
    await asyncio.sleep(0.05)
    assert not finishing.done()  # the call still runs
    a.gate.set()
    await finishing
    held = b.service.store.get(running.call_id)
    assert held is not None and held.state == "succeeded"  # committed before the leave
    assert await b.service.take_over("a", 1) == 1  # only the queued one
    await _until(lambda: [c for c, _ in b.ran] == [queued.call_id])


async def test_a_copy_whose_answer_was_lost_is_withdrawn(nodes: list[Node]) -> None:
    """The holder commits the copy but the origin never hears so (it timed out): the accept
    fails, and the copy is marked final there, never to be taken over."""
    a, b = nodes
    assert a.service is not None and b.service is not None
    taking = b.service.take_copies

    async def kept_then_lost(origin: str, calls: Any) -> int:
        await taking(origin, calls)
        raise RuntimeError("the answer is lost")

    b.service.take_copies = kept_then_lost  # type: ignore[method-assign]
    with pytest.raises(errors.ClusterError):
        await a.service.accept("f", Request(b"x"))
    assert a.service.store.listed() == []
    await _until(lambda: not b.service.store.unfinished("copy"))  # type: ignore[union-attr]
    assert await b.service.take_over("a", 1) == 0


async def test_copies_go_on_after_the_holder_restarts(nodes: list[Node]) -> None:
    """The copy stream to a holder that went away is opened again to its new run."""
    a, b = nodes
    assert a.service is not None
    first = await a.service.accept("f", Request(b"1"))
    await b.kill()
    with pytest.raises(errors.ClusterError):  # no live peer: nothing accepted
        await a.service.accept("f", Request(b"2"))
    b.epoch = 2
    restarted = await b.start()
    again = await a.service.accept("f", Request(b"3"))
    assert ids.parse(again.call_id).holder == "b"
    assert restarted.store.get(again.call_id) is not None
    assert restarted.store.get(first.call_id) is not None  # its store kept the first copy


async def test_a_read_whose_nodes_do_not_answer_is_503_not_404(nodes: list[Node]) -> None:
    a, b = nodes
    assert a.service is not None and b.service is not None
    accepted = await b.service.accept("f", Request(b"x"))  # kept on b, copied to a

    async def broken(call_id: str, retry: bool) -> None:
        raise RuntimeError("cannot answer")

    b.service.get_here = broken  # type: ignore[method-assign]
    view = await a.service.get(accepted.call_id)  # the origin fails: a's own copy answers
    assert view["node"] == "b"
    stranger = ids.new_id("b", "b")  # kept by b alone, which does not answer
    with pytest.raises(errors.ClusterError):
        await a.service.get(stranger)


async def test_a_copy_waits_for_a_holder_whose_lane_is_not_up_yet(nodes: list[Node]) -> None:
    """A holder in the view whose lane does not answer yet (it has just joined): the copy is
    tried again until it does, within the copy's timeout, as gRPC's wait-for-ready did."""
    a, b = nodes
    assert a.service is not None and b.server is not None and b.server.lane is not None
    await b.server.lane.stop()
    b.server.lane = None  # Info says: no lane
    accepting = asyncio.ensure_future(a.service.accept("f", Request(b"x")))
    await asyncio.sleep(0.3)
    assert not accepting.done()
    lane = QueryLaneServer(
        lambda _: QueryResult([], 0), key=KEY, max_frame=8 << 20, frames=b.server.lane_frames()
    )
    await lane.start(Address("127.0.0.1", 0))
    b.server.lane = lane
    accepted = await asyncio.wait_for(accepting, 5)
    assert ids.parse(accepted.call_id).holder == "b"
