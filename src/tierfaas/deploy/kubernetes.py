"""The kubernetes provider: one pod per node, created and deleted through the Kubernetes API.

How it works (SPEC 6):

- A node is a bare pod named like the node, which the master creates and deletes through this
  provider. No Deployment or StatefulSet owns it: a controller would recreate the very pods a
  rollout drains, and the master would need rights on controllers too.
- Each pod carries labels (``app.kubernetes.io/name=tierfaas``, ``component=node``,
  ``tierfaas.dev/version``, ``tierfaas.dev/generation``) from which ``nodes()`` rebuilds the
  whole picture, so a master that takes over mid-rollout sees what its predecessor saw: the
  provider keeps nothing in memory but its API client.
- ``pod_manifest`` is pure, so tests validate the exact objects sent against the official
  schemas. A pod also carries the provider's settings in its environment (``TIERFAAS_K8S_*``),
  so whichever node becomes master launches identical pods.
- Removal without failed requests: deleting a pod takes it out of the Service endpoints at
  once; the preStop sleep keeps it serving while proxies and load balancers catch up; then
  SIGTERM makes the node leave the gossip and drain. ``terminationGracePeriodSeconds`` covers
  the sleep, the drain timeout and a margin, so the kubelet never cuts a drain short.
- Gossip seeds are the DNS name of a headless Service that lists every node pod, ready or not;
  ``resolve_seeds`` turns it into pod IPs before the node starts.

lightkube is imported lazily: ``tierfaas node`` can import ``resolve_seeds`` without the
``kubernetes`` extra installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from tierfaas.config import Address
from tierfaas.deploy.provider import NodePhase, ProvidedNode, ProviderError
from tierfaas.errors import ConfigError
from tierfaas.keys import KEY_ENV

if TYPE_CHECKING:
    from lightkube import AsyncClient
    from lightkube.resources.core_v1 import Pod

log = logging.getLogger(__name__)

HTTP_PORT = 8080
GOSSIP_PORT = 7946  # the control plane (gRPC) listens on +1, the query lane on +2
REGISTRY_MOUNT = "/registry"
RUN_AS = 10001  # the image's user and group
NODE_OVERHEAD_MIB = 512
"""Memory a node needs besides its instances (the node, its zygote, gossip); the rest of the
pod's memory is the instances' budget (``--memory-budget-mb``), so they never get the pod
OOM-killed: an instance's ``memory_mb`` caps its address space, which bounds its RSS."""

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "tierfaas.dev/version"  # a label value: see version_label()
LABEL_GENERATION = "tierfaas.dev/generation"
ANNOTATION_VERSION = "tierfaas.dev/version"  # the exact release version
NODE_LABELS = {LABEL_NAME: "tierfaas", LABEL_COMPONENT: "node"}  # what nodes() selects

