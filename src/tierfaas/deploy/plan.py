"""The rollout plan: a pure function from what is desired and what runs to the next step.

The deploying master calls ``next_step`` on every tick with a fresh ``Observed`` built from
the registry, its provider and its membership view, and carries out the one step it gets.
Nothing is remembered between ticks except the target size and the failed versions (both in
the registry's status file), so a master that takes over in the middle of a rollout (the
old one died) simply continues from what it sees (SPEC 6, issue 7 point 4).

The phases, for ``desired`` != what the master runs:

1. *Canaries*: launch ``canaries`` nodes of the new version in the current generation (they
   rank below every old node, so nothing changes for the cluster) and wait until they are
   members and ready. One that is not ready within the timeout aborts the rollout: the new
   nodes are terminated and the version is marked failed, so it is not tried again.
2. *Handover*: send the table to the oldest ready new node with generation + 1. Once it has
   loaded it, its generation makes it master on every node (``topology.rank_key``); writes
   go to it from then on.
3. Now the master runs ``desired``, and the same function drains the old nodes one at a time
   (the newest first, so the old replicas keep serving longest) while launching new nodes,
   one ahead, to keep ``size`` nodes serving; the old master is just one more old node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node, joined from the provider's list and the membership view."""

    name: str
    version: str
    generation: int  # as published (membership) or launched (provider)
    member: bool  # a live member in the gossip view
    ready: bool  # answered /readyz with 200
    draining: bool  # termination was asked for
    age_s: float  # since the controller first saw it, on its own clock (controller.Sightings)
    problem: str = ""  # why it is not ready, when it said so
    fatal: bool = False  # it will never be ready (its release does not import)


@dataclass(frozen=True, slots=True)
class Observed:
    desired: str
    master: str  # this node
    master_version: str
    generation: int  # the highest generation among live members
    size: int  # nodes to keep serving
    canaries: int
    canary_timeout_s: float
    nodes: Sequence[NodeState]
    failed: frozenset[str] = field(default_factory=frozenset)  # versions not to try again


@dataclass(frozen=True, slots=True)
class Done:
    """Every serving node runs the desired version."""


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str


@dataclass(frozen=True, slots=True)
class Launch:
    count: int
    generation: int


@dataclass(frozen=True, slots=True)
class Handover:
    target: str
    generation: int


@dataclass(frozen=True, slots=True)
class Terminate:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str
    terminate: tuple[str, ...]


Step = Done | Wait | Launch | Handover | Terminate | Abort


def next_step(o: Observed) -> Step:
    if o.desired in o.failed and o.master_version != o.desired:
        return Done()  # the rollout to this version failed; the status says why
    serving = [n for n in o.nodes if not n.draining]
    new = [n for n in serving if n.version == o.desired]
    old = [n for n in serving if n.version != o.desired]
    ready = [n for n in new if n.member and n.ready]
    pending = [n for n in new if not (n.member and n.ready)]
    late = [n for n in pending if n.fatal] + [
        n for n in pending if n.age_s > o.canary_timeout_s and not n.fatal
    ]

    if o.master_version != o.desired:
        if late:
            node = late[0]
            why = node.problem or "it never joined the cluster and got ready"
            limit = f"was not ready in {o.canary_timeout_s:g} s"
            when = "cannot get ready" if node.fatal else limit
            return Abort(f"new node {node.name} {when}: {why}", tuple(n.name for n in new))
        if len(new) < o.canaries:
            return Launch(o.canaries - len(new), o.generation)
        if pending:
            return Wait(f"{len(pending)} new nodes starting")
        target = min(ready, key=lambda n: (-n.generation, -n.age_s, n.name))
        return Handover(target.name, o.generation + 1)

    if late:
        return Terminate(late[0].name, late[0].problem or "not ready in time")
    if any(n.draining for n in o.nodes):
        return Wait("a node is draining")
    if old:
        if pending:
            return Wait(f"{len(pending)} new nodes starting")
        if len(serving) > o.size:
            victim = min(old, key=lambda n: (n.name == o.master, n.age_s, n.name))  # newest
            return Terminate(victim.name, f"runs {victim.version}, not {o.desired}")
        return Launch(1, o.generation)
    if len(new) < o.size:
        return Launch(o.size - len(new), o.generation)
    if pending:
        return Wait(f"{len(pending)} new nodes starting")
    if len(new) > o.size:
        extra = min(new, key=lambda n: (n.name == o.master, n.age_s, n.name))
        return Terminate(extra.name, f"more than the {o.size} nodes wanted")
    return Done()
