"""Messages to the ``ClusterManager``: the only way anything else reads or changes cluster state.

A query carries an ``asyncio.Future`` that the manager resolves with the answer. (The routing
table itself is kept by ``tierfaas.control.plane``, which follows the roles published here.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from tierfaas.cluster.state import RoleChange, RunGone
from tierfaas.membership.base import MembershipEvent
from tierfaas.topology import Topology

RoleSubscriber: TypeAlias = Callable[[RoleChange], Awaitable[None]] | asyncio.Queue[RoleChange]
"""An async callback, awaited in order for each change, or a queue that receives them."""

RunWatcher: TypeAlias = Callable[[RunGone], None]
"""Called inside the actor, at once, for each run that stops taking forwards: it must be quick
and must not block (it runs between two messages)."""


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
class WatchRuns:
    watcher: RunWatcher


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Message: TypeAlias = (
    MembershipChanged | GetTopology | GetSnapshot | SubscribeRoles | WatchRuns | Stop
)
