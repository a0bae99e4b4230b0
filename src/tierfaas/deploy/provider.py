"""The one interface through which a master starts and stops nodes (SPEC 6).

A provider knows the nodes *it* started or was told about, not the gossip: the rollout
controller joins its list with the membership view (a node is ready when it is a live
member and answers ``/readyz``). Implementations: ``tierfaas.deploy.local.LocalProvider``
(node processes on this machine, what ``tierfaas up`` uses) and
``tierfaas.deploy.kubernetes.KubernetesProvider`` (pods through the Kubernetes API).

Every call may be made by whichever node is master at the time, including a master that
took over in the middle of a rollout: providers keep their state where every node can
read it (a shared folder, the Kubernetes API), never in one process's memory.

``launch`` and ``terminate`` carry the caller's ``term`` (``tierfaas.deploy.term``): a
provider that keeps state of its own refuses an older term than it has seen with
``FencedError`` (the local provider does, under its lock). ``term=None`` is an operator's
call (``tierfaas up``, ``down``) and is not fenced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from tierfaas.deploy.term import Term

NodePhase: TypeAlias = Literal["starting", "running", "draining"]


class ProviderError(Exception):
    """A provider could not do what it was asked (no addresses left, API refused, ...)."""


@dataclass(frozen=True, slots=True)
class ProvidedNode:
    """One node as its provider sees it.

    ``name`` is the node's gossip name, the same as in the membership view. ``phase`` is
    ``starting`` until the provider saw it running (a process alive, a pod Running),
    ``draining`` once ``terminate`` was asked for it. Nodes that are gone are not listed.
    """

    name: str
    version: str
    generation: int
    phase: NodePhase
    http: str | None = None  # "host:port" of its HTTP API, when known
    launched_at: float = 0.0  # Unix s when the provider started it (0: unknown); not an age:
    # another host's clock (canary ages are counted by the controller, controller.Sightings)


class Provider(Protocol):
    """Starts and stops nodes of a given release version."""

    kind: str  # "local", "kubernetes"

    async def launch(
        self, version: str, generation: int, count: int, *, term: Term | None = None
    ) -> list[str]:
        """Starts ``count`` nodes of release ``version`` in rollout ``generation``, joined to
        this cluster; returns their names at once (they join and get ready later)."""
        ...

    async def terminate(self, name: str, *, term: Term | None = None) -> None:
        """Stops node ``name`` gracefully: it leaves the gossip, finishes what is in flight and
        exits (SIGTERM, a pod deletion with a grace period). Returns once asked, not once gone.
        Unknown or already gone names are ignored."""
        ...

    async def nodes(self) -> list[ProvidedNode]:
        """Every node this provider runs that is not gone yet."""
        ...

    async def close(self) -> None:
        """Releases clients and connections (never stops nodes)."""
        ...


class NoProvider:
    """For nodes that follow a registry without a way to start nodes (``--provider none``):
    the master still reports the desired version in the status, and says why it cannot
    roll the cluster to it."""

    kind = "none"

    async def launch(
        self, version: str, generation: int, count: int, *, term: Term | None = None
    ) -> list[str]:
        raise ProviderError(
            "this cluster has no infrastructure provider, so it cannot start nodes of "
            f"{version}: start the nodes with --provider local or --provider kubernetes"
        )

    async def terminate(self, name: str, *, term: Term | None = None) -> None:
        return None

    async def nodes(self) -> list[ProvidedNode]:
        return []

    async def close(self) -> None:
        return None
