"""``Membership`` over kinship (SWIM gossip): the only module in tierfaas that imports kinship.

What it guarantees, and why (timings measured in shared/reference/kinship-behaviour.md):
- The kinship cluster is created in ``start()``, inside the running process, never before a
  fork (a cluster inherited through ``fork()`` is dead in the child).
- It subscribes to kinship's events before joining, so no member seen during the join is
  missed; ``EventsLost`` becomes a ``Resync`` built from ``members()``.
- Runs are keyed by ``(name, epoch)``: a crash and quick restart reads as the old run left
  and a new run joined.
- Seeds that never answer do not fail the start and do not make this node a cluster of one:
  it reports ``joined=False`` with the reason and keeps retrying in the background.
- This run's cohort (``tierfaas.topology.next_cohort``) is published as pending from the
  first gossip on, and settled from the members seen once it has joined: a run that joins
  a cluster with members ranks after all of them, whatever its epoch says.
- A run declared dead that comes back (SIGSTOP/SIGCONT) is demoted, never given its old
  role back: see ``tierfaas.membership.demotion``. The pause is measured by a watchdog on the
  event loop (kinship's thread stops too under SIGSTOP, but not when the loop merely blocks).
- Without a key, gossip may only bind loopback: anything else is refused at start-up.
- Metadata read from peers is validated (``meta.parse_meta``); a bad record is logged once.

The epoch is kinship's: the Unix ms of this process's wall clock at ``start()``, with no
setting to choose it. Tests that need a run with an epoch in the past shift the clock of the
whole node process (``tierfaas.testing.clockshift``, libfaketime).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import kinship

from tierfaas.clock import Clock, monotonic
from tierfaas.config import Address
from tierfaas.errors import ConfigError
from tierfaas.keys import parse_key
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
    Resync,
)
from tierfaas.membership.demotion import Resurrections, notice_for, parse_notice
from tierfaas.membership.fanout import EventFanout
from tierfaas.membership.meta import (
    KEY_COHORT,
    KEY_SINCE,
    check_size,
    encode_cohort,
    encode_meta,
    parse_meta,
)
from tierfaas.supervision import Supervisor
from tierfaas.topology import joining_cohort, next_cohort

log = logging.getLogger("tierfaas.membership")

_STATES = {
    kinship.State.ALIVE: MemberState.ALIVE,
    kinship.State.SUSPECT: MemberState.SUSPECT,
    kinship.State.DEAD: MemberState.DEAD,
    kinship.State.LEFT: MemberState.LEFT,
}


def _check_seed(seed: str) -> None:
    host, sep, port = seed.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError("gossip_seeds", f"{seed!r} is not HOST:PORT")


LARGE_TIMINGS: dict[str, float | int] = {
    "probe_interval": 0.5,
    "probe_timeout": 0.25,
    "suspicion_mult": 2,
}
"""What the ``large`` preset changes in kinship's ``lan``: probe twice as often, half the
suspicion multiplier. Lifeguard's suspicion timeout grows with the cluster (memberlist:
``suspicion_mult x log10 N x probe_interval``; kinship's own figure, a kill seen in 9.7 s at
100 nodes, fits that rule), so on ``lan`` a death takes 4 s of suspicion at 10 nodes (measured)
but 16 s at 10,000; ``large`` takes 4 s at 10,000 (every node hears of a death in ~6 s,
docs/scale.md), close to what ``lan`` takes at 10 nodes, and so rides out about the same
pauses there. Cost: twice the probes (~0.4 kB/s more per node, whatever N)."""
LARGE_MAX_MEMBERS = 50_000
"""The ``large`` preset's member limit (kinship's default: 8,192, which a larger cluster
cannot pass: kinship refuses the members beyond it). A push-pull sync carries the whole
member list (~150 bytes each) in one frame of at most 8 MiB: ~56,000 members."""


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """Gossip settings. Build with ``GossipSettings.lan(...)``, ``.large(...)`` or
    ``.local(...)``.

    ``local`` detects a death in about 1.3 s (a 1.5 s pause kills a node), for tests and demos
    on one machine; ``lan`` in about 6 s at 10 nodes, which rides out GC pauses and busy
    hosts, but its suspicion grows with log10 N (~15 s at 1,000 nodes, ~19 s at 10,000);
    ``large`` (``LARGE_TIMINGS``) for clusters of about 1,000 nodes and more: ~6 s at 10,000,
    riding out the pauses ``lan`` rides out at 10 nodes (shorter ones in smaller clusters: at
    100 nodes a ~3 s pause may kill), and up to ``LARGE_MAX_MEMBERS`` members.
    """

    bind: Address
    seeds: tuple[str, ...] = ()
    key: bytes | None = field(default=None, repr=False)
    preset: Literal["lan", "large", "local"] = "lan"
    advertise: Address | None = None
    cluster: str = "tierfaas"
    leave_timeout_s: float = 2.0
    """Longest ``leave()`` waits for the news to spread; peers see *left* in ms when it does."""
    join_retry_s: float = 2.0
    """Pause between join attempts while no seed answers. Lower finds seeds sooner."""
    join_wait_s: float = 5.0
    """Longest ``start()`` waits for the first join attempt before leaving it to the background."""
    watchdog_tick_s: float = 0.1
    """How often the event loop's own pauses are measured."""
    pause_suspect_s: float = 3.0
    """A pause at least this long may have got this run declared dead: a peer's word is
    then believed and the run demotes itself."""
    pause_dead_s: float = 7.0
    """A pause this long (plus a refutation seen) certainly did: demote without the word."""
    demotion_grace_s: float = 3.0
    """How long an observer holds a revived run demoted without its confirmation."""
    cohort_wait_s: float = 1.0
    """How long a run that joined a cluster still forming waits for the runs that rank before
    it to settle their cohorts before it settles its own regardless."""
    event_buffer: int = 1024
    """Events a slow consumer may fall behind before it gets a ``Resync`` instead."""
    max_members: int | None = None
    """The most members kinship holds (it refuses the others); None: the preset's (8,192,
    kinship's default; ``large``: ``LARGE_MAX_MEMBERS``). Raising it costs memory and push-pull
    bytes per member (~150 B each, every 30 s, both ways)."""

    def __post_init__(self) -> None:
        if self.key is not None:
            parse_key(self.key)
        if self.preset not in ("lan", "large", "local"):
            raise ConfigError("gossip_preset", f"{self.preset!r} is not lan|large|local")
        if self.max_members is not None and self.max_members < 2:
            raise ConfigError("gossip_max_members", "must be at least 2")
        for seed in self.seeds:
            _check_seed(seed)
        if self.key is None:
            for what, addr in (("gossip_bind", self.bind), ("gossip_advertise", self.advertise)):
                if addr is not None and not addr.is_loopback:
                    raise ConfigError(
                        what,
                        f"{addr} is not loopback and no gossip key is set: set a 32-byte key "
                        "(base64) on every node, or bind 127.0.0.1 for a local cluster",
                    )
        for name in ("leave_timeout_s", "join_retry_s", "join_wait_s", "watchdog_tick_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "must be a positive number of seconds")
        if not 0 < self.pause_suspect_s <= self.pause_dead_s:
            raise ConfigError("pause_suspect_s", "must be positive and <= pause_dead_s")

    @classmethod
    def lan(
        cls, *, bind: Address, key: bytes | str | None, seeds: tuple[str, ...] = (), **kw: Any
    ) -> GossipSettings:
        """Real networks. A key is required unless ``bind`` is loopback."""
        return cls(bind=bind, seeds=tuple(seeds), key=_opt_key(key), preset="lan", **kw)

    @classmethod
    def large(
        cls, *, bind: Address, key: bytes | str | None, seeds: tuple[str, ...] = (), **kw: Any
    ) -> GossipSettings:
        """Real networks of about 1,000 nodes and more (``LARGE_TIMINGS``). A key is required
        unless ``bind`` is loopback. A pause of ~3 s may get a run declared dead with it in a
        cluster of 100 (~4.5 s at 10,000; docs/scale.md), so a run paused 2 s believes a
        peer's word that it died (``pause_suspect_s``)."""
        timings: dict[str, Any] = {"pause_suspect_s": 2.0}
        timings.update(kw)
        return cls(bind=bind, seeds=tuple(seeds), key=_opt_key(key), preset="large", **timings)

    @classmethod
    def local(
        cls,
        *,
        bind: Address,
        seeds: tuple[str, ...] = (),
        key: bytes | str | None = None,
        **kw: Any,
    ) -> GossipSettings:
        """One machine: fast failure detection; a 1.5 s pause already means death."""
        timings: dict[str, Any] = {
            "join_retry_s": 0.5,
            "join_wait_s": 2.0,
            "pause_suspect_s": 0.5,
            "pause_dead_s": 2.0,
            "demotion_grace_s": 1.5,
            "cohort_wait_s": 0.5,
        }
        timings.update(kw)
        return cls(bind=bind, seeds=tuple(seeds), key=_opt_key(key), preset="local", **timings)


def _opt_key(key: bytes | str | None) -> bytes | None:
    return None if key is None else parse_key(key)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KinshipMembership:
    """Cluster membership of this node over kinship. See ``tierfaas.membership.Membership``.

    ``KinshipMembership(GossipSettings.lan(bind=..., key=..., seeds=...), name="node-a",
    version="1.2", http=Address(...), rpc=Address(...))``, then ``events()``, ``start()``.

    Its background tasks (the event pump, the watchdog, the join loop, metadata updates and
    death notices) run under ``supervisor`` (a private one if None): a crash is logged,
    counted in ``tierfaas_task_crashes_total`` and the task restarted, each of them built so
    that a restart loses nothing (the pump subscribes again and publishes a ``Resync``; the
    watchdog's pending check lives on the object). Gossip stopping on an internal error
    cannot be restarted: the pump crashes once (counted), ``joined`` turns False with the
    reason, so the node reports not ready, and the pump is not started again.
    """

    def __init__(
        self,
        settings: GossipSettings,
        *,
        name: str,
        version: str = "",
        http: Address | None = None,
        rpc: Address | None = None,
        generation: int = 0,
        clock: Clock = monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self._supervisor = supervisor or Supervisor()
        self.name = name
        self._meta = encode_meta(version=version, http=http, rpc=rpc, generation=generation)
        self._clock = clock
        self._wall_ms = wall_ms
        self._fanout = EventFanout(self.members, settings.event_buffer)
        self._cluster: kinship.Cluster | None = None
        self._resurrections = Resurrections(clock, wall_ms, settings.demotion_grace_s)
        self._joined = False
        self._join_reason = "not started"
        self._first_attempt = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._since: int | None = None
        self._cohort: int | None = None  # settled once joined (published pending until then)
        # Runs first seen while they were joining too, before this run settled its cohort:
        # the cluster forms with them, so their cohorts do not push this run's up.
        self._co_joiners: set[tuple[str, int]] = set()
        self._joined_at: float | None = None
        self._last_pause_end: float | None = None
        self._warned: set[tuple[str, int, tuple[str, ...]]] = set()
        self._conflict_reported = False
        self._frozen: str | None = None  # why gossip stopped under this run, if it did
        # The watchdog's pending check (a pause long enough to have got this run declared
        # dead): kept here, so a restarted watchdog still demotes on the refutation.
        self._check_until = 0.0
        self._refutations_before = 0

    # -- reads -----------------------------------------------------------------------------

    @property
    def local(self) -> MemberInfo:
        if self._cluster is None:
            meta = parse_meta(self._meta)
            bind = str(self.settings.bind)
            return MemberInfo(
                self.name, 0, MemberState.ALIVE, bind, meta.http, meta.rpc, meta.version,
                generation=meta.generation, cohort_pending=True,
            )  # fmt: skip
        try:
            return self._info(self._cluster.local)
        except kinship.KinshipError:
            return MemberInfo(self.name, 0, MemberState.LEFT, str(self.settings.bind))

    @property
    def joined(self) -> bool:
        return self._joined and self._frozen is None

    @property
    def join_reason(self) -> str:
        if self._frozen is not None:
            return self._frozen
        return "" if self._joined else self._join_reason

    def members(self) -> list[MemberInfo]:
        if self._cluster is None:
            return []
        try:
            return [self._info(m) for m in self._cluster.members()]
        except kinship.KinshipError:
            return []

    def events(self) -> AsyncIterator[MembershipEvent]:
        return self._fanout.subscribe()

    def stats(self) -> dict[str, int]:
        """kinship's protocol counters, for metrics and debugging."""
        if self._cluster is None:
            return {}
        return {k: int(v) for k, v in asdict(self._cluster.stats()).items()}

    def _info(self, m: kinship.Member) -> MemberInfo:
        meta = parse_meta(m.meta)
        if meta.problems:
            warn_key = (m.name, m.epoch, meta.problems)
            if warn_key not in self._warned:
                self._warned.add(warn_key)
                log.warning(
                    "member %r (epoch %d) published invalid metadata, routing nothing to it: %s",
                    m.name,
                    m.epoch,
                    "; ".join(meta.problems),
                )
        cohort, pending = meta.cohort, meta.cohort_pending
        if m.name == self.name and self._cluster is not None and m.epoch == self._epoch():
            # Our own changes are ours before kinship has gossiped them.
            since = self._since if self._since is not None else meta.since
            if self._cohort is not None:
                cohort, pending = self._cohort, False
        else:
            since = self._resurrections.demoted_since((m.name, m.epoch), meta.since)
            # Held demoted until it confirms: it ranks after every settled run meanwhile.
            pending = pending or self._resurrections.unconfirmed((m.name, m.epoch))
        return MemberInfo(
            m.name,
            m.epoch,
            _STATES[m.state],
            m.addr,
            meta.http,
            meta.rpc,
            meta.version,
            since,
            meta.generation,
            cohort,
            pending,
        )

    def _epoch(self) -> int:
        assert self._cluster is not None
        return self._cluster.local.epoch

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Binds, subscribes, then joins the seeds. Returns after the first join attempt (or
        ``join_wait_s``); if it failed, ``joined`` is False and retries continue."""
        if self._cluster is not None:
            raise RuntimeError("membership already started")
        kinship.log_to_python()
        cluster = kinship.Cluster(self._config())
        await cluster.start()  # binds only: seeds are joined below, once subscribed
        self._cluster = cluster
        first: list[kinship.EventStream] = [cluster.events()]  # before the join: none missed
        self._spawn("membership-events", lambda: self._pump(first.pop() if first else None))
        self._spawn("membership-watchdog", self._watchdog)
        self._spawn("membership-join", self._join_loop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), self.settings.join_wait_s)

    def _config(self) -> kinship.Config:
        s = self.settings
        kw: dict[str, Any] = {
            "name": self.name,
            "bind": str(s.bind),
            "cluster": s.cluster,
            "seeds": [],
            "meta": dict(self._meta),
            "event_buffer": s.event_buffer,
        }
        if s.advertise is not None:
            kw["advertise"] = str(s.advertise)
        if s.key is not None:
            kw["keys"] = [s.key]
        elif s.preset != "local":
            kw["insecure_plaintext"] = True  # loopback only: checked by GossipSettings
        if s.preset == "large":
            kw |= LARGE_TIMINGS | {"max_members": LARGE_MAX_MEMBERS}
        if s.max_members is not None:
            kw["max_members"] = s.max_members
        try:
            if s.preset == "local":
                return kinship.Config.local(**kw)
            return kinship.Config.lan(**kw)
        except kinship.ConfigError as e:
            raise ConfigError(f"gossip.{e.field or 'config'}", str(e)) from None

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Runs ``run()`` under the supervisor (restarted after a crash) until it returns
        or ``close()`` cancels it. ``name`` is a metric label: a fixed word, never a peer's."""
        task = self._supervisor.spawn(name, run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self, timeout: float | None = None) -> None:
        """Gossips *left*; waits at most ``timeout`` (default ``leave_timeout_s``) for it."""
        if self._cluster is None:
            return
        seconds = self.settings.leave_timeout_s if timeout is None else timeout
        with contextlib.suppress(kinship.KinshipError, TimeoutError):
            # kinship bounds the wait itself; the outer bound guards against a wedged thread.
            await asyncio.wait_for(self._cluster.leave(seconds), seconds + 1.0)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._cluster is not None:
            with contextlib.suppress(kinship.KinshipError):
                await self._cluster.close()
        self._fanout.close()

    async def update_meta(self, **changes: str | None) -> None:
        merged = {**self._meta, **{k: v for k, v in changes.items() if v is not None}}
        for k, v in changes.items():
            if v is None:
                merged.pop(k, None)
        check_size(merged)
        bad = parse_meta(merged).problems
        if bad:
            raise ConfigError("meta", "; ".join(bad))
        self._meta = merged
        if self._cluster is not None:
            await self._cluster.update_meta(**changes)
            # kinship never reports this node to itself; our own subscribers need it.
            self._fanout.publish(MemberUpdated(self.local))

    # -- joining -----------------------------------------------------------------------------

    def _other_seeds(self) -> list[str]:
        assert self._cluster is not None
        me = {self._cluster.local.addr, str(self.settings.bind)}
        if self.settings.advertise is not None:
            me.add(str(self.settings.advertise))
        return [s for s in self.settings.seeds if s not in me]

    async def _join_loop(self) -> None:
        assert self._cluster is not None
        seeds = self._other_seeds()
        if not seeds:
            self._set_joined(True, "")  # the first node of a cluster: nobody else to find
        while not self._joined:
            try:
                answered = await self._cluster.join(seeds)
            except kinship.JoinError as e:
                if self._joined:
                    break  # a peer found this node while the attempt was out: it is joined
                self._set_joined(
                    False,
                    f"no seed answered ({', '.join(seeds)}): {e}; "
                    f"retrying every {self.settings.join_retry_s:g} s",
                )
            except kinship.KinshipClosed:
                return
            else:
                if answered:
                    self._set_joined(True, "")
            self._first_attempt.set()
            if not self._joined:
                await asyncio.sleep(self.settings.join_retry_s)
        self._first_attempt.set()

    def _set_joined(self, joined: bool, reason: str) -> None:
        changed = joined != self._joined or (not joined and reason != self._join_reason)
        self._joined = joined
        self._join_reason = reason
        if not changed:
            return
        if joined:
            log.info("joined the cluster as %r", self.name)
            if self._joined_at is None:
                self._joined_at = self._clock()
                # The join's push-pull has filled the member list: rank after all of it.
                self._try_settle_cohort()
        else:
            log.warning("not joined: %s", reason)
        self._fanout.publish(JoinStatus(joined, reason))

    # -- events ------------------------------------------------------------------------------

    async def _pump(self, sub: kinship.EventStream | None) -> None:
        """Hands kinship's events on. ``sub`` is the subscription made before the join; a
        restarted pump (None) subscribes again and publishes a ``Resync``, after subscribing,
        so that subscribers miss nothing of what happened while it was down."""
        if self._frozen is not None:
            return  # gossip is gone: nothing to restart
        assert self._cluster is not None
        try:
            if sub is None:
                sub = self._cluster.events()
                self._fanout.publish(Resync(tuple(self.members())))
            async for event in sub:
                self._handle(event)
        except kinship.KinshipClosed:
            self._frozen = "gossip stopped on an internal error; membership is frozen"
            self._fanout.publish(JoinStatus(False, self._frozen))
            raise

    def _handle(self, event: kinship.Event) -> None:
        self._on_event(event)
        # After the event is out: subscribers must see a run it waited for settle first.
        self._try_settle_cohort()

    def _on_event(self, event: kinship.Event) -> None:
        match event:
            case kinship.MemberJoined(member=m) | kinship.MemberRecovered(member=m):
                if self._cohort is None and parse_meta(m.meta).cohort_pending:
                    self._co_joiners.add((m.name, m.epoch))
                if self._resurrections.revived((m.name, m.epoch)):
                    log.warning(
                        "member %r (epoch %d) came back after being declared dead; "
                        "it is demoted and told so",
                        m.name,
                        m.epoch,
                    )
                    self._spawn("membership-notify", functools.partial(self._notify_revived, m))
                if not self._joined:
                    self._set_joined(True, "")
                self._fanout.publish(MemberUp(self._info(self._current(m))))
            case kinship.MemberSuspect(member=m):
                self._fanout.publish(MemberSuspect(self._info(self._current(m))))
            case kinship.MemberDead(member=m):
                self._resurrections.saw_dead((m.name, m.epoch))
                self._fanout.publish(MemberDown(self._info(m), "dead"))
            case kinship.MemberLeft(member=m):
                self._resurrections.forget((m.name, m.epoch))
                self._fanout.publish(MemberDown(self._info(m), "left"))
            case kinship.MemberUpdated(member=m):
                self._fanout.publish(MemberUpdated(self._info(self._current(m))))
            case kinship.NameConflict(member=m, other_addr=other):
                if m.name == self.name:
                    if not self._conflict_reported:
                        self._conflict_reported = True
                        log.error("another node at %s already holds the name %r", other, m.name)
                        self._fanout.publish(NameConflictSelf(other))
                else:
                    log.warning(
                        "a node at %s claims the name %r, held by %s", other, m.name, m.addr
                    )
            case kinship.UserMessage(sender=sender, data=data):
                epoch = parse_notice(data)
                if epoch is not None and self._cluster is not None and epoch == self._epoch():
                    self._on_death_notice(sender.name)
            case kinship.EventsLost(count=count):
                log.warning("%d membership events lost; rebuilding the view", count)
                self._fanout.publish(Resync(tuple(self.members())))

    def _current(self, m: kinship.Member) -> kinship.Member:
        """``m`` as the event saw it, with the metadata kinship holds for that run now.

        Events queue up behind the gossip: a run's "joined" may still carry the pending
        cohort it has replaced since. Subscribers then never step back to older metadata
        than the list this run settles its own cohort from (``members()``)."""
        assert self._cluster is not None
        now = self._cluster.member(m.name)
        if now is None or now.epoch != m.epoch:
            return m
        return dataclasses.replace(m, meta=now.meta)

    async def _notify_revived(self, m: kinship.Member) -> None:
        """Tells a revived run it was declared dead, a few times (messages are best effort),
        until its ``since`` confirms that it heard."""
        assert self._cluster is not None
        for _ in range(3):
            current = self._cluster.member(m.name)
            if current is None or current.epoch != m.epoch or KEY_SINCE in current.meta:
                return
            with contextlib.suppress(kinship.KinshipError):
                await self._cluster.send(current, notice_for(m.epoch))
            await asyncio.sleep(0.3)

    def _on_death_notice(self, sender: str) -> None:
        if self._since is not None:
            return
        paused = self._last_pause_end
        if paused is not None and self._clock() - paused < 60.0:
            self._demote_self(f"{sender!r} saw this run dead after a pause of the process")
        else:
            # Nobody here paused: a healed partition. Keeping the rank lets the older master win.
            log.info("%r saw this node dead, but it did not pause: keeping its rank", sender)

    def _try_settle_cohort(self) -> None:
        """Once joined, publishes this run's cohort (``tierfaas.topology.joining_cohort``):
        after every run it sees with a settled cohort, except those it first saw joining too,
        which form the cluster with it (a run that joins a seed which has not joined yet
        sees the seed joining; the seed, told of it a moment later, must not rank after it)."""
        if self._cohort is not None or self._joined_at is None:
            return
        waited = self._clock() - self._joined_at >= self.settings.cohort_wait_s
        cohort = joining_cohort(self.members(), self.name, self._co_joiners, waited)
        if cohort is None:
            return  # the watchdog tries again
        self._cohort = cohort
        self._co_joiners.clear()
        log.info("this run ranks in cohort %d", cohort)
        self._publish({KEY_COHORT: encode_cohort(cohort)}, "membership-cohort")
        # The whole list it was decided from: the others as they are now, not as the events
        # still queued behind the gossip describe them, so no role moves for a moment.
        self._fanout.publish(Resync(tuple(self.members())))

    def _demote_self(self, why: str) -> None:
        assert self._cluster is not None
        # ``since`` is for releases before cohorts; the new cohort is what ranks it last.
        self._since = max(self._wall_ms(), self._epoch() + 1)
        self._cohort = next_cohort(self.members(), self.name)
        log.warning(
            "this run is demoted (%s); it ranks as if it joined now (cohort %d)", why, self._cohort
        )
        self._publish(
            {KEY_SINCE: str(self._since), KEY_COHORT: encode_cohort(self._cohort)},
            "membership-demote",
        )
        self._fanout.publish(MemberUpdated(self.local))

    def _publish(self, changes: dict[str, str], task: str) -> None:
        """Takes ``changes`` into this run's metadata now and gossips them in the background
        (both keys of a demotion in one update, so no peer sees one without the other)."""
        self._meta = {**self._meta, **changes}
        self._spawn(task, functools.partial(self._publish_meta, tuple(changes)))

    async def _publish_meta(self, keys: tuple[str, ...]) -> None:
        """Gossips this run's current values of ``keys`` (a key no longer held is deleted): a
        restart after a crash, or after a newer change of the same keys, never sends an older
        value."""
        assert self._cluster is not None
        with contextlib.suppress(kinship.KinshipError):
            await self._cluster.update_meta(**{key: self._meta.get(key) for key in keys})

    # -- the watchdog ------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        """Measures pauses of this process and expires unconfirmed demotions of peers."""
        assert self._cluster is not None
        tick = self.settings.watchdog_tick_s
        last = self._clock()
        try:
            refutations = self._cluster.stats().refutations
        except kinship.KinshipError:
            return
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            gap = now - last - tick
            last = now
            try:
                refuted = self._cluster.stats().refutations
            except kinship.KinshipError:
                return
            if gap >= self.settings.pause_suspect_s:
                log.warning("this process was paused for %.1f s", gap)
                self._last_pause_end = now
                if gap >= self.settings.pause_dead_s:
                    # A refutation after the pause means peers had written this run off.
                    self._check_until, self._refutations_before = now + 3.0, refutations
            if (
                self._since is None
                and now <= self._check_until
                and refuted > self._refutations_before
            ):
                self._demote_self(f"paused {gap:.1f} s and refuted its own death")
            refutations = refuted
            self._try_settle_cohort()
            for name, epoch in self._resurrections.expire():
                m = self._cluster.member(name)
                if (
                    m is not None
                    and m.epoch == epoch
                    and m.state in (kinship.State.ALIVE, kinship.State.SUSPECT)
                ):
                    log.info("member %r did not confirm its demotion: rank restored", name)
                    self._fanout.publish(MemberUpdated(self._info(m)))
