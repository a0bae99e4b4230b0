"""An in-memory cluster for tests: ``FakeNetwork`` and its ``FakeMembership`` nodes.

Deterministic, no sockets, no threads: every change (join, kill, leave, pause, partition,
metadata) is delivered at once to the views of the nodes that can see it, through the same
event types as the real adapter. Each node keeps its *own* view, so tests can create the
disagreements real clusters have (a partition, a paused node). Revived runs are demoted with
the same ``Resurrections`` bookkeeping as ``KinshipMembership``; provisional demotions
expire when the test advances the clock and calls ``tick()``. Like the real adapter, a run
publishes its cohort as pending until it has joined, then settles it from its view
(``tierfaas.topology.next_cohort``). ``add(name, clock_offset_ms=...)`` makes a run whose wall
clock, and so its epoch, is off (negative: in the past).

    net = FakeNetwork()
    a, b = net.add("a"), net.add("b")
    await a.start(); await b.start()
    net.pause("a"); net.resume("a")     # same epoch, demoted
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from tierfaas.clock import Clock
from tierfaas.config import Address
from tierfaas.membership.base import (
    JoinStatus,
    MemberDown,
    MemberInfo,
    MembershipEvent,
    MemberState,
    MemberSuspect,
    MemberUp,
    MemberUpdated,
    NameConflictSelf,
)
from tierfaas.membership.demotion import Resurrections
from tierfaas.membership.fanout import EventFanout
from tierfaas.membership.meta import (
    COHORT_PENDING,
    KEY_COHORT,
    KEY_HTTP,
    KEY_RPC,
    KEY_SINCE,
    KEY_VERSION,
    parse_meta,
)
from tierfaas.testing.clock import FakeClock
from tierfaas.topology import next_cohort

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


class FakeMembership:
    """One run of one node on a ``FakeNetwork``. Implements ``tierfaas.membership.Membership``."""

    def __init__(
        self, network: FakeNetwork, name: str, epoch: int, meta: dict[str, str], reachable: bool
    ) -> None:
        self.network = network
        self.name = name
        self.epoch = epoch
        self.addr = f"127.0.0.1:{7000 + len(network._runs)}"
        self.meta = meta
        self.status = "new"  # new | running | paused | dead | left | conflict
        self.reachable = reachable
        self.state = ALIVE  # what the cluster is told about this run (alive or suspect)
        self._joined = False
        self._join_reason = "not started"
        self._view: dict[str, MemberInfo] = {}
        self._res = Resurrections(network.clock, network.wall_ms, network.demotion_grace_s)
        self._fanout = EventFanout(self.members)
        self.left_timeout: float | None = None

    # -- the Membership interface ------------------------------------------------------------

    @property
    def local(self) -> MemberInfo:
        return self.truth(ALIVE)

    @property
    def joined(self) -> bool:
        return self._joined

    @property
    def join_reason(self) -> str:
        return "" if self._joined else self._join_reason

    def members(self) -> list[MemberInfo]:
        if self.status not in ("running", "paused"):
            return []
        return [self.local, *(m for m in self._view.values() if m.state.live)]

    def events(self) -> AsyncIterator[MembershipEvent]:
        return self._fanout.subscribe()

    async def start(self) -> None:
        if self.status != "new":
            raise RuntimeError("membership already started")
        if any(
            r.name == self.name and r.status in ("running", "paused") for r in self.network._runs
        ):
            self.status = "conflict"
            self._fanout.publish(NameConflictSelf("127.0.0.1:1"))
            return
        self.status = "running"
        if not self.reachable:
            self._join_reason = "no seed answered (fake network)"
            self._fanout.publish(JoinStatus(False, self._join_reason))
            return
        self.network._join(self)

    async def update_meta(self, **changes: str | None) -> None:
        for k, v in changes.items():
            if v is None:
                self.meta.pop(k, None)
            else:
                self.meta[k] = v
        self._fanout.publish(MemberUpdated(self.local))
        self.network._broadcast(self)

    async def leave(self, timeout: float | None = None) -> None:
        self.left_timeout = timeout
        if self.status != "running":
            return
        self.status = "left"
        self.network._tell_all(self, LEFT)

    async def close(self) -> None:
        if self.status == "running" and self._joined:
            self.status = "dead"  # closing without leave() looks like a crash
            self.network._tell_all(self, DEAD)
        elif self.status in ("new", "running", "paused"):
            self.status = "dead"
        self._fanout.close()

    # -- internals ---------------------------------------------------------------------------

    @property
    def since(self) -> int | None:
        return parse_meta(self.meta).since

    @property
    def pending(self) -> int:
        return self._fanout.pending

    def truth(
        self, state: MemberState, since: int | None = None, held_demoted: bool = False
    ) -> MemberInfo:
        """This run as seen in ``state``; ``held_demoted``: by an observer that holds it
        demoted until it confirms (its cohort then counts as pending)."""
        meta = parse_meta(self.meta)
        return MemberInfo(
            self.name,
            self.epoch,
            state,
            self.addr,
            meta.http,
            meta.rpc,
            meta.version,
            since if since is not None else meta.since,
            meta.generation,
            meta.cohort,
            meta.cohort_pending or held_demoted,
        )

    def _set_joined(self) -> None:
        if not self._joined:
            self._joined = True
            self._fanout.publish(JoinStatus(True, ""))

    def settle_cohort(self, extra: dict[str, str] | None = None) -> None:
        """Publishes this run's cohort from its view now (with ``extra`` keys, in one update)."""
        cohort = next_cohort(self.members(), self.name)
        self.meta.update({**(extra or {}), KEY_COHORT: str(cohort)})
        self._fanout.publish(MemberUpdated(self.local))
        self.network._broadcast(self)

    def see(self, subject: FakeMembership, state: MemberState) -> None:
        """Updates this node's view of ``subject`` and emits what a real node would."""
        if self.status != "running":
            return  # a paused, dead or departed run hears nothing
        prev = self._view.get(subject.name)
        if prev is not None and prev.epoch < subject.epoch and prev.state.live:
            # A restart under the same name: the old run left, the new one joins.
            gone = replace(prev, state=LEFT)
            self._view[subject.name] = gone
            self._res.forget(prev.key)
            self._fanout.publish(MemberDown(gone, "left"))
            prev = gone
        if prev is not None and prev.epoch > subject.epoch:
            return  # news about an older run changes nothing
        key = (subject.name, subject.epoch)
        if state is DEAD or state is LEFT:
            if prev is None or not prev.state.live:
                return
            if state is DEAD:
                self._res.saw_dead(key)
            else:
                self._res.forget(key)
            info = subject.truth(state, self._res.demoted_since(key, subject.since))
            self._view[subject.name] = info
            self._fanout.publish(MemberDown(info, "dead" if state is DEAD else "left"))
            return
        self._res.revived(key)
        since = self._res.demoted_since(key, subject.since)
        info = subject.truth(state, since, self._res.unconfirmed(key))
        self._view[subject.name] = info
        if prev is None or not prev.state.live:
            self._fanout.publish(MemberUp(info))
        elif prev.state is ALIVE and state is SUSPECT:
            self._fanout.publish(MemberSuspect(info))
        elif prev.state is SUSPECT and state is ALIVE:
            self._fanout.publish(MemberUp(info))
        elif prev != info:
            self._fanout.publish(MemberUpdated(info))

    def expire(self) -> None:
        for name, epoch in self._res.expire():
            cur = self._view.get(name)
            if cur is not None and cur.epoch == epoch and cur.state.live:
                info = replace(
                    cur,
                    demoted_since=self._res.demoted_since(cur.key, None),
                    cohort_pending=parse_meta(self.network.node(name).meta).cohort_pending,
                )
                self._view[name] = info
                self._fanout.publish(MemberUpdated(info))


