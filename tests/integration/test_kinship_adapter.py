"""The kinship adapter against REAL kinship nodes on 127.0.0.1 (local preset), in one process."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import kinship
import pytest
from prometheus_client import CollectorRegistry

from tierfaas.config import Address
from tierfaas.errors import ConfigError
from tierfaas.keys import parse_key
from tierfaas.membership import MemberDown, MemberState, MemberUp
from tierfaas.membership.base import JoinStatus, MembershipEvent, Resync
from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership
from tierfaas.membership.meta import KEY_SINCE
from tierfaas.supervision import Supervisor
from tierfaas.testing.wait import eventually_async

LOOP = Address("127.0.0.1", 0)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    await eventually_async(cond, timeout)


class Recorder:
    def __init__(self, it: AsyncIterator[MembershipEvent]) -> None:
        self.events: list[MembershipEvent] = []
        self.task = asyncio.create_task(self._run(it))

    async def _run(self, it: AsyncIterator[MembershipEvent]) -> None:
        async for ev in it:
            self.events.append(ev)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def node(
    stack: AsyncExitStack,
    name: str,
    seeds: tuple[str, ...] = (),
    key: bytes | None = None,
    http_port: int = 0,
    supervisor: Supervisor | None = None,
) -> tuple[KinshipMembership, Recorder]:
    m = KinshipMembership(
        GossipSettings.local(bind=LOOP, seeds=seeds, key=key, join_retry_s=0.3),
        name=name,
        version="1.0.0",
        http=Address("127.0.0.1", http_port or 8000 + len(name)),
        rpc=Address("127.0.0.1", 9000),
        supervisor=supervisor,
    )
    rec = Recorder(m.events())  # subscribe before start: nothing is missed
    stack.push_async_callback(m.close)
    await m.start()
    return m, rec


async def test_three_members_join_parse_meta_and_leave(stack: AsyncExitStack) -> None:
    a, rec_a = await node(stack, "a")
    assert a.joined and a.join_reason == ""
    seed = (a.local.addr,)
    b, _ = await node(stack, "b", seed)
    c, _ = await node(stack, "c", seed)
    for m in (a, b, c):
        await wait_for(lambda m=m: len(m.members()) == 3)  # type: ignore[misc]
        assert m.joined
    view = {x.name: x for x in a.members()}
    assert view["c"].http == Address("127.0.0.1", 8001)
    assert view["c"].rpc == Address("127.0.0.1", 9000)
    assert view["c"].version == "1.0.0"
    assert view["c"].state is MemberState.ALIVE
    assert view["c"].epoch == c.local.epoch > 0
    # Cohorts: a formed the cluster; b joined it; c joined a cluster of a and b (seeing b
    # settled or still joining). Every member sees the same ones.
    assert (a.local.cohort, b.local.cohort) == (0, 1) and c.local.cohort in (1, 2)
    mine = {m.name: m.local.cohort for m in (a, b, c)}
    for m in (a, b, c):
        await wait_for(lambda m=m: {x.name: x.cohort for x in m.members()} == mine)  # type: ignore[misc]

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await c.leave()
    await wait_for(
        lambda: any(isinstance(e, MemberDown) and e.reason == "left" for e in rec_a.events), 2.0
    )
    assert loop.time() - t0 < 1.5
    assert {x.name for x in a.members()} == {"a", "b"}


async def test_wrong_key_never_joins(stack: AsyncExitStack) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    a, _ = await node(stack, "a", key=k1)
    d, rec = await node(stack, "d", (a.local.addr,), key=k2)
    assert not d.joined
    assert "no seed answered" in d.join_reason
    await asyncio.sleep(0.8)  # a few background retries
    assert not d.joined
    assert [m.name for m in d.members()] == ["d"]
    assert [m.name for m in a.members()] == ["a"]
    assert any(isinstance(e, JoinStatus) and not e.joined for e in rec.events)


async def test_seeds_that_never_answer_report_not_joined(stack: AsyncExitStack) -> None:
    seed = f"127.0.0.1:{free_udp_port()}"
    m, _ = await node(stack, "lonely", (seed,))
    assert not m.joined
    assert seed in m.join_reason and "retrying" in m.join_reason
    # A peer that reaches this node through its own seeds joins it into a cluster.
    other, _ = await node(stack, "friend", (m.local.addr,))
    await wait_for(lambda: m.joined)
    assert other.joined


async def test_garbage_metadata_from_a_peer(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await node(stack, "a")
    evil = kinship.Cluster(
        kinship.Config.local(
            name="evil",
            cluster="tierfaas",
            bind="127.0.0.1:0",
            seeds=[a.local.addr],
            meta={"http": "not-an-address", "rpc": "127.0.0.1:99999", "v": "ok\n\x00"},
        )
    )
    await evil.start()
    stack.push_async_callback(evil.close)
    caplog.set_level(logging.WARNING, "tierfaas.membership")
    await wait_for(lambda: len(a.members()) == 2)
    bad = next(m for m in a.members() if m.name == "evil")
    assert bad.http is None and bad.rpc is None and bad.version == ""
    assert bad.state is MemberState.ALIVE
    a.members()  # warned once, not on every read
    warnings = [r for r in caplog.records if "invalid metadata" in r.getMessage()]
    assert len(warnings) == 1


async def test_update_meta_reaches_peers_and_is_validated(stack: AsyncExitStack) -> None:
    a, _ = await node(stack, "a")
    b, _ = await node(stack, "b", (a.local.addr,))
    await a.update_meta(http="127.0.0.1:7777")
    await wait_for(
        lambda: any(m.http == Address("127.0.0.1", 7777) for m in b.members() if m.name == "a")
    )
    with pytest.raises(ConfigError):
        await a.update_meta(http="nope")
    with pytest.raises(ConfigError):
        await a.update_meta(big="x" * 600)


def test_settings_refuse_a_public_bind_without_key() -> None:
    with pytest.raises(ConfigError, match="no gossip key"):
        GossipSettings.lan(bind=Address("0.0.0.0", 7946), key=None)
    with pytest.raises(ConfigError, match="no gossip key"):
        GossipSettings.local(bind=LOOP, advertise=Address("10.0.0.1", 7946))
    key = os.urandom(32)
    s = GossipSettings.lan(bind=Address("0.0.0.0", 7946), key=base64.b64encode(key).decode())
    assert s.key == key
    assert repr(key) not in repr(s)  # keys are never shown
    assert parse_key(key) == key
    with pytest.raises(ConfigError):
        parse_key("short")
    with pytest.raises(ConfigError):
        parse_key(b"x" * 31)
    with pytest.raises(ConfigError):
        GossipSettings.local(bind=LOOP, seeds=("nohost",))


_PAUSED_NODE = """
import asyncio, sys
from tierfaas.config import Address
from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership
from tierfaas.membership.meta import KEY_SINCE