DEFAULT_NAMESPACE = "tierfaas"
ENV_PREFIX = "TIERFAAS_K8S_"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_CPU = re.compile(r"[0-9]+(\.[0-9]+)?m?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# Flags the pod template sets itself; node_args may not override them.
_RESERVED_FLAGS = frozenset(
    {
        "--registry", "--release-version", "--release", "--generation", "--provider",
        "--provider-state", "--name", "--http", "--gossip", "--rpc", "--join", "--key-file",
        "--drain-timeout-s", "--memory-budget-mb",
    }
)  # fmt: skip


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """How the provider makes pods. Each field is also the environment variable
    ``TIERFAAS_K8S_<FIELD>`` (``from_environment``); pods carry them on (``to_env``)."""

    image: str = ""
    """The node image (required), e.g. ``registry.example.com/tierfaas:0.1.0``."""
    namespace: str = DEFAULT_NAMESPACE
    """Where the pods live. In a pod: its own namespace."""
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "tierfaas"
    """The pods' service account: the master uses it to create and delete pods (rbac.yaml)."""
    registry_claim: str = "tierfaas-registry"
    """The PersistentVolumeClaim (ReadWriteMany) holding the release registry."""
    gossip_service: str = "tierfaas-gossip"
    """The headless Service whose DNS name lists every node pod: the gossip seeds."""
    cluster_domain: str = "cluster.local"
    key_secret: str = "tierfaas-cluster-key"
    """The Secret holding the cluster key ('tierfaas keygen'), under ``key_secret_key``."""
    key_secret_key: str = "cluster.key"
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_mib: int = 2048
    """Memory request and limit of a pod; instances get all but ``NODE_OVERHEAD_MIB``."""
    prestop_sleep_s: int = 5
    """How long a deleted pod keeps serving before SIGTERM, while endpoints drop it. Raise it
    behind load balancers that are slow to notice (cloud LBs, ingress controllers)."""
    drain_timeout_s: int = 30
    """The node's ``--drain-timeout-s``: how long calls in flight may finish after SIGTERM."""
    node_args: tuple[str, ...] = ()
    """More ``tierfaas node`` flags for every pod (``--canaries 3``), shell-quoted in env."""

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("image", bool(self.image) and not any(c.isspace() for c in self.image),
             "set it to the node image, e.g. registry.example.com/tierfaas:0.1.0"),
            ("namespace", _is(_DNS_LABEL, self.namespace, 63), "not a namespace name"),
            ("image_pull_policy", self.image_pull_policy in ("Always", "IfNotPresent", "Never"),
             "not Always|IfNotPresent|Never"),
            ("service_account", _is(_DNS_SUBDOMAIN, self.service_account, 253), "not a name"),
            ("registry_claim", _is(_DNS_SUBDOMAIN, self.registry_claim, 253), "not a name"),
            ("gossip_service", _is(_DNS_1035_LABEL, self.gossip_service, 63),
             "not a Service name"),
            ("cluster_domain", _is(_DNS_SUBDOMAIN, self.cluster_domain, 253), "not a domain"),
            ("key_secret", _is(_DNS_SUBDOMAIN, self.key_secret, 253), "not a Secret name"),
            ("key_secret_key", _is(_SECRET_KEY, self.key_secret_key, 253), "not a Secret key"),
            ("cpu_request", _is(_CPU, self.cpu_request, 32), "not a CPU quantity (500m, 2)"),
            ("cpu_limit", _is(_CPU, self.cpu_limit, 32), "not a CPU quantity (500m, 2)"),
            ("memory_mib", self.memory_mib >= NODE_OVERHEAD_MIB + 64,
             f"must be at least {NODE_OVERHEAD_MIB + 64}"),
            ("prestop_sleep_s", 0 <= self.prestop_sleep_s <= 300, "must be 0..300"),
            ("drain_timeout_s", 1 <= self.drain_timeout_s <= 3600, "must be 1..3600"),
        ]  # fmt: skip
        for field, ok, reason in checks:
            if not ok:
                raise ConfigError(env_name(field), f"{getattr(self, field)!r}: {reason}")
        for arg in self.node_args:
            if arg.split("=", 1)[0] in _RESERVED_FLAGS:
                raise ConfigError(env_name("node_args"), f"{arg} is set by the pod template")

    @property
    def grace_period_s(self) -> int:
        """terminationGracePeriodSeconds: preStop sleep + drain + 10 s to leave and stop."""
        return self.prestop_sleep_s + self.drain_timeout_s + 10

    @property
    def memory_budget_mb(self) -> int:
        return self.memory_mib - NODE_OVERHEAD_MIB

    @property
    def seed(self) -> str:
        """The gossip seed every pod joins through: the headless Service's DNS name."""
        return f"{self.gossip_service}.{self.namespace}.svc.{self.cluster_domain}:{GOSSIP_PORT}"

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    ) -> KubernetesSettings:
        """Settings from ``TIERFAAS_K8S_*`` variables; unset ones keep their defaults. Without
        ``TIERFAAS_K8S_NAMESPACE``, the namespace of the pod we run in, if any. Raises
        ``ConfigError`` naming the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            text = env.get(env_name(f.name), "").strip()
            if not text:
                continue
            if isinstance(f.default, int):
                try:
                    values[f.name] = int(text)
                except ValueError:
                    raise ConfigError(env_name(f.name), f"{text!r} is not a number") from None
            elif isinstance(f.default, tuple):
                try:
                    values[f.name] = tuple(shlex.split(text))
                except ValueError as exc:
                    raise ConfigError(env_name(f.name), str(exc)) from None
            else:
                values[f.name] = text
        if "namespace" not in values:
            values["namespace"] = own_namespace(service_account_dir) or DEFAULT_NAMESPACE
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables ``from_environment`` reads back into these settings, but the
        namespace: a pod takes that from its own metadata."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "namespace":
                continue
            out[env_name(f.name)] = shlex.join(value) if isinstance(value, tuple) else str(value)
        return out


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def own_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """The namespace of the pod we run in, or None outside a pod."""
    try:
        return (service_account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None


def _is(pattern: re.Pattern[str], text: str, max_len: int) -> bool:
    return len(text) <= max_len and pattern.fullmatch(text) is not None


# -- the pod (pure) -------------------------------------------------------------------------


def version_label(version: str) -> str:
    """``version`` as a label value (63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends).
    Versions may also hold ``+`` and run to 64 characters; those are made to fit. The exact
    version is in the ``tierfaas.dev/version`` annotation."""
    if _is(_LABEL_VALUE, version, 63):
        return version
    fitted = version.replace("+", "_")[:63].strip("-_.")
    return fitted if _is(_LABEL_VALUE, fitted, 63) else "unlabelled"


def pod_name(generation: int, token: str) -> str:
    """A node's pod (and gossip) name: ``tierfaas-g<generation>-<token>``."""
    return f"tierfaas-g{generation}-{token}"


