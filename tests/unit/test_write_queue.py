"""WriteQueue against a fake master: nothing the runtime reports is ever lost, and whatever
the master loses is announced again (anti-entropy, on a FakeClock)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from tierfaas.cluster.state import NodeEndpoint
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control import wire
from tierfaas.control.api import Write
from tierfaas.control.backend import TableBackend
from tierfaas.control.digest import Digest, RunView
from tierfaas.control.entropy_metrics import AntiEntropyMetrics
from tierfaas.control.write_queue import WriteQueue
from tierfaas.testing import FakeClock


class FlakyMaster:
    """Refuses the first ``fail`` announces, then records what it is sent."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.announced: list[list[str]] = []
        self.registered: list[str] = []

    async def announce(
        self, node: str, epoch: int, functions: Sequence[str], **_: Any
    ) -> pb.WriteReply:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("refused")
        self.announced.append(list(functions))
        return pb.WriteReply(accepted=len(functions))

    async def register(self, writes: Sequence[Any], **_: Any) -> pb.WriteReply:
        self.registered += [w.function for w in writes]
        return pb.WriteReply(accepted=len(writes))

    async def unregister(self, writes: Sequence[Any], **_: Any) -> pb.WriteReply:
        return pb.WriteReply(accepted=len(writes))

    async def digest(self, node: str, epoch: int, **_: Any) -> RunView:
        return RunView(True, Digest(0, 0))


class OneChannel:
    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, address: str) -> Any:
        return self.client


class ByAddress:
    def __init__(self, **peers: Any) -> None:
        self.peers = peers

    def get(self, address: str) -> Any:
        return self.peers[address.split(":", maxsplit=1)[0]]


async def no_wait(_: float) -> None:
    """The queue's backoff: yields to the event loop, lets no time pass."""
    await asyncio.sleep(0)


async def settle() -> None:
    """Lets every ready task run until it waits again (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def run_queue(master: FlakyMaster) -> None:
    queue = WriteQueue(
        "n", 1, master=lambda: "m:1", channels=OneChannel(master),  # type: ignore[arg-type]
        sleep=no_wait,
    )  # fmt: skip
    queue.announce([])
    queue.start()
    await asyncio.sleep(0)  # the first announce fails; the queue backs off
    queue.warm("f02")  # leaves with the second announce, which fails too
    await settle()
    assert queue.pending == 0 and master.fail == 0
    await queue.stop()


def test_a_write_sent_with_a_failed_announce_is_not_lost() -> None:
    master = FlakyMaster(fail=2)
    asyncio.run(run_queue(master))
    assert "f02" in master.registered or any("f02" in a for a in master.announced)


# -- anti-entropy: a master that loses or rejects this node's writes ---------------------------


class MemoryMaster:
    """A master in memory: a real ``TableBackend`` on the test's FakeClock, answering as the
    gRPC client would (``WriteReply``, ``RunView``). ``members`` is its gossip view."""

    def __init__(self, clock: FakeClock) -> None:
        self.members: dict[str, NodeEndpoint] = {}
        self.backend = TableBackend(self.members.get, clock, master=True, window_s=0.1)
        self.announces = 0
        self.digests = 0

    @property
    def hub(self) -> Any:
        return self.backend.hub

    def holds(self, node: str) -> set[str]:
        self.hub.flush()
        return self.hub.table.functions_of(node)  # type: ignore[no-any-return]

    async def register(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        return self._reply(await self.backend.apply_writes(writes))

    async def unregister(self, writes: Sequence[Write], **_: Any) -> pb.WriteReply:
        return self._reply(await self.backend.apply_writes(writes))

    async def announce(
        self, node: str, epoch: int, functions: Sequence[str], **_: Any
    ) -> pb.WriteReply:
        self.announces += 1
        return self._reply(await self.backend.announce(node, epoch, functions))

    async def digest(self, node: str, epoch: int, **_: Any) -> RunView:
        self.digests += 1
        return self.backend.digest(node, epoch)

    @staticmethod
    def _reply(result: Any) -> pb.WriteReply:
        return wire.write_reply(result)


class MemoryReplica:
    """A replica whose copy is the master's flushed table (``lagging``: frozen as it is)."""

    def __init__(self, master: MemoryMaster, clock: FakeClock) -> None:
        self.master = master
        self.backend = TableBackend(master.members.get, clock, master=False, master_rpc="m:1")
        self.lagging = False
        self.digests = 0

    async def digest(self, node: str, epoch: int, **_: Any) -> RunView:
        self.digests += 1
        if not self.lagging:
            self.backend.copy.apply(self.master.hub.table.snapshot())
        return self.backend.digest(node, epoch)


