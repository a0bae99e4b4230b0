"""``RolloutController``: the master deploys (SPEC 6).

Every node runs one; it acts only while its node is master. Each tick it reads the
registry's desired version, joins the provider's nodes with the membership view (asking
new nodes' ``/readyz``), asks ``plan.next_step`` what to do, does that one step and writes
the status (``rollout.json`` in the registry, what ``tierfaas rollout status`` shows). Ticks
come every ``registry_poll_s`` while nothing is to be done, every ``ACTIVE_TICK_S`` during a
rollout. Because the plan is computed from what runs, a master that takes over mid-rollout
(after a failover or after the handover itself) continues where the last one stopped.

Fencing (issue 17.3, ``tierfaas.deploy.term``): before its first step a master claims a term
from the registry, and every side effect carries it: the status write (the registry refuses
an older term), each launch and terminate (so does the provider), the handover (the target
refuses an older term, or a generation already taken). A master whose side effect is
refused (``FencedError``) drops its term and claims a new one only while it reaches a
majority of the membership it knew (``quorum.MajorityGuard``); without that majority it
neither claims, launches, terminates nor hands over, so a master cut off by a partition
changes nothing the majority's master decides. The status shows the term and the majority
(``"term"``, ``"majority"``).

Canary ages are measured on this controller's own monotonic clock, from the tick that first
saw the node (``Sightings``), never as the difference between this host's wall clock and a
launch time another host stamped (the launching master's, the API server's, a member's
epoch): a master whose clock runs ahead would abort rollouts early, one behind would never
time a canary out. A new master (a failover, a handover) starts counting at its first sight,
so a canary may wait up to one more ``canary_timeout_s`` than it would have: the error is on
the side of waiting.

The controller's loop is a supervised task (``tierfaas.supervision``): a crash outside one
tick's own error handling is logged, counted in ``tierfaas_task_crashes_total{task="rollout"}``
and the loop started again.

No registry call runs on the event loop: each goes through ``offloop.BoundedCalls``, bounded
by ``REGISTRY_TIMEOUT_S`` with at most one call of each kind in flight, so a stalled volume
delays the rollout, never the node's requests or its gossip (issue 17.5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import aiohttp

from tierfaas.clock import Clock, monotonic
from tierfaas.cluster.manager import ClusterManager
from tierfaas.control.plane import ControlPlane
from tierfaas.deploy import plan
from tierfaas.deploy.offloop import BoundedCalls, Stalled
from tierfaas.deploy.provider import ProvidedNode, Provider, ProviderError
from tierfaas.deploy.quorum import Majority, MajorityGuard
from tierfaas.deploy.registry import DirectoryRegistry, FailedVersions, RegistryError
from tierfaas.deploy.term import FencedError, Term, fence
from tierfaas.membership.base import MemberInfo, Membership
from tierfaas.supervision import Supervisor

log = logging.getLogger("tierfaas.rollout")

ACTIVE_TICK_S = 0.3
HISTORY = 20
REGISTRY_TIMEOUT_S = 2.0
"""The longest a tick waits on one registry call (a stalled volume): the tick then fails and
the next one tries again; the call's thread is not started again until it returns."""
SIDE_EFFECTS = (plan.Launch, plan.Terminate, plan.Abort, plan.Handover)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Sightings:
    """When this controller first saw each node, on its own monotonic clock: a node's age
    for the canary timeout, whatever the clocks of the hosts that launched it say."""

    def __init__(self, clock: Clock = monotonic) -> None:
        self.clock = clock
        self._first: dict[str, float] = {}

    def age_s(self, name: str) -> float:
        """Seconds since ``name`` was first seen here (0 at its first sight)."""
        now = self.clock()
        return now - self._first.setdefault(name, now)

    def keep_only(self, names: set[str]) -> None:
        """Forgets the nodes not in ``names`` (gone): the map stays as large as the cluster."""
        for name in [n for n in self._first if n not in names]:
            del self._first[name]