def random_token(length: int = 6) -> str:
    """Like Kubernetes' generated names: lowercase, no vowels (no accidental words)."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def node_args(settings: KubernetesSettings, version: str, generation: int) -> list[str]:
    """The arguments of ``tierfaas`` (the image's entrypoint) in a node pod. ``$(VAR)`` is
    expanded by the kubelet from the container's environment."""
    return [
        "node",
        "--registry", REGISTRY_MOUNT,
        "--release-version", version,
        "--generation", str(generation),
        "--provider", "kubernetes",
        "--name", "$(POD_NAME)",
        # The pod IP, not 0.0.0.0: the node publishes this address to its peers, which refuse
        # an unspecified one (membership/meta.py).
        "--http", f"$(POD_IP):{HTTP_PORT}",
        "--gossip", f"$(POD_IP):{GOSSIP_PORT}",
        "--join", settings.seed,
        "--drain-timeout-s", str(settings.drain_timeout_s),
        "--memory-budget-mb", str(settings.memory_budget_mb),
        *settings.node_args,
    ]  # fmt: skip


def pod_manifest(
    settings: KubernetesSettings, version: str, generation: int, name: str
) -> dict[str, Any]:
    """The pod of node ``name`` serving release ``version`` in rollout ``generation``."""
    labels = {
        **NODE_LABELS,
        LABEL_MANAGED_BY: "tierfaas",
        LABEL_VERSION: version_label(version),
        LABEL_GENERATION: str(generation),
    }
    memory = f"{settings.memory_mib}Mi"
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": env_name("namespace"),
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        # From the environment, not a key file: a Secret volume's files are either root-owned
        # (unreadable to the node's user) or, with fsGroup, group-readable, which
        # tierfaas.keys refuses.
        {
            "name": KEY_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": settings.key_secret, "key": settings.key_secret_key}
            },
        },
        {"name": "TIERFAAS_REGISTRY", "value": REGISTRY_MOUNT},  # for kubectl exec ... rollout
        *({"name": k, "value": v} for k, v in settings.to_env().items()),
    ]
    container: dict[str, Any] = {
        "name": "node",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": node_args(settings, version, generation),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "gossip-udp", "containerPort": GOSSIP_PORT, "protocol": "UDP"},
            {"name": "gossip-tcp", "containerPort": GOSSIP_PORT, "protocol": "TCP"},
            {"name": "rpc", "containerPort": GOSSIP_PORT + 1, "protocol": "TCP"},
            {"name": "lane", "containerPort": GOSSIP_PORT + 2, "protocol": "TCP"},
        ],
        # /healthz answers while the process runs; /readyz once joined and not draining.
        "startupProbe": _probe("/healthz", period_s=2, failures=60),
        "readinessProbe": _probe("/readyz", period_s=2, failures=2),
        # Lenient: a busy node must not be killed, nor a draining one (it stops listening)
        # cut short: the failures it takes outlast the grace period.
        "livenessProbe": _probe(
            "/healthz",
            period_s=10,
            failures=max(6, settings.grace_period_s // 10 + 1),
            timeout_s=5,
        ),
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": memory},
            "limits": {"cpu": settings.cpu_limit, "memory": memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            # Read-write: the master writes the rollout status into the registry.
            {"name": "registry", "mountPath": REGISTRY_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if settings.prestop_sleep_s:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.prestop_sleep_s}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_VERSION: version},
        },
        "spec": {
            "serviceAccountName": settings.service_account,
            "automountServiceAccountToken": True,  # whichever node is master calls the API
            "enableServiceLinks": False,  # no *_SERVICE_HOST variables in the functions' env
            "restartPolicy": "Always",  # a crashed node restarts in place, under its name
            "terminationGracePeriodSeconds": settings.grace_period_s,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {
                    "name": "registry",
                    "persistentVolumeClaim": {"claimName": settings.registry_claim},
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            ],
        },
    }


