"""``KubernetesProvider``: starts and stops nodes as bare pods through the Kubernetes API.

No Deployment or StatefulSet owns the pods: a controller would recreate the very pods a
rollout drains, and the master would need rights on controllers too. The provider keeps
nothing in memory but its API client: ``nodes()`` rebuilds the picture from the pods' labels.

Fencing (issue 17.3): each pod it launches carries the launching master's term (annotation
``tierfaas.dev/term``), and a launch or terminate under a term is refused (``FencedError``)
when any node pod, draining ones included, carries a newer term: the cluster itself records
that a newer master acted. The check lists the pods just before the create or delete, so a
window of one API round trip remains in which a newer master's very first launch is not yet
seen; the Kubernetes API has no create or delete conditional on another object (a
compare-and-swap on one object by ``resourceVersion`` would leave the same window between
the swap and the action, and need write rights beyond pods). The rollout controller also
checks the registry's newest term just before each step, which covers a newer master that
has launched nothing yet. Listing needs no right beyond those the provider has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from tierfaas.config import Address
from tierfaas.deploy.kubernetes.errors import KubernetesError, api_call
from tierfaas.deploy.kubernetes.manifests import (
    ANNOTATION_VERSION,
    LABEL_GENERATION,
    LABEL_VERSION,
    NODE_LABELS,
    node_phase,
    pod_manifest,
    pod_name,
    random_token,
    term_of_pod,
)
from tierfaas.deploy.kubernetes.settings import HTTP_PORT, KubernetesSettings
from tierfaas.deploy.provider import ProvidedNode
from tierfaas.deploy.term import Term, fence

if TYPE_CHECKING:
    from lightkube import AsyncClient
    from lightkube.resources.core_v1 import Pod

log = logging.getLogger(__name__)


class KubernetesProvider:
    """Starts and stops nodes as pods (``tierfaas.deploy.provider.Provider``).

    Build it with ``KubernetesProvider.from_environment()``, in a pod (its service account) or
    on a workstation (``$KUBECONFIG``, else ``~/.kube/config``). Every API failure raises
    ``KubernetesError`` (a ``ProviderError``) saying what to fix.
    """

    kind = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings,
        client: AsyncClient,
        *,
        new_name: Callable[[int], str] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self._new_name = new_name or (lambda generation: pod_name(generation, random_token()))
        self._server = str(getattr(client.config.cluster, "server", "?"))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KubernetesProvider:
        """Settings from ``TIERFAAS_K8S_*`` and a client from the in-cluster service account,
        else ``$KUBECONFIG``, else ``~/.kube/config``."""
        settings = KubernetesSettings.from_environment(environ)
        return cls(settings, connect(settings.namespace))

    async def launch(
        self, version: str, generation: int, count: int, *, term: Term | None = None
    ) -> list[str]:
        """Launches ``count`` pods carrying ``term``; refused (``FencedError``) before any
        create when a node pod carries a newer term."""
        from lightkube.resources.core_v1 import Pod

        if term is not None:
            fence(term, await self.newest_term(), f"launching {count} node(s)")
        names: list[str] = []
        for _ in range(count):
            for attempt in range(3):
                name = self._new_name(generation)
                manifest = pod_manifest(self.settings, version, generation, name, term)
                try:
                    with self._api(f"create pod {name}", creating=True):
                        await self.client.create(cast("Pod", Pod.from_dict(manifest)))
                except KubernetesError as exc:
                    if exc.reason == "exists" and attempt < 2:
                        continue  # a name taken by chance: draw another
                    if names:
                        raise KubernetesError(
                            f"{exc} (created before the failure, and left running: "
                            f"{', '.join(names)})",
                            exc.reason,
                            exc.status,
                        ) from None
                    raise
                names.append(name)
                break
        log.info("launched %s (version %s, generation %d)", ", ".join(names), version, generation)
        return names

    async def terminate(self, name: str, *, term: Term | None = None) -> None:
        """Deletes pod ``name`` with its grace period; refused (``FencedError``) when a node
        pod carries a term newer than ``term``."""
        from lightkube.resources.core_v1 import Pod

        pod = await self._get(name)
        if pod is None:
            return
        if not _is_node(pod):
            log.warning("not terminating pod %s: it is not a tierfaas node", name)
            return
        if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
            return  # already asked
        if term is not None:
            fence(term, await self.newest_term(), f"terminating {name}")
        grace = self.settings.grace_period_s
        if pod.spec is not None and pod.spec.terminationGracePeriodSeconds is not None:
            grace = pod.spec.terminationGracePeriodSeconds  # what its own drain was sized for
        try:
            with self._api(f"delete pod {name}"):
                await self.client.delete(Pod, name, grace_period=grace)
        except KubernetesError as exc:
            if exc.reason != "not_found":
                raise
        log.info("terminating %s (grace period %d s)", name, grace)

    async def nodes(self) -> list[ProvidedNode]:
        out = [node for pod in await self._node_pods() if (node := provided_node(pod)) is not None]
        return sorted(out, key=lambda n: (n.generation, n.name))

    async def newest_term(self) -> Term | None:
        """The newest term any node pod (running, pending or draining) was launched under."""
        terms = [
            term_of_pod(pod.metadata.annotations if pod.metadata is not None else None)
            for pod in await self._node_pods()
        ]
        return max((t for t in terms if t is not None), key=lambda t: t.key, default=None)

    async def _node_pods(self) -> list[Pod]:
        from lightkube.resources.core_v1 import Pod

        with self._api("list pods"):
            return [pod async for pod in self.client.list(Pod, labels=dict(NODE_LABELS))]

    async def wait_ready(
        self,
        name: str,
        timeout_s: float = 300.0,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Returns once pod ``name`` is Ready (its node joined and answers ``/readyz``).
        Raises ``KubernetesError`` (``not_ready``) past ``timeout_s``, with what it waits on."""
        deadline = clock() + timeout_s
        waiting_on = "no pod status yet"
        while True:
            pod = await self._get(name)
            if pod is None:
                raise KubernetesError(f"pod {name} is gone while waiting for it", "not_found")
            ready, waiting_on = pod_readiness(pod)
            if ready:
                return
            if clock() >= deadline:
                raise KubernetesError(
                    f"pod {name} not ready after {timeout_s:g} s: {waiting_on} "
                    f"(kubectl -n {self.settings.namespace} describe pod {name}; kubectl logs)",
                    "not_ready",
                )
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self.client.close()

    def _api(
        self, action: str, *, creating: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return api_call(action, self.settings.namespace, self._server, creating=creating)

    async def _get(self, name: str) -> Pod | None:
        from lightkube.resources.core_v1 import Pod

        try:
            with self._api(f"get pod {name}"):
                return await self.client.get(Pod, name)
        except KubernetesError as exc:
            if exc.reason == "not_found":
                return None
            raise


def connect(namespace: str) -> AsyncClient:
    """A lightkube client on the in-cluster service account, else ``$KUBECONFIG``, else
    ``~/.kube/config``; ``KubernetesError`` (``no_config``) if none is usable."""
    try:
        from lightkube import AsyncClient
        from lightkube import ConfigError as LightkubeConfigError
    except ImportError:
        raise KubernetesError(
            "the kubernetes provider needs lightkube: pip install 'tierfaas[kubernetes]'",
            "no_config",
        ) from None
    for name in ("httpx2", "httpcore2"):  # one INFO line per request, every poll: too many
        library_log = logging.getLogger(name)
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.WARNING)
    try:
        return AsyncClient(namespace=namespace, field_manager="tierfaas")
    except (LightkubeConfigError, OSError, KeyError, ValueError) as exc:
        raise KubernetesError(
            f"no usable Kubernetes configuration (in-cluster service account, $KUBECONFIG or "
            f"~/.kube/config): {exc}",
            "no_config",
        ) from None


