"""Pure: may a master launch or terminate nodes? Only while it reaches a majority.

A master cut off from the others (a partition) cannot tell them dead from unreachable; if it
went on deploying from its own view, it would terminate canaries its peers are about to take
the table on, or launch replacements for nodes that still run. So it acts only while the
members it reaches (alive and not suspect in its gossip view, itself included) are more than
half of the *known* membership: every node it has seen live, and every node its provider
runs now (a node the other side launched, which this one never saw join, is a member it must
reach too; one it launched itself counts once it has joined: it may still be starting), less
those that left gracefully (a drained node says goodbye) and those its provider confirms are
gone (listed before, not now: a process that exited, a deleted pod). A node that merely
stopped answering stays known, so a partition never shrinks the majority a cut-off master
needs; and when the other side drains the nodes it knew and launches new ones, the new ones
count against it.

The price: a cluster that loses more than half of its nodes at once to crashes the provider
cannot see (a machine gone with its processes) does not repair itself, and a cluster of one
node cannot abort a canary another master launched that never joins; an operator steps in. A
new master starts from the membership it has seen so far, never from empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tierfaas.membership.base import MemberInfo, MemberState


@dataclass(frozen=True, slots=True)
class Majority:
    reached: int  # alive and not suspect, this node included
    known: int  # the membership it must reach a majority of
    suspect: int  # live but not answering

    @property
    def held(self) -> bool:
        return 2 * self.reached > self.known

    def __str__(self) -> str:
        return f"{self.reached} of {self.known} known members reachable"


@dataclass
class MajorityGuard:
    """Feeds on the membership (``observe``) and decides (``majority``). ``me`` counts as
    reached: a node always reaches itself."""

    me: str
    known: set[str] = field(default_factory=set)

    def observe(
        self,
        members: Iterable[MemberInfo],
        provided: Iterable[str] = (),
        gone: Iterable[str] = (),
        launched: Iterable[str] = (),
    ) -> Majority:
        """Updates the known membership from a membership list (every state), the names the
        provider runs, those it confirms gone and those this master launched itself (known
        once seen live), and returns the majority now."""
        reached = {self.me}
        suspect = 0
        self.known.update(set(provided) - set(launched))
        for m in members:
            if m.state is MemberState.LEFT:
                self.known.discard(m.name)
            elif m.state.live:
                self.known.add(m.name)
                if m.state is MemberState.ALIVE:
                    reached.add(m.name)
                else:
                    suspect += 1
        self.known.difference_update(set(gone) - reached)
        self.known.add(self.me)
        return Majority(len(reached), len(self.known), suspect)