def _probe(path: str, *, period_s: int, failures: int, timeout_s: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def node_phase(phase: str | None, deleting: bool) -> NodePhase | None:
    """A pod's phase as the provider reports it; None for a pod whose node is gone."""
    if phase in ("Succeeded", "Failed"):
        return None  # exited (drained, evicted): the node is gone even if the object lingers
    if deleting:
        return "draining"
    if phase in ("Running", "Unknown"):  # Unknown: its kubelet is out of touch
        return "running"
    return "starting"  # Pending: scheduling, pulling the image, starting


# -- errors ---------------------------------------------------------------------------------

ErrorReason: TypeAlias = Literal[
    "no_config", "unreachable", "unauthorized", "forbidden", "not_found", "exists", "invalid",
    "not_ready", "api",
]  # fmt: skip


class KubernetesError(ProviderError):
    """The Kubernetes API refused a call or could not be reached. ``reason`` says which
    (``forbidden``, ``not_found``, ``unreachable``, ...); ``status`` is the HTTP status."""

    def __init__(self, message: str, reason: ErrorReason, status: int | None = None) -> None:
        super().__init__(message)
        self.reason: ErrorReason = reason
        self.status = status


def api_error(
    action: str, status: int, message: str, *, namespace: str, creating: bool = False
) -> KubernetesError:
    """The error to raise when the API answered ``status`` to ``action``."""
    message = message or "no message"
    if status == 401:
        return KubernetesError(
            f"{action}: the Kubernetes API does not accept our credentials (401): {message}; "
            "check the service account token or KUBECONFIG",
            "unauthorized",
            status,
        )
    if status == 403:
        return KubernetesError(
            f"{action}: forbidden by RBAC (403): {message}; the service account needs get, "
            f"list, watch, create and delete on pods in namespace {namespace!r} "
            "(deploy/kubernetes/rbac.yaml)",
            "forbidden",
            status,
        )
    if status == 404 and creating:
        return KubernetesError(
            f"{action}: namespace {namespace!r} not found (404): {message}; create it "
            "(deploy/kubernetes/namespace.yaml) or set TIERFAAS_K8S_NAMESPACE",
            "not_found",
            status,
        )
    if status == 404:
        return KubernetesError(f"{action}: not found (404): {message}", "not_found", status)
    if status == 409:
        return KubernetesError(f"{action}: the name is taken (409): {message}", "exists", status)
    if status == 422:
        return KubernetesError(
            f"{action}: the API server refused the object as invalid (422): {message}",
            "invalid",
            status,
        )
    return KubernetesError(
        f"{action}: the Kubernetes API answered {status}: {message}", "api", status
    )


# -- the provider ---------------------------------------------------------------------------


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

    async def launch(self, version: str, generation: int, count: int) -> list[str]:
        from lightkube.resources.core_v1 import Pod

        names: list[str] = []
        for _ in range(count):
            for attempt in range(3):
                name = self._new_name(generation)
                manifest = pod_manifest(self.settings, version, generation, name)
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

    async def terminate(self, name: str) -> None:
        from lightkube.resources.core_v1 import Pod

        pod = await self._get(name)
        if pod is None:
            return
        if not _is_node(pod):
            log.warning("not terminating pod %s: it is not a tierfaas node", name)
            return
        if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
            return  # already asked
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
        from lightkube.resources.core_v1 import Pod

        with self._api("list pods"):
            pods = [pod async for pod in self.client.list(Pod, labels=dict(NODE_LABELS))]
        out = [node for pod in pods if (node := provided_node(pod)) is not None]
        return sorted(out, key=lambda n: (n.generation, n.name))

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


@contextlib.contextmanager
def api_call(action: str, namespace: str, server: str, *, creating: bool = False) -> Iterator[None]:
    """Turns the client library's exceptions into ``KubernetesError`` for ``action``."""
    import httpx2
    from lightkube import ApiError

    try:
        yield
    except ApiError as exc:
        status = exc.status.code or exc.response.status_code
        message = exc.status.message or ""
        raise api_error(action, status, message, namespace=namespace, creating=creating) from None
    except httpx2.HTTPStatusError as exc:  # an answer that is no Kubernetes Status (a proxy's)
        status, text = exc.response.status_code, exc.response.text[:200]
        raise api_error(action, status, text, namespace=namespace, creating=creating) from None
    except httpx2.HTTPError as exc:
        raise KubernetesError(
            f"{action}: cannot reach the Kubernetes API at {server}: {exc or type(exc).__name__}",
            "unreachable",
        ) from None


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
    created = meta.creationTimestamp  # set by the API server: the canaries' clock starts here
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


# -- gossip seeds ---------------------------------------------------------------------------

Lookup: TypeAlias = Callable[[str, int], Sequence[str]]


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)]


