"""Cluster membership: who is alive, their addresses and versions, as our own types.

``base`` defines the interface and events; ``kinship_adapter`` implements it over kinship
(the only module that imports kinship, loaded only when asked for, so pure modules such as
``tierfaas.topology`` never pull it in); ``tierfaas.testing.membership`` fakes it.
"""

from typing import TYPE_CHECKING, Any

from tierfaas.membership.base import (
    JoinStatus,
    MemberDown,
    MemberInfo,
    Membership,
    MembershipEvent,
    MemberState,
    MemberSuspect,
    MemberUp,
    MemberUpdated,
    NameConflictSelf,
    Resync,
)

if TYPE_CHECKING:
    from tierfaas.membership.kinship_adapter import GossipSettings, KinshipMembership

__all__ = [
    "GossipSettings",
    "JoinStatus",
    "KinshipMembership",
    "MemberDown",
    "MemberInfo",
    "MemberState",
    "MemberSuspect",
    "MemberUp",
    "MemberUpdated",
    "Membership",
    "MembershipEvent",
    "NameConflictSelf",
    "Resync",
]


def __getattr__(name: str) -> Any:
    if name in ("GossipSettings", "KinshipMembership"):
        from tierfaas.membership import kinship_adapter

        return getattr(kinship_adapter, name)
    raise AttributeError(name)