class FakeNetwork:
    """Nodes, who can see whom, and the clocks. Every method acts at once; ``settle()`` lets
    the consumers of events catch up."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        start_ms: int = 1_700_000_000_000,
        demotion_grace_s: float = 1.5,
    ) -> None:
        self.clock: Clock = clock if clock is not None else FakeClock()
        self._t0 = self.clock()
        self._start_ms = start_ms
        self._last_epoch = 0
        self.demotion_grace_s = demotion_grace_s
        self._runs: list[FakeMembership] = []
        self._group: dict[str, int] = {}

    def wall_ms(self) -> int:
        """Unix ms, following the fake clock."""
        return self._start_ms + int((self.clock() - self._t0) * 1000)

    def add(
        self,
        name: str,
        *,
        http: Address | None = None,
        rpc: Address | None = None,
        version: str = "1",
        reachable: bool = True,
        clock_offset_ms: int = 0,
    ) -> FakeMembership:
        """A new run of node ``name`` (not started). Its epoch is above every earlier one,
        unless ``clock_offset_ms`` says its wall clock is off: its epoch is then the network's
        time plus the offset (negative: a run that seems to have started in the past)."""
        if clock_offset_ms:
            epoch = self.wall_ms() + clock_offset_ms
        else:
            epoch = self._last_epoch = max(self.wall_ms(), self._last_epoch + 1)
        meta = {KEY_VERSION: version, KEY_COHORT: COHORT_PENDING}
        if http is not None:
            meta[KEY_HTTP] = str(http)
        if rpc is not None:
            meta[KEY_RPC] = str(rpc)
        run = FakeMembership(self, name, epoch, meta, reachable)
        self._runs.append(run)
        return run

    def node(self, name: str) -> FakeMembership:
        """The newest run of ``name``."""
        return next(r for r in reversed(self._runs) if r.name == name)

    def _live(self) -> list[FakeMembership]:
        return [r for r in self._runs if r.status in ("running", "paused") and r.joined]

    def _sees(self, a: FakeMembership, b: FakeMembership) -> bool:
        return a is not b and self._group.get(a.name, 0) == self._group.get(b.name, 0)

    def _join(self, run: FakeMembership) -> None:
        run._set_joined()
        for other in self._live():
            if self._sees(run, other):
                other.see(run, ALIVE)
                run.see(other, DEAD if other.status == "paused" else other.state)
        run.settle_cohort()

    def _tell_all(self, run: FakeMembership, state: MemberState) -> None:
        for other in self._live():
            if self._sees(other, run):
                other.see(run, state)

    def _broadcast(self, run: FakeMembership) -> None:
        if run.status == "running":
            self._tell_all(run, run.state)

    def connect(self, name: str) -> None:
        """An unreachable node's seeds answer at last: it joins."""
        run = self.node(name)
        run.reachable = True
        if run.status == "running" and not run.joined:
            self._join(run)

    def kill(self, name: str) -> None:
        """The process dies: peers declare it dead; it hears nothing more."""
        run = self.node(name)
        self._tell_all(run, DEAD)
        run.status = "dead"
        run._fanout.close()

    def suspect(self, name: str) -> None:
        run = self.node(name)
        run.state = SUSPECT
        self._tell_all(run, SUSPECT)

    def recover(self, name: str) -> None:
        run = self.node(name)
        run.state = ALIVE
        self._tell_all(run, ALIVE)

    def pause(self, name: str) -> None:
        """SIGSTOP for long enough: peers declare the run dead; it hears and says nothing."""
        run = self.node(name)
        self._tell_all(run, DEAD)
        run.status = "paused"

    def resume(self, name: str, *, confirm: bool = True) -> None:
        """SIGCONT: the same run (same epoch) is alive again; every peer that saw it dead
        demotes it provisionally. With ``confirm`` the run learns it was declared dead and
        publishes ``since``, as the real adapter does, so the demotion holds everywhere."""
        run = self.node(name)
        run.status = "running"
        self._tell_all(run, ALIVE)
        for other in self._live():  # catch up on what it missed while stopped
            if self._sees(run, other):
                run.see(other, other.state if other.status == "running" else DEAD)
        for gone in self._runs:
            if gone.status in ("dead", "left") and gone.name in run._view:
                run.see(gone, DEAD if gone.status == "dead" else LEFT)
        if confirm:
            # As the real adapter: ``since`` and a new cohort, after every run it sees now.
            run.settle_cohort({KEY_SINCE: str(max(self.wall_ms(), run.epoch + 1))})

    def partition(self, *groups: list[str]) -> None:
        """Splits the network: nodes in different groups see each other dead."""
        before = {r.name: self._group.get(r.name, 0) for r in self._runs}
        for i, names in enumerate(groups, start=1):
            for n in names:
                self._group[n] = i
        live = self._live()
        for a in live:
            for b in live:
                if a is not b and before[a.name] == before[b.name] and not self._sees(a, b):
                    a.see(b, DEAD)

    def heal(self) -> None:
        """Ends every partition: everyone sees everyone alive again (same epochs)."""
        old = dict(self._group)
        self._group.clear()
        live = self._live()
        for a in live:
            for b in live:
                if a is not b and old.get(a.name, 0) != old.get(b.name, 0):
                    a.see(b, b.state)

    def tick(self) -> None:
        """Expires provisional demotions older than the grace (advance the clock first)."""
        for run in self._live():
            run.expire()

    async def settle(self) -> None:
        """Yields until every subscriber has read its events (and the loop ran a bit more)."""
        for _ in range(100):
            await asyncio.sleep(0)
            if all(r.pending == 0 for r in self._runs):
                break
        for _ in range(5):
            await asyncio.sleep(0)