def resolve_seeds(
    seeds: Iterable[str],
    *,
    timeout_s: float = 60.0,
    retry_s: float = 1.0,
    lookup: Lookup = _getaddrinfo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, ...]:
    """``seeds`` (``HOST:PORT``) with each DNS name replaced by every address it has, so
    ``--join`` can name a headless Service, whose name lists every node pod. IP addresses and
    ``localhost`` pass unchanged, with no lookup. A name with no address yet (the first pod's
    own record takes a moment to appear) is asked again every ``retry_s`` for up to
    ``timeout_s``; then ``ConfigError("join", ...)``. A malformed seed fails at once."""
    parsed: list[tuple[str, int, bool]] = []
    for seed in seeds:
        host, sep, port_text = seed.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError("join", f"{seed!r} is not HOST:PORT")
        parsed.append((host, int(port_text), host == "localhost" or _is_ip(host)))
    deadline = clock() + timeout_s
    while True:
        out: list[str] = []
        missing: list[str] = []
        for host, port, literal in parsed:
            if literal:
                out.append(f"{host}:{port}" if host == "localhost" else str(Address(host, port)))
                continue
            try:
                found = sorted(set(lookup(host, port)))
            except (OSError, UnicodeError) as exc:
                found, why = [], str(exc)
            else:
                why = "no address"
            if not found:
                missing.append(f"{host} ({why})")
            out.extend(str(Address(ip, port)) for ip in found)
        if not missing:
            return tuple(dict.fromkeys(out))
        if clock() >= deadline:
            raise ConfigError("join", f"cannot resolve {', '.join(missing)} after {timeout_s:g} s")
        log.info("waiting for %s to resolve", ", ".join(missing))
        sleep(retry_s)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- the first generation -------------------------------------------------------------------


