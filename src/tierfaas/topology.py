"""Pure: from one node's view of the members to everyone's role. No I/O, no clock.

Every node runs this on its own view after every membership change, so two nodes with the
same view must compute the same topology: the order comes from ``rank_key`` alone and the
worker→replica assignment from a hash that is the same in every process (BLAKE2b, never
Python's salted ``hash()``). Live means alive *or suspect*: a slow node keeps its rank until
it is declared dead, so a brief stall moves no role.

Seniority comes from what the cluster has seen, not from a clock: each run publishes its
*cohort*, 0 for the runs that formed the cluster together and, for a run that joins a cluster
which already has members (or comes back after being declared dead), one more than the
highest cohort among the live members it saw (``next_cohort``). Cohorts order the ranks
before any epoch, so a run whose wall clock is behind, or that was started with an old
epoch, never outranks the master it joined. Epochs (kinship's Unix ms at start) only break
ties inside a cohort: runs that formed the cluster together, or joined at the same moment.

Rank 0 is the Master, ranks 1..k the Replicas (k = ceil(sqrt(N)) or a fixed count, capped
at N-1), the rest Workers. Each worker is assigned to one replica by rendezvous (highest
random weight) hashing, so a change of the replica set moves only the workers of the replica
that went, or those the new one takes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from tierfaas.membership.base import MemberState

Role: TypeAlias = Literal["master", "replica", "worker"]
ReplicaPolicy: TypeAlias = Literal["sqrt"] | int

_HRW_PERSON = b"tierfaas-hrw-v1"


class RankedMember(Protocol):
    """What topology needs to know of a member (``MemberInfo`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def state(self) -> MemberState: ...
    @property
    def demoted_since(self) -> int | None: ...
    @property
    def version(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def cohort(self) -> int | None: ...
    @property
    def cohort_pending(self) -> bool: ...


MAX_COHORT = 10**15 - 1
"""The highest cohort a run publishes (15 digits, as ``meta`` accepts): a cluster that got
there (only a forged one can) ranks its newest runs by epoch among themselves."""

UNRANKED_COHORT = 1 << 62
"""The cohort a run ranks in while its own is pending: after every published one."""


def rank_key(
    member: RankedMember, generation: int = 0, cohort: int = 0
) -> tuple[int, int, int, int, int, str]:
    """The sort key of a member; lowest is rank 0. The ONE place that decides the order.

    ``(-generation, -own generation, cohort, start, epoch, name)``. ``generation`` is the
    member's *effective* rollout generation (``effective_generations``): a rollout hands the
    table to a node of the new release together with a higher generation, so from that moment
    it and the other nodes of its release outrank every node of the old one, and roles never
    become ambiguous. Among those, the nodes that published the generation themselves (the
    handover target, nodes started in it) come first, so the target is master at once.

    Then ``cohort`` (``rank_cohorts``): how late the run joined, as the cluster saw it, not as
    a clock says. A run that joined a cluster with members, or came back after being declared
    dead, published a cohort above every live member's, so it ranks after all of them and
    never takes the master's role (or back a role it lost) because its epoch is older.

    Inside a cohort (runs that formed the cluster together or joined at the same moment),
    ``start`` is the run's epoch (Unix ms at its start), or the time of its demotion if it was
    declared dead and came back; ``name`` breaks ties of equal ms.
    """
    return (-generation, -member.generation, cohort, _start(member), member.epoch, member.name)


def _start(member: RankedMember) -> int:
    """The epoch, or a later demotion time (an earlier one, forged or skewed, counts for
    nothing)."""
    since = member.demoted_since
    return member.epoch if since is None else max(since, member.epoch)


def rank_cohorts(members: Iterable[RankedMember]) -> dict[str, int]:
    """Live member name -> the cohort it ranks in.

    A published cohort counts as is; a pending one (the run is still joining, or this observer
    holds it demoted until it confirms) ranks after all of them (``UNRANKED_COHORT``). A run
    of a release before cohorts published none: it ranks with the highest cohort among the
    runs that started before it (0 if none did), which is where that release's own order, by
    start time alone, puts it; so in a rolling upgrade or a rollback the old and the new
    release compute the same order as long as their clocks agree.
    """
    live = [m for m in members if m.state.live]
    published = [
        (_start(m), m.cohort) for m in live if m.cohort is not None and not m.cohort_pending
    ]
    out: dict[str, int] = {}
    for m in live:
        if m.cohort_pending:
            out[m.name] = UNRANKED_COHORT
        elif m.cohort is not None:
            out[m.name] = m.cohort
        else:
            start = _start(m)
            out[m.name] = max((c for s, c in published if s <= start), default=0)
    return out


def next_cohort(members: Iterable[RankedMember], self_name: str) -> int:
    """The cohort a run publishes when it joins (or comes back after being declared dead),
    seeing ``members``: 0 if no other live member has a cohort yet (the cluster forms now),
    else one more than the highest one among them, so it ranks after every one."""
    others = [m for m in members if m.name != self_name and m.state.live]
    ranked = rank_cohorts(others)
    settled = [ranked[m.name] for m in others if not m.cohort_pending]
    return min(max(settled) + 1, MAX_COHORT) if settled else 0


def joining_cohort(
    members: Iterable[RankedMember],
    self_name: str,
    co_joiners: Collection[tuple[str, int]] = (),
    waited_out: bool = False,
) -> int | None:
    """The cohort a run that has joined settles on now, or None to wait a moment.

    ``co_joiners`` are the runs (name, epoch) it first saw while they were joining too: the
    cluster forms with them, so their cohorts, settled since or not, do not count. Another
    run with a settled cohort means a cluster exists: rank after it (``next_cohort``).
    Otherwise the cluster forms now, with cohort 0 for all, in the order the runs still
    joining already rank in (by epoch): a run settles once no such run ranks before it (or
    it ``waited_out``), so the runs that have settled always rank first, as they did, and
    no role moves while a cluster forms.
    """
    live = [m for m in members if m.state.live]
    me = next((m for m in live if m.name == self_name), None)
    others = [m for m in live if m.name != self_name]
    counted = [m for m in others if (m.name, m.epoch) not in co_joiners]
    if any(not m.cohort_pending for m in counted):
        return next_cohort(counted, self_name)
    mine = (_start(me), me.epoch, me.name) if me is not None else None
    ahead = (
        [m for m in others if m.cohort_pending and (_start(m), m.epoch, m.name) < mine]
        if mine
        else []
    )
    if waited_out or not ahead:
        return 0
    return None


def effective_generations(members: Iterable[RankedMember]) -> dict[str, int]:
    """Release version -> the highest generation a live member of that release published.

    Only the new master publishes the new generation (when it takes the handover); the other
    nodes of its release rank with it through this rule, without a metadata change of their
    own, so the replicas move to the new release together with the master."""
    best: dict[str, int] = {}
    for m in members:
        if m.state.live:
            best[m.version] = max(best.get(m.version, 0), m.generation)
    return best


def replica_count(n: int, policy: ReplicaPolicy = "sqrt") -> int:
    """How many replicas ``n`` live members have: ceil(sqrt(n)) or a fixed count >= 1,
    capped at n-1. Raises ``ValueError`` for any other policy."""
    if n <= 1:
        return 0
    if policy == "sqrt":
        wanted = math.isqrt(n - 1) + 1  # ceil(sqrt(n)) without float rounding
    elif isinstance(policy, int) and not isinstance(policy, bool) and policy >= 1:
        wanted = policy
    else:
        # At least one replica: every worker must have one to ask.
        raise ValueError(f"replica policy must be 'sqrt' or an int >= 1, not {policy!r}")
    return min(wanted, n - 1)


def hrw_weight(worker: str, replica: str) -> int:
    """The 64-bit rendezvous weight of ``replica`` for ``worker``, the same in every process."""
    r = replica.encode()
    h = hashlib.blake2b(digest_size=8, person=_HRW_PERSON)
    h.update(len(r).to_bytes(4, "big"))
    h.update(r)
    h.update(worker.encode())
    return int.from_bytes(h.digest(), "big")


def assign_replica(worker: str, replicas: Iterable[str]) -> str:
    """The replica that serves ``worker``: highest weight, then highest name. Needs one."""
    best = max(replicas, key=lambda r: (hrw_weight(worker, r), r), default=None)
    if best is None:
        raise ValueError("no replica to assign the worker to")
    return best


class ReplicaAssignment(Mapping[str, str]):
    """Worker -> its replica (``assign_replica``), each computed when first asked, then kept.

    Why lazy: every node recomputes its topology after every membership change, and needs
    one assignment there, its own (the admin view asks for all, on demand). Computing all of
    them costs a hash per (worker, replica): N x sqrt(N), about a second of a node's event loop
    at 10,000 nodes for every join, leave or suspicion (benchmarks/scale.py); one worker's costs
    sqrt(N) hashes. The answers are the same as computing them all at once."""

    __slots__ = ("_known", "_members", "_replicas", "_workers")

    def __init__(self, workers: Sequence[str], replicas: Sequence[str]) -> None:
        if workers and not replicas:
            raise ValueError("no replica to assign the workers to")
        self._workers = tuple(workers)
        self._members = frozenset(workers)
        self._replicas = tuple(replicas)
        self._known: dict[str, str] = {}

    def __getitem__(self, worker: str) -> str:
        replica = self._known.get(worker)
        if replica is None:
            if worker not in self._members:
                raise KeyError(worker)
            replica = self._known[worker] = assign_replica(worker, self._replicas)
        return replica

    def __contains__(self, worker: object) -> bool:
        return worker in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def __repr__(self) -> str:
        return f"ReplicaAssignment({len(self._workers)} workers, {len(self._replicas)} replicas)"


@dataclass(frozen=True)
class Topology:
    """Roles in one view. ``members`` holds live names in rank order; ``replica_of`` maps
    each worker to its replica (a ``ReplicaAssignment``, computed as asked)."""

    members: tuple[str, ...] = ()
    master: str | None = None
    replicas: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()
    replica_of: Mapping[str, str] = field(default_factory=dict)

    def role_of(self, name: str) -> Role | None:
        """``"master"``, ``"replica"`` or ``"worker"``; None if ``name`` is not a live member."""
        if name == self.master:
            return "master"
        if name in self.replicas:
            return "replica"
        if name in self.replica_of or name in self.workers:
            return "worker"
        return None

    def rank_of(self, name: str) -> int | None:
        return self.members.index(name) if name in self.members else None

    @property
    def standby(self) -> str | None:
        """The first worker in rank order: when the master or a replica goes, the ranks
        shift by one and it becomes a replica (unless the replica count drops). It keeps a
        copy of the table, so that it then resumes with deltas instead of loading a
        snapshot after the failover (~6 s of CPU at 300,000 routes, docs/scale.md)."""
        return self.workers[0] if self.workers else None


def compute_topology(members: Iterable[RankedMember], replicas: ReplicaPolicy = "sqrt") -> Topology:
    """The topology of a view. Dead and left members are ignored; if a name appears twice
    (a restart seen before the old run's departure), the newer epoch counts."""
    newest: dict[str, RankedMember] = {}
    for m in members:
        if m.state.live and (m.name not in newest or m.epoch > newest[m.name].epoch):
            newest[m.name] = m
    generations = effective_generations(newest.values())
    cohorts = rank_cohorts(newest.values())
    ordered: Sequence[str] = [
        m.name
        for m in sorted(
            newest.values(),
            key=lambda m: rank_key(m, generations[m.version], cohorts[m.name]),
        )
    ]
    if not ordered:
        return Topology()
    k = replica_count(len(ordered), replicas)
    reps = tuple(ordered[1 : 1 + k])
    workers = tuple(ordered[1 + k :])
    replica_of = ReplicaAssignment(workers, reps) if reps else {}
    return Topology(tuple(ordered), ordered[0], reps, workers, replica_of)
