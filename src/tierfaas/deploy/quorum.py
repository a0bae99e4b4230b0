"""Pure: may a master launch or terminate nodes? Only while it reaches a majority.

A master cut off from the others (a partition) cannot tell them dead from unreachable; if it
went on deploying from its own view, it would terminate canaries its peers are about to take
the table on, or launch replacements for nodes that still run. So it acts only while the
members it reaches (alive and not suspect in its gossip view, itself included) are more than
half of the *known* membership: every run it has seen live in this term, less those that
left gracefully (a drained node says goodbye) and those its provider confirms are gone (a
process that exited, a deleted pod: gone for good, not cut off). A run that merely stopped
answering stays known, so a partition never shrinks the majority it needs.

The price is that a cluster that loses more than half of its nodes at once to crashes the
provider cannot see (a machine gone with its processes) does not repair itself; an operator
restarts the nodes. A new term (a new master, or a handover) starts from the membership its
holder has seen so far, never from empty.
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

    def observe(self, members: Iterable[MemberInfo], gone: Iterable[str] = ()) -> Majority:
        """Updates the known membership from a membership list (every state) and the names
        the provider confirms gone, and returns the majority now."""
        reached = {self.me}
        suspect = 0
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
