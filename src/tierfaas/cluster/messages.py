"""Messages to the ``ClusterManager``: the only way anything else reads or changes cluster state.

A query carries an ``asyncio.Future`` that the manager resolves with the answer; a command
carries none (it is soft state: a lost write costs a retry later, never a failed request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from tierfaas.cluster.state import NodeEndpoint, RoleChange
from tierfaas.membership.base import MembershipEvent
from tierfaas.topology import Topology

RoleSubscriber: TypeAlias = Callable[[RoleChange], Awaitable[None]] | asyncio.Queue[RoleChange]
"""An async callback, awaited in order for each change, or a queue that receives them."""


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    event: MembershipEvent


@dataclass(frozen=True, slots=True)
class GetTopology:
    future: asyncio.Future[Topology]


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    """The JSON-able view for ``GET /v1/cluster``."""

    future: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SubscribeRoles:
    subscriber: RoleSubscriber


@dataclass(frozen=True, slots=True)
class RegisterFunction:
    """``func`` is warm on the live member named ``node``."""

    func: str
    node: str


@dataclass(frozen=True, slots=True)
class UnregisterFunction:
    func: str
    node: str


@dataclass(frozen=True, slots=True)
class QueryFunction:
    func: str
    future: asyncio.Future[list[NodeEndpoint]]


@dataclass(frozen=True, slots=True)
class DeploymentHandover:
    """Replaces the routing table with ``snapshot`` (function -> node names); the future gets
    the number of routes kept (routes to members that are not live are dropped)."""

    snapshot: Mapping[str, Sequence[str]]
    future: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Message: TypeAlias = (
    MembershipChanged
    | GetTopology
    | GetSnapshot
    | SubscribeRoles
    | RegisterFunction
    | UnregisterFunction
    | QueryFunction
    | DeploymentHandover
    | Stop
)