async def main() -> None:
    m = KinshipMembership(
        GossipSettings.local(bind=Address("127.0.0.1", 0)), name="old-master", version="1"
    )
    await m.start()
    print(m.local.addr, flush=True)
    while True:
        await asyncio.sleep(0.2)
        print("since", m.local.demoted_since, flush=True)

asyncio.run(main())
"""


async def test_sigstopped_run_comes_back_demoted(stack: AsyncExitStack) -> None:
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PAUSED_NODE, stdout=asyncio.subprocess.PIPE
    )

    async def reap() -> None:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    stack.push_async_callback(reap)
    assert proc.stdout is not None
    addr = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
    b, rec = await node(stack, "b", (addr,))
    await wait_for(lambda: len(b.members()) == 2)
    old = next(m for m in b.members() if m.name == "old-master")
    proc.send_signal(signal.SIGSTOP)
    await wait_for(
        lambda: any(isinstance(e, MemberDown) and e.reason == "dead" for e in rec.events), 6
    )
    proc.send_signal(signal.SIGCONT)
    # What the ClusterManager acts on is the MemberUp event (members() polls kinship's list,
    # which can name the run a moment before its event is handled and it is marked demoted).
    dead_at = next(
        i for i, e in enumerate(rec.events) if isinstance(e, MemberDown) and e.reason == "dead"
    )

    def came_back() -> list[MemberUp]:
        return [
            e
            for e in rec.events[dead_at:]
            if isinstance(e, MemberUp) and e.member.name == "old-master"
        ]

    await wait_for(lambda: bool(came_back()), 3)
    back = came_back()[0].member
    assert back.epoch == old.epoch and back.demoted_since is not None
    assert back.cohort_pending  # held demoted, after every settled run, until it confirms
    await asyncio.sleep(2.0)  # past the 1.5 s grace: the demotion was confirmed by the run
    back = next(m for m in b.members() if m.name == "old-master")
    assert back.demoted_since is not None and back.demoted_since > back.epoch
    # It formed the cluster (cohort 0) and came back after b (cohort 1): it ranks after b.
    assert old.cohort == 0 and not back.cohort_pending
    assert back.cohort == 2 and b.local.cohort == 1


# -- supervision: a crash in a membership task is counted and repaired, or reported -------------


def crashes(registry: CollectorRegistry, task: str) -> float:
    return registry.get_sample_value("tierfaas_task_crashes_total", {"task": task}) or 0.0


async def test_a_crashed_event_pump_is_counted_and_restarted_with_a_resync(
    stack: AsyncExitStack,
) -> None:
    registry = CollectorRegistry()
    a, rec = await node(stack, "a", supervisor=Supervisor(registry))
    handle = a._handle
    crashed: list[tuple[kinship.Event, int]] = []  # (the event, events published before it)

    def crash_once(event: kinship.Event) -> None:
        if not crashed:
            crashed.append((event, len(rec.events)))
            raise RuntimeError("a bug in the adapter")
        handle(event)

    a._handle = crash_once  # type: ignore[method-assign]
    await node(stack, "b", (a.local.addr,))
    await wait_for(lambda: crashes(registry, "membership-events") == 1)
    # The event the crash swallowed reaches subscribers anyway, in the Resync the restarted
    # pump publishes once it has subscribed again...
    event, before = crashed[0]
    assert isinstance(event, kinship.MemberJoined) and event.member.name == "b"
    await wait_for(lambda: any(isinstance(e, Resync) for e in rec.events[before:]))
    resync = next(e for e in rec.events[before:] if isinstance(e, Resync))
    assert {m.name for m in resync.members} == {"a", "b"}
    # ...and the events after it flow again.
    await node(stack, "c", (a.local.addr,))
    await wait_for(
        lambda: any(isinstance(e, MemberUp) and e.member.name == "c" for e in rec.events)
    )
    assert a.joined and crashes(registry, "membership-events") == 1


async def test_a_crashed_watchdog_is_counted_and_restarted(stack: AsyncExitStack) -> None:
    registry = CollectorRegistry()
    a, _ = await node(stack, "a", supervisor=Supervisor(registry))
    expire = a._resurrections.expire
    runs = 0

    def crash_once() -> list[tuple[str, int]]:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug in the watchdog")
        return expire()

    a._resurrections.expire = crash_once  # type: ignore[method-assign]
    await wait_for(lambda: runs >= 3)  # ticking again after the crash
    assert crashes(registry, "membership-watchdog") == 1


async def test_gossip_stopping_on_an_internal_error_makes_the_node_not_joined(
    stack: AsyncExitStack,
) -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry)
    a, rec = await node(stack, "a", supervisor=supervisor)

    def closed(event: kinship.Event) -> None:
        raise kinship.KinshipClosed("stopped on an internal error")

    a._handle = closed  # type: ignore[method-assign]
    await node(stack, "b", (a.local.addr,))  # an event for the pump
    await wait_for(lambda: not a.joined)
    assert "membership is frozen" in a.join_reason
    assert any(isinstance(e, JoinStatus) and not e.joined for e in rec.events)
    assert crashes(registry, "membership-events") == 1
    await asyncio.sleep(0.5)  # past the restart's backoff: the pump is not crash-looping
    assert crashes(registry, "membership-events") == 1 and not a.joined


async def test_a_crashed_metadata_update_is_sent_again_with_the_current_value(
    stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    a, _ = await node(stack, "a", supervisor=Supervisor(registry))
    b, _ = await node(stack, "b", (a.local.addr,))
    await wait_for(lambda: len(b.members()) == 2)
    update_meta = kinship.Cluster.update_meta
    calls = 0

    async def crash_once(cluster: kinship.Cluster, **changes: str | None) -> None:
        nonlocal calls
        if cluster is a._cluster:
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug on the way to kinship")
        await update_meta(cluster, **changes)

    monkeypatch.setattr(kinship.Cluster, "update_meta", crash_once)
    a._publish({KEY_SINCE: "1"}, "membership-demote")
    a._meta = {**a._meta, KEY_SINCE: "2"}  # a newer value, before the restart sends it

    def since_of_a_at_b() -> int | None:
        return next(m.demoted_since for m in b.members() if m.name == "a")

    await wait_for(lambda: since_of_a_at_b() == 2)
    assert crashes(registry, "membership-demote") == 1 and calls == 2
