"""Our membership vocabulary: members, their states and the events a ``Membership`` yields.

Nothing here knows about kinship: the node, the cluster manager and the tests see only these
types, so the gossip library can be swapped or faked (``tierfaas.testing.FakeMembership``)
without touching them. A member is one *run* of a node, ``(name, epoch)``: a node that
restarts under the same name is a different member with a higher epoch.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from tierfaas.config import Address


class MemberState(enum.StrEnum):
    """A member's state as this node sees it."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def live(self) -> bool:
        """Alive or suspect: a suspect keeps its place until it is declared dead."""
        return self in (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One run of one node as this node sees it.

    ``http`` and ``rpc`` are None when the member did not publish them or published invalid
    values (peers are not trusted). ``demoted_since`` is set, in Unix ms, when this run was
    declared dead and came back (a long pause); such a run also publishes a new ``cohort``, so
    it ranks as if it had joined then and cannot take back a role it lost (see
    ``tierfaas.topology.rank_key``). ``generation`` is the rollout generation it published (0
    before any rollout). ``cohort`` is how late the run joined the cluster, as it saw the
    cluster (``tierfaas.topology.next_cohort``); None from a release before cohorts.
    ``cohort_pending`` is True while the run has not settled its cohort yet (it is joining), or
    while this observer holds it demoted until it confirms: it then ranks after every run
    whose cohort is settled.
    """

    name: str
    epoch: int
    state: MemberState
    addr: str
    http: Address | None = None
    rpc: Address | None = None
    version: str = ""
    demoted_since: int | None = None
    generation: int = 0
    cohort: int | None = None
    cohort_pending: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """``(name, epoch)``: identifies this run of the node."""
        return (self.name, self.epoch)


@dataclass(frozen=True, slots=True)
class MemberUp:
    """A member is alive: new, recovered from suspicion, or back from the dead (demoted)."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberSuspect:
    """A member missed its probes; it keeps its rank until it is declared dead."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberDown:
    """A member is gone: ``dead`` (a suspicion expired) or ``left`` (on purpose, or restarted)."""

    member: MemberInfo
    reason: Literal["dead", "left"]


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """A member's metadata (addresses, version, demotion) changed. Also sent for this node."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class Resync:
    """Events were lost: ``members`` (live, this node included) replaces the whole view."""

    members: tuple[MemberInfo, ...]


@dataclass(frozen=True, slots=True)
class NameConflictSelf:
    """Another node already holds this node's name; the cluster ignores this one. Exit."""

    other_addr: str


@dataclass(frozen=True, slots=True)
class JoinStatus:
    """This node joined the cluster, or could not: ``reason`` says why (for /readyz)."""

    joined: bool
    reason: str


MembershipEvent: TypeAlias = (
    MemberUp | MemberSuspect | MemberDown | MemberUpdated | Resync | NameConflictSelf | JoinStatus
)


class Membership(Protocol):
    """Who is in the cluster. Implemented by ``KinshipMembership`` and ``FakeMembership``.

    Call ``events()`` before ``start()`` to see every change from the first join on. Until
    ``joined`` is true the node must not act as a cluster of one: ``join_reason`` says why.
    """

    @property
    def local(self) -> MemberInfo:
        """This node's own member record."""
        ...

    @property
    def joined(self) -> bool:
        """True once this node is part of a cluster (it answered or was answered by a seed)."""
        ...

    @property
    def join_reason(self) -> str:
        """Why this node is not joined yet; empty once joined."""
        ...

    async def start(self) -> None:
        """Binds and joins. Never raises because seeds are unreachable: it retries instead."""
        ...

    def members(self) -> list[MemberInfo]:
        """Live (alive and suspect) members, this node included."""
        ...

    def events(self) -> AsyncIterator[MembershipEvent]:
        """A new, independent subscription to events, starting now. Ends on ``close()``."""
        ...

    async def update_meta(self, **changes: str | None) -> None:
        """Changes this node's metadata keys (None deletes one) and gossips them."""
        ...

    async def leave(self, timeout: float | None = None) -> None:
        """Tells the cluster this node is leaving; returns within about ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Stops gossip and ends every ``events()`` iterator. Closing twice does nothing."""
        ...