def _is_node(pod: Pod) -> bool:
    labels = (pod.metadata.labels if pod.metadata is not None else None) or {}
    return all(labels.get(k) == v for k, v in NODE_LABELS.items())


def provided_node(pod: Pod) -> ProvidedNode | None:
    """The node a pod runs, or None if it is gone or not one of ours (bad labels)."""
    meta, status = pod.metadata, pod.status
    if meta is None or meta.name is None:
        return None
    phase = node_phase(status.phase if status else None, meta.deletionTimestamp is not None)
    labels, notes = meta.labels or {}, meta.annotations or {}
    version = notes.get(ANNOTATION_VERSION) or labels.get(LABEL_VERSION)
    generation = labels.get(LABEL_GENERATION, "")
    if phase is None or not version or not generation.isdigit():
        if phase is not None:
            log.warning("pod %s has no valid version or generation label; ignored", meta.name)
        return None
    ip = status.podIP if status else None
    http = str(Address(ip, HTTP_PORT)) if ip else None
    created = meta.creationTimestamp  # the API server's clock: shown, not used for ages
    launched_at = created.timestamp() if created is not None else 0.0
    return ProvidedNode(meta.name, version, int(generation), phase, http, launched_at)


def pod_readiness(pod: Pod) -> tuple[bool, str]:
    """(Ready, what it is waiting on) from a pod's status, for messages."""
    status = pod.status
    if status is None:
        return False, "no pod status yet"
    for cond in status.conditions or []:
        if cond.type == "Ready" and cond.status == "True":
            return True, ""
    for cs in status.containerStatuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason:
            return False, f"container {waiting.reason}: {waiting.message or ''}".rstrip(": ")
    for cond in status.conditions or []:
        if cond.status != "True" and cond.message:
            return False, f"{cond.type}: {cond.message}"
    return False, f"phase {status.phase or 'unknown'}"