class RolloutController:
    def __init__(
        self,
        *,
        name: str,
        version: str,
        registry: DirectoryRegistry,
        provider: Provider,
        cluster: ClusterManager,
        control: ControlPlane,
        membership: Membership,
        poll_s: float,
        canaries: int,
        canary_timeout_s: float,
        registry_timeout_s: float = REGISTRY_TIMEOUT_S,
        clock: Clock = monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.registry = registry
        self.failed = FailedVersions(registry.root)
        self.provider = provider
        self.cluster = cluster
        self.control = control
        self.membership = membership
        self.poll_s = poll_s
        self.canaries = canaries
        self.canary_timeout_s = canary_timeout_s
        self._task: asyncio.Task[None] | None = None
        self.supervisor = supervisor or Supervisor()  # restarts the loop if it crashes
        self.sightings = Sightings(clock)  # canary ages, on this node's clock
        self._session: aiohttp.ClientSession | None = None
        self.last_step = ""
        self.io = BoundedCalls(registry_timeout_s, name="registry")
        self.guard = MajorityGuard(name)
        self.majority: Majority | None = None
        self.term: Term | None = None  # claimed while master; dropped when fenced or demoted
        self._provided_ever: set[str] = set()  # names the provider listed: gone once unlisted
        self._launched: set[str] = set()  # by this node: known to the guard once they joined
        self.fenced = 0  # side effects refused (a newer term exists)
        self.suspended = 0  # steps not taken without a majority
        # After this node takes a handover, the old master still writes the status once (the
        # handover's record): its first ticks as master wait until then.
        self.quiet_until = 0.0

    def start(self) -> None:
        self._task = self.supervisor.spawn("rollout", self._run)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()
        await self.provider.close()
        self.io.close()

    async def _run(self) -> None:
        while True:
            interval = self.poll_s
            try:
                if time.monotonic() < self.quiet_until:
                    interval = self.quiet_until - time.monotonic()
                elif (await self.cluster.topology()).master == self.name:
                    interval = await self.tick()
                else:
                    self.term = None  # a master again later claims a new term
            except asyncio.CancelledError:
                raise
            except FencedError as exc:
                self.fenced += 1
                self.term = None
                log.warning("rollout: fenced, a newer master deploys: %s", exc)
            except (RegistryError, ProviderError, OSError, Stalled) as exc:
                log.warning("rollout: %s", exc)
            except Exception:  # the controller must outlive any one bad tick
                log.exception("rollout tick failed")
            await asyncio.sleep(interval)

    # -- one tick --------------------------------------------------------------------------------

    async def tick(self) -> float:
        """Observes, takes one step, writes the status; returns when to tick again."""
        desired = await self.io.run("desired", self.registry.desired)
        if desired is None:
            return self.poll_s
        status = await self.io.run("status", self.registry.read_status) or {}
        failed = await self.io.run("failed", self.failed.all)
        everyone = self.membership.members()
        members = [m for m in everyone if m.state.live]
        provided = await self.provider.nodes()
        listed = {p.name for p in provided}
        serving_names = [p.name for p in provided if p.phase != "draining"]  # drained: leaving
        gone = self._provided_ever - listed
        held_before = self.majority is None or self.majority.held
        self.majority = self.guard.observe(everyone, serving_names, gone, self._launched)
        self._provided_ever |= listed
        if held_before != self.majority.held:
            if self.majority.held:
                log.info("rollout: majority reached again (%s)", self.majority)
            else:
                log.warning(
                    "rollout: no majority (%s): this master launches and terminates nothing "
                    "until it reaches one",
                    self.majority,
                )
        if self.term is None:
            if not self.majority.held:
                log.debug("rollout: no majority (%s): no term claimed", self.majority)
                return self.poll_s
            self.term = await self.io.run(
                "term",
                self.registry.claim_term,
                max((m.generation for m in members), default=0),
                self.name,
                self.control.backend.position().lineage,
            )
            self.control.terms.see(self.term)
            log.info("rollout: this master deploys in %s", self.term)
        current = status.get("rollout") if status.get("phase") == "rolling" else None
        size: int | None = None
        if current is not None and (current.get("to") != desired or desired in failed):
            size = int(current.get("size", 0)) or None  # a rollback keeps the intended size
            # The desired version changed mid-rollout (an abort, or a newer publish), or the
            # version is marked failed while still desired: ``tierfaas rollout abort`` marks it
            # before it sets the previous version desired, and a read between the two sees
            # that. Either way the rollout stopped: it is aborted, never done.
            reason = failed.get(str(current.get("to")), f"{desired} is desired now")
            self._event(current, f"stopped: {reason}")
            current.update(result="aborted", reason=reason, finished_at=_now_ms())
            status["history"] = [*status.get("history", []), current][-HISTORY:]
            current = None
        serving = [p for p in provided if p.phase != "draining"]
        if not status.get("size") and serving and all(p.version == desired for p in serving):
            # The size to keep: what the provider runs the first time a master looks, then
            # what each rollout ends with. A provider that runs nothing (none) keeps none.
            status["size"] = len(serving)
        keep = int(status.get("size") or 0)
        if current is None:
            converged = self._converged(desired, members, provided)
            lost = converged and desired == self.version and 0 < len(serving) < keep
            if (converged and not lost) or desired in failed:
                phase = "failed" if desired in failed and self.version != desired else "idle"
                await self._write(status, desired, failed, members, provided, None, phase)
                return self.poll_s
            if lost:
                size = keep  # nodes died (not drained by a rollout): start replacements
            try:
                await self.io.run("load", self.registry.load, desired)
            except RegistryError as exc:
                await self.io.run("mark", self.failed.mark, desired, str(exc))
                log.error("rollout to %s refused: %s", desired, exc)
                return self.poll_s
            if size is None:
                # The nodes of the master's version: leftovers of another version (canaries
                # of a rollout a dead master left) are not part of the intended size.
                mine = [p for p in provided if p.phase != "draining" and p.version == self.version]
                size = len(mine) or len([m for m in members if m.version == self.version])
            current = {
                "from": self.version,
                "to": desired,
                "size": max(size, 1),
                "started_at": _now_ms(),
                "events": [],
            }
            if desired == self.version:
                what = f"{keep - len(serving)} node(s) lost: replacing them"
                self._event(current, f"{what} ({current['size']} nodes wanted)")
            else:
                self._event(current, f"rollout to {desired} begins ({current['size']} nodes)")
        nodes = await self._observe(desired, members, provided)
        observed = plan.Observed(
            desired=desired,
            master=self.name,
            master_version=self.version,
            generation=max((m.generation for m in members), default=0),
            size=int(current["size"]),
            canaries=self.canaries,
            canary_timeout_s=self.canary_timeout_s,
            nodes=nodes,
            failed=frozenset(failed),
        )
        step = plan.next_step(observed)

        async def save(phase: str) -> None:
            failed = await self.io.run("failed", self.failed.all)
            await self._write(status, desired, failed, members, provided, current, phase)

        if isinstance(step, SIDE_EFFECTS) and not self.majority.held:
            # Cut off (a partition?): the others may have a master of their own by now.
            self.suspended += 1
            step = plan.Wait(f"no majority ({self.majority}): not launching or terminating")
        try:
            phase = await self._take(step, current, desired, save)
        except FencedError:
            raise
        except ProviderError as exc:
            self._event(current, f"the provider failed: {exc}")
            log.warning("rollout to %s: the provider failed: %s", desired, exc)
            phase = "rolling"
        if phase == "handed":
            return ACTIVE_TICK_S
        await save(phase)
        return ACTIVE_TICK_S if phase == "rolling" else self.poll_s

    async def _fence(self) -> Term:
        """This master's term, checked against the registry's newest just before a side
        effect: a newer master's claim stops this one even with a provider that keeps no
        term of its own (Kubernetes)."""
        assert self.term is not None  # tick claims one first
        newest = await self.io.run("term", self.registry.current_term)
        self.control.terms.see(newest)
        fence(self.term, self.control.terms.newest, "a step of the rollout")
        return self.term

    async def registry_term(self) -> Term | None:
        """The registry's newest term, read off the loop (a handover this node is offered is
        checked against it); raises ``Stalled``, ``RegistryError`` or ``OSError``."""
        return await self.io.run("handover-term", self.registry.current_term)

    def _converged(
        self, desired: str, members: Sequence[MemberInfo], provided: Sequence[ProvidedNode]
    ) -> bool:
        return (
            self.version == desired
            and all(m.version == desired for m in members)
            and all(p.version == desired for p in provided if p.phase != "draining")
        )

    async def _observe(
        self, desired: str, members: Sequence[MemberInfo], provided: Sequence[ProvidedNode]
    ) -> list[plan.NodeState]:
        by_name = {m.name: m for m in members}
        age_s = self.sightings.age_s
        nodes: dict[str, plan.NodeState] = {}
        checks = []
        for p in provided:
            m = by_name.get(p.name)
            nodes[p.name] = plan.NodeState(
                name=p.name,
                version=p.version,
                generation=m.generation if m else p.generation,
                member=m is not None,
                ready=m is not None,
                draining=p.phase == "draining",
                age_s=age_s(p.name),
            )
        for m in members:
            if m.name not in nodes:
                nodes[m.name] = plan.NodeState(
                    m.name, m.version, m.generation, True, True, False, age_s(m.name)
                )
        self.sightings.keep_only(set(nodes))
        for name, node in nodes.items():
            if node.version == desired and node.member and name != self.name:
                member = by_name[name]
                checks.append(self._readiness(node, member))
        for node in await asyncio.gather(*checks):
            nodes[node.name] = node
        return list(nodes.values())

    async def _readiness(self, node: plan.NodeState, member: MemberInfo) -> plan.NodeState:
        if member.http is None:
            return replace(node, ready=False, problem="published no HTTP address")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        try:
            async with self._session.get(f"http://{member.http}/readyz") as response:
                body = await response.read()
                if response.status == 200:
                    return replace(node, ready=True)
                data = json.loads(body) if body else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return replace(node, ready=False, problem=f"/readyz: {exc.__class__.__name__}")
        return replace(
            node,
            ready=False,
            problem=str(data.get("reason", ""))[:500],
            fatal=bool(data.get("fatal", False)),
        )

    async def _take(
        self,
        step: plan.Step,
        current: dict[str, Any],
        desired: str,
        save: Callable[[str], Awaitable[None]],
    ) -> str:
        text = _describe(step)
        if text != self.last_step:
            log.info("rollout to %s: %s", desired, text)
            self.last_step = text
        current["step"] = text
        if isinstance(step, plan.Launch):
            term = await self._fence()
            names = await self.provider.launch(desired, step.generation, step.count, term=term)
            self._launched.update(names)
            self._event(current, f"launched {', '.join(names)} ({desired})")
        elif isinstance(step, plan.Handover):
            await self._fence()
            if await self._hand_over(step, current, save):
                return "handed"  # the status is the new master's to write from now on
        elif isinstance(step, plan.Terminate):
            term = await self._fence()
            await self.provider.terminate(step.name, term=term)
            self._event(current, f"draining {step.name}: {step.reason}")
        elif isinstance(step, plan.Abort):
            term = await self._fence()
            for name in step.terminate:
                await self.provider.terminate(name, term=term)
            await self.io.run("mark", self.failed.mark, desired, step.reason)
            self._event(current, f"aborted: {step.reason}")
            current["result"] = "aborted"
            current["reason"] = step.reason
            return "aborted"
        elif isinstance(step, plan.Done):
            self._event(current, f"done: every node runs {desired}")
            current["result"] = "done"
            return "done"
        return "rolling"

    async def _hand_over(
        self, step: plan.Handover, current: dict[str, Any], save: Callable[[str], Awaitable[None]]
    ) -> bool:
        """True once the target took the table (it is master from then on)."""
        from grpc import aio

        began = time.monotonic()
        try:
            reply = await self.control.hand_over(step.target, step.generation, self.term)
        except (LookupError, ConnectionError, aio.AioRpcError) as exc:
            detail = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
            self._event(current, f"handover to {step.target} failed: {detail}; retrying")
            return False
        if not reply.ready:
            self._event(current, f"handover to {step.target} refused: {reply.error}; retrying")
            return False
        took_ms = (time.monotonic() - began) * 1000
        current["handover"] = {
            "target": step.target,
            "routes": reply.routes,
            "generation": step.generation,
            "ms": round(took_ms, 1),
        }
        self._event(
            current,
            f"handed the table ({reply.routes} routes) to {step.target} in {took_ms:.0f} ms; "
            f"it is master of generation {step.generation}",
        )
        # Write the status now, before the new master's first tick reads it: from here on
        # the new master writes it, and an older copy written later would lose its events.
        await save("rolling")
        # Act no more as master: wait until this node's view agrees that the target is.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if (await self.cluster.topology()).master == step.target:
                break
            await asyncio.sleep(0.05)
        return True

    # -- status ----------------------------------------------------------------------------------

    @staticmethod
    def _event(current: dict[str, Any], text: str) -> None:
        events = current.setdefault("events", [])
        if events and events[-1]["text"] == text:
            events[-1]["at"] = _now_ms()  # the same again (a retried step): no new line
            return
        events.append({"at": _now_ms(), "text": text})
        del events[:-50]

    async def _write(
        self,
        status: dict[str, Any],
        desired: str,
        failed: dict[str, str],
        members: Sequence[MemberInfo],
        provided: Sequence[ProvidedNode],
        current: dict[str, Any] | None,
        phase: str,
    ) -> None:
        by_version: dict[str, list[str]] = {}
        for m in members:
            by_version.setdefault(m.version, []).append(m.name)
        history = list(status.get("history", []))
        if current is not None and phase == "done":
            status["size"] = current["size"]
        if current is not None and phase in ("done", "aborted"):
            current["finished_at"] = _now_ms()
            current["seconds"] = round((current["finished_at"] - current["started_at"]) / 1000, 1)
            history.append(current)
        new = {
            "size": status.get("size"),
            "desired": desired,
            "phase": phase,
            "master": self.name,
            "master_version": self.version,
            "updated_at": _now_ms(),
            "nodes": {v: sorted(names) for v, names in sorted(by_version.items())},
            "draining": sorted(p.name for p in provided if p.phase == "draining"),
            "failed": failed,
            "rollout": current if phase == "rolling" else None,
            "history": history[-HISTORY:],
            "majority": None
            if self.majority is None
            else {"reached": self.majority.reached, "known": self.majority.known},
        }
        if self.term is not None:
            new["term"] = self.term.to_json()
        if phase in ("idle", "failed") and status.get("phase") == new["phase"]:
            same = {k: v for k, v in status.items() if k != "updated_at"}
            if same == {k: v for k, v in new.items() if k != "updated_at"}:
                return  # nothing changed: no write every poll
        await self.io.run("write", self.registry.write_status, new, self.term)


def _describe(step: plan.Step) -> str:
    if isinstance(step, plan.Launch):
        return f"launch {step.count} node(s) in generation {step.generation}"
    if isinstance(step, plan.Handover):
        return f"hand the table to {step.target} (generation {step.generation})"
    if isinstance(step, plan.Terminate):
        return f"drain {step.name} ({step.reason})"
    if isinstance(step, plan.Abort):
        return f"abort: {step.reason}"
    if isinstance(step, plan.Wait):
        return f"wait: {step.reason}"
    return "done"
