from __future__ import annotations

import asyncio

from tierfaas.config import Address
from tierfaas.membership.base import (
    JoinStatus,
    MemberDown,
    MembershipEvent,
    MemberSuspect,
    MemberUp,
    MemberUpdated,
    NameConflictSelf,
)
from tierfaas.testing.clock import FakeClock
from tierfaas.testing.membership import FakeMembership, FakeNetwork


class Log:
    def __init__(self, m: FakeMembership) -> None:
        self.events: list[MembershipEvent] = []
        it = m.events()

        async def run() -> None:
            async for ev in it:
                self.events.append(ev)

        self.task = asyncio.create_task(run())

    def names(self, kind: type) -> list[str]:
        return [getattr(e, "member").name for e in self.events if isinstance(e, kind)]  # noqa: B009


async def started(net: FakeNetwork, *names: str) -> list[FakeMembership]:
    runs = [net.add(n, http=Address("127.0.0.1", 8000 + i)) for i, n in enumerate(names)]
    for r in runs:
        await r.start()
    return runs


async def test_join_kill_leave() -> None:
    net = FakeNetwork()
    a, b, c = await started(net, "a", "b", "c")
    log = Log(a)
    assert {m.name for m in b.members()} == {"a", "b", "c"}
    assert b.members()[0].epoch < c.epoch
    assert [m.http for m in a.members() if m.name == "b"] == [Address("127.0.0.1", 8001)]
    net.kill("b")
    await c.leave()
    await net.settle()
    downs = [(e.member.name, e.reason) for e in log.events if isinstance(e, MemberDown)]
    assert downs == [("b", "dead"), ("c", "left")]
    assert [m.name for m in a.members()] == ["a"]


async def test_suspect_then_recover() -> None:
    net = FakeNetwork()
    a, _ = await started(net, "a", "b")
    log = Log(a)
    net.suspect("b")
    net.recover("b")
    await net.settle()
    assert log.names(MemberSuspect) == ["b"]
    assert log.names(MemberUp) == ["b"]


async def test_restart_reads_as_left_then_joined_with_new_epoch() -> None:
    net = FakeNetwork()
    a, b = await started(net, "a", "b")
    log = Log(a)
    b.status = "dead"  # crashed with no one noticing yet
    b2 = net.add("b")
    await b2.start()
    await net.settle()
    assert b2.epoch > b.epoch
    assert [(type(e).__name__, e.member.epoch) for e in log.events] == [  # type: ignore[union-attr]
        ("MemberDown", b.epoch),
        ("MemberUp", b2.epoch),
        ("MemberUpdated", b2.epoch),  # the new run settles its cohort once it has joined
    ]


async def test_pause_resume_keeps_epoch_and_demotes() -> None:
    clock = FakeClock()
    net = FakeNetwork(clock)
    a, b, _ = await started(net, "a", "b", "c")
    log_b, log_a = Log(b), Log(a)
    net.pause("a")
    clock.advance(2)
    net.resume("a")
    await net.settle()
    assert log_a.events == [MemberUpdated(a.local)]  # only its own demotion, no member event
    seen = {m.name: m for m in b.members()}
    assert seen["a"].epoch == a.epoch
    assert seen["a"].demoted_since is not None and seen["a"].demoted_since > a.epoch
    assert log_b.names(MemberDown) == ["a"] and log_b.names(MemberUp) == ["a"]


async def test_unconfirmed_demotion_expires_after_partition() -> None:
    clock = FakeClock()
    net = FakeNetwork(clock, demotion_grace_s=1.5)
    a, b = await started(net, "a", "b")
    net.partition(["a"], ["b"])
    assert [m.name for m in a.members()] == ["a"]
    net.heal()
    assert next(m for m in b.members() if m.name == "a").demoted_since is not None
    clock.advance(1.0)
    net.tick()
    assert next(m for m in b.members() if m.name == "a").demoted_since is not None
    clock.advance(1.0)
    net.tick()
    assert next(m for m in b.members() if m.name == "a").demoted_since is None


async def test_meta_updates_and_join_failures() -> None:
    net = FakeNetwork()
    a, _ = await started(net, "a", "b")
    log = Log(a)
    await net.node("b").update_meta(http="127.0.0.1:9999")
    lonely = net.add("lonely", reachable=False)
    log_l = Log(lonely)
    await lonely.start()
    assert not lonely.joined and "no seed" in lonely.join_reason
    net.connect("lonely")
    dup = net.add("a")
    log_d = Log(dup)
    await dup.start()
    await net.settle()
    assert [m.http for m in a.members() if m.name == "b"] == [Address("127.0.0.1", 9999)]
    assert log.names(MemberUpdated) == ["b", "lonely"]  # lonely's cohort, once joined
    assert lonely.joined
    assert [e.joined for e in log_l.events if isinstance(e, JoinStatus)] == [False, True]
    assert any(isinstance(e, NameConflictSelf) for e in log_d.events)
    assert {m.name for m in a.members()} == {"a", "b", "lonely"}