async def bootstrap(
    provider: KubernetesProvider,
    version: str,
    count: int,
    timeout_s: float = 300.0,
    poll_s: float = 2.0,
) -> list[str]:
    """Starts generation 0 of a new cluster: ``count`` nodes of ``version``. The first is
    started alone and awaited until ready, so it is the only pod the others find behind the
    seed name; pods started together would each find only themselves and form clusters of
    one. Idempotent: tops generation 0 up to ``count``, and does nothing once a rollout has
    run (a node of a later generation exists): the master owns the cluster from then on."""
    existing = await provider.nodes()
    if any(node.generation > 0 for node in existing):
        log.info("a rollout has run (generation > 0 exists): nothing to bootstrap")
        return []
    started: list[str] = []
    if not existing:
        started += await provider.launch(version, 0, 1)
        log.info("waiting for the first node %s to be ready", started[0])
        await provider.wait_ready(started[0], timeout_s, poll_s)
    else:
        ready = [n.name for n in existing if n.phase != "draining"]
        if ready:
            await provider.wait_ready(ready[0], timeout_s, poll_s)
    missing = count - len(existing) - len(started)
    if missing > 0:
        started += await provider.launch(version, 0, missing)
    return started


async def _own_image(pod: str, namespace: str) -> str:
    """The image of the pod we run in (the bootstrap Job's)."""
    from lightkube.resources.core_v1 import Pod

    client = connect(namespace)
    try:
        with api_call(f"get pod {pod}", namespace, str(client.config.cluster.server)):
            me = await client.get(Pod, pod)
    finally:
        await client.close()
    containers = me.spec.containers if me.spec is not None else []
    if not containers or not containers[0].image:
        raise KubernetesError(f"pod {pod} has no image to copy", "not_found")
    return containers[0].image


async def wait_for_release(
    registry: Path,
    version: str | None,
    timeout_s: float,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """``version`` (else the desired one) once it is published in the registry folder, so a
    bootstrap applied together with the rest waits for the first 'tierfaas publish'. Raises
    ``ProviderError`` past ``timeout_s``."""
    from tierfaas.deploy.registry import DirectoryRegistry, RegistryError

    store = DirectoryRegistry(registry)
    deadline = clock() + timeout_s
    why = ""
    while True:
        wanted = version or store.desired()
        if wanted is None:
            why = "it has no desired version yet"
        else:
            try:
                store.info(wanted)
                return wanted
            except RegistryError as exc:
                why = str(exc)
        if clock() >= deadline:
            raise ProviderError(f"no release to start after {timeout_s:g} s in {registry}: {why}")
        log.info(
            "waiting for a release in %s (%s): publish one, see docs/kubernetes.md", registry, why
        )
        await asyncio.sleep(poll_s)


async def _bootstrap_main(args: argparse.Namespace) -> list[str]:
    version: str | None = args.version
    if args.registry is not None:
        version = await wait_for_release(args.registry, version, args.timeout_s)
    if version is None:
        raise ProviderError("give --version, or --registry to start its desired version")
    environ = dict(os.environ)
    if not environ.get(env_name("image")) and environ.get("POD_NAME"):
        # The nodes run the image this Job runs: one place to set it (kustomize 'images:').
        namespace = environ.get(env_name("namespace")) or own_namespace() or DEFAULT_NAMESPACE
        environ[env_name("image")] = await _own_image(environ["POD_NAME"], namespace)
    provider = KubernetesProvider.from_environment(environ)
    try:
        return await bootstrap(provider, version, args.count, args.timeout_s)
    finally:
        await provider.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tierfaas.deploy.kubernetes bootstrap --registry /registry --count N`` (the
    bootstrap Job of deploy/kubernetes/): starts the first generation of a cluster. Without
    ``TIERFAAS_K8S_IMAGE`` the nodes run the image of the Job's own pod."""
    parser = argparse.ArgumentParser(prog="python -m tierfaas.deploy.kubernetes")
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("bootstrap", help="start generation 0 of a new cluster")
    boot.add_argument("--version", help="the release version to start (default: the desired one)")
    boot.add_argument(
        "--registry", type=Path, help="the registry folder: wait until the version is published"
    )
    boot.add_argument("--count", type=int, default=3, help="nodes to start (default 3)")
    boot.add_argument(
        "--timeout-s",
        type=float,
        default=600.0,
        help="longest wait for the release, then for the first node to be ready (default 600)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.version is None and args.registry is None:
        parser.error("give --version, or --registry to start its desired version")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        started = asyncio.run(_bootstrap_main(args))
    except (ProviderError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"started {len(started)} node(s): {' '.join(started) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