def node_queue(
    master: MemoryMaster,
    clock: FakeClock,
    replica: MemoryReplica | None = None,
    registry: CollectorRegistry | None = None,
) -> WriteQueue:
    return WriteQueue(
        "w1", 7, master=lambda: "m:1", channels=ByAddress(m=master, r=replica),  # type: ignore[arg-type]
        replica=lambda: "r:1" if replica is not None else None,
        digest_period_s=1.0, digest_retry_s=0.2, clock=clock, sleep=clock.sleep,
        metrics=AntiEntropyMetrics(registry),
    )  # fmt: skip


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample of ``registry`` as a scrape of /metrics shows it (0 if absent)."""
    return registry.get_sample_value(name, labels) or 0.0


async def dead_and_back() -> None:
    clock = FakeClock()
    master = MemoryMaster(clock)
    master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    queue = node_queue(master, clock)
    queue.start()
    queue.warm("sha256")
    queue.warm("resize")
    await clock.run_for(0.01)
    assert master.holds("w1") == {"sha256", "resize"}
    # Gossip declared w1 dead: the master drops its run; w1 comes back with the same run
    # and hears nothing of it (no master change, so no announce of its own accord).
    master.hub.batcher.drop_node("w1", 7)
    assert master.holds("w1") == set()
    await clock.run_for(0.5)
    assert master.holds("w1") == set() and queue.repairs == 0  # not yet: checks are periodic
    await clock.run_for(0.6)  # the next check, one period after the last
    assert master.holds("w1") == {"sha256", "resize"} and queue.repairs == 1
    announces = master.announces
    await clock.run_for(5.0)  # agreed: checks only, no announce
    assert master.announces == announces and master.digests >= 5
    await queue.stop()


def test_a_run_the_master_dropped_is_announced_again_within_a_period() -> None:
    asyncio.run(dead_and_back())


async def rejected_then_alive() -> None:
    clock = FakeClock()
    master = MemoryMaster(clock)
    w1 = master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    queue = node_queue(master, clock)
    queue.start()
    await clock.run_for(0.1)  # the first check agreed: the next is due at 1.0
    del master.members["w1"]  # gossip declared w1 dead (a pause): it will be back
    await clock.run_for(0.1)
    queue.warm("sha256")
    await clock.run_for(0.01)
    assert queue.rejected == 1 and master.holds("w1") == set()
    await clock.run_for(0.3)  # checks every retry_s now: "not alive", nothing announced
    assert master.announces == 0
    master.members["w1"] = w1  # gossip has it back
    await clock.run_for(0.2)  # well before the period's check at 1.0
    assert master.holds("w1") == {"sha256"} and queue.repairs == 1
    await queue.stop()


def test_a_write_the_master_rejected_is_announced_once_the_master_holds_the_run() -> None:
    asyncio.run(rejected_then_alive())


async def lost_unregister() -> None:
    clock = FakeClock()
    master = MemoryMaster(clock)
    master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    queue = node_queue(master, clock)
    queue.start()
    queue.warm("sha256")
    await clock.run_for(0.01)
    # A master that lost its role kept a registration the new one never heard undone: here,
    # the table holds a function the node no longer has.
    master.hub.batcher.register("old", NodeEndpoint("w1", 7, None, None))
    await clock.run_for(1.0)
    assert master.holds("w1") == {"sha256"}
    await queue.stop()


def test_an_entry_the_node_no_longer_has_is_removed_by_the_announce() -> None:
    asyncio.run(lost_unregister())


async def through_the_replica() -> None:
    clock = FakeClock()
    master = MemoryMaster(clock)
    master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    replica = MemoryReplica(master, clock)
    queue = node_queue(master, clock, replica)
    queue.start()
    queue.warm("sha256")
    await clock.run_for(0.01)
    master.holds("w1")
    checks = master.digests
    await clock.run_for(3.0)  # in step: the replica answers every check, the master none
    assert master.digests == checks and replica.digests >= 3
    # The replica's copy lags (a delta in flight): it differs, the master does not.
    replica.lagging = True
    queue.warm("resize")
    await clock.run_for(1.0)
    assert master.digests == checks + 1 and master.announces == 0 and queue.repairs == 0
    # Declared dead and back: the master dropped the run, and the copy with it.
    replica.lagging = False
    master.hub.batcher.drop_node("w1", 7)
    master.holds("w1")
    await clock.run_for(1.0)
    assert master.holds("w1") == {"sha256", "resize"} and queue.repairs == 1
    await queue.stop()


def test_a_worker_checks_its_replica_and_only_a_difference_reaches_the_master() -> None:
    asyncio.run(through_the_replica())


async def announced_set_is_the_warm_set() -> None:
    clock = FakeClock()
    master = MemoryMaster(clock)
    master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    queue = node_queue(master, clock)
    queue.start()
    queue.warm("f")
    await clock.run_for(0.01)
    queue.announce(["h"])  # replaces the warm set: the checks must not bring "f" back
    await clock.run_for(3.0)
    assert master.holds("w1") == {"h"} and queue.warm_set == {"h"} and queue.repairs == 0
    await queue.stop()


def test_an_announced_set_becomes_the_warm_set_the_checks_compare() -> None:
    asyncio.run(announced_set_is_the_warm_set())


# -- /metrics: what anti-entropy did, for operators --------------------------------------------


async def repair_counted() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    master = MemoryMaster(clock)
    w1 = master.members["w1"] = NodeEndpoint("w1", 7, None, None)
    queue = node_queue(master, clock, registry=registry)
    queue.start()
    queue.warm("sha256")
    await clock.run_for(1.5)  # two checks, both agree
    agreed = sample(registry, "tierfaas_anti_entropy_checks_total", answer="agree")
    assert agreed >= 2
    assert sample(registry, "tierfaas_anti_entropy_repairs_total") == 0
    master.hub.batcher.drop_node("w1", 7)  # declared dead and back with the same run
    await clock.run_for(1.0)
    assert master.holds("w1") == {"sha256"}
    assert sample(registry, "tierfaas_anti_entropy_checks_total", answer="announce") == 1
    assert sample(registry, "tierfaas_anti_entropy_repairs_total") == 1
    # A write the master refuses (it does not see w1 alive), then checks that wait for it.
    del master.members["w1"]
    queue.warm("resize")
    await clock.run_for(0.3)
    assert sample(registry, "tierfaas_writes_rejected_total") == 1
    assert sample(registry, "tierfaas_anti_entropy_checks_total", answer="wait") >= 1
    master.members["w1"] = w1
    await clock.run_for(1.0)
    assert master.holds("w1") == {"sha256", "resize"}
    assert sample(registry, "tierfaas_anti_entropy_repairs_total") == 2
    assert queue.repairs == 2 and queue.rejected == 1
    await queue.stop()


def test_checks_repairs_and_rejected_writes_are_counted_in_metrics() -> None:
    asyncio.run(repair_counted())


async def failed_check_counted() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    master = MemoryMaster(clock)
    queue = WriteQueue(
        "w1", 7, master=lambda: None, channels=ByAddress(m=master),  # type: ignore[arg-type]
        digest_period_s=1.0, digest_retry_s=0.2, clock=clock, sleep=clock.sleep,
        metrics=AntiEntropyMetrics(registry),
    )  # fmt: skip
    # Every series exists from the start, so a rate over it is defined before any check.
    for answer in ("agree", "confirm", "announce", "wait", "failed"):
        assert (
            registry.get_sample_value("tierfaas_anti_entropy_checks_total", {"answer": answer}) == 0
        )
    queue.start()
    await clock.run_for(0.1)  # no master known: nobody to ask
    assert sample(registry, "tierfaas_anti_entropy_checks_total", answer="failed") == 1
    await queue.stop()


def test_a_check_nobody_answers_is_counted_as_failed() -> None:
    asyncio.run(failed_check_counted())
