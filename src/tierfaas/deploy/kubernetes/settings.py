"""How the kubernetes provider makes pods: ``KubernetesSettings``, from and to the environment.

Each field is also the environment variable ``TIERFAAS_K8S_<FIELD>``; every pod carries the
settings on in its environment, so whichever node becomes master launches identical pods.
Invalid settings fail at once with the variable's name (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierfaas.errors import ConfigError

HTTP_PORT = 8080
GOSSIP_PORT = 7946  # the control plane (gRPC) listens on +1, the query lane on +2
REGISTRY_MOUNT = "/registry"
STATE_MOUNT = "/var/lib/tierfaas"
"""The node's --data-dir (its async calls' store): an emptyDir, so it outlives a restart of
the node's container in its pod (which then claims its calls back), not the pod."""
RUN_AS = 10001  # the image's user and group
NODE_OVERHEAD_MIB = 512
"""Memory a node needs besides its instances (the node, its zygote, gossip); the rest of the
pod's memory is the instances' budget (``--memory-budget-mb``), so they never get the pod
OOM-killed: an instance's ``memory_mb`` limits its cgroup under the sandbox (its address space,
which bounds its RSS, with ``--isolation process``)."""
ISOLATIONS = ("sandbox", "process")

DEFAULT_NAMESPACE = "tierfaas"
ENV_PREFIX = "TIERFAAS_K8S_"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_CPU = re.compile(r"[0-9]+(\.[0-9]+)?m?")
# Flags the pod template sets itself; node_args may not override them.
_RESERVED_FLAGS = frozenset(
    {
        "--registry", "--release-version", "--release", "--generation", "--provider",
        "--provider-state", "--name", "--http", "--gossip", "--rpc", "--join", "--key-file",
        "--drain-timeout-s", "--memory-budget-mb", "--isolation",
    }
)  # fmt: skip


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
    isolation: str = "sandbox"
    """The nodes' ``--isolation``, and the pods' security context with it: ``sandbox`` needs
    privileged pods (docs/kubernetes.md); ``process`` runs in the restricted profile, with
    the functions unsandboxed."""

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("image", bool(self.image) and not any(c.isspace() for c in self.image),
             "set it to the node image, e.g. registry.example.com/tierfaas:0.1.0"),
            ("namespace", fits(DNS_LABEL, self.namespace, 63), "not a namespace name"),
            ("image_pull_policy", self.image_pull_policy in ("Always", "IfNotPresent", "Never"),
             "not Always|IfNotPresent|Never"),
            ("service_account", fits(_DNS_SUBDOMAIN, self.service_account, 253), "not a name"),
            ("registry_claim", fits(_DNS_SUBDOMAIN, self.registry_claim, 253), "not a name"),
            ("gossip_service", fits(_DNS_1035_LABEL, self.gossip_service, 63),
             "not a Service name"),
            ("cluster_domain", fits(_DNS_SUBDOMAIN, self.cluster_domain, 253), "not a domain"),
            ("key_secret", fits(_DNS_SUBDOMAIN, self.key_secret, 253), "not a Secret name"),
            ("key_secret_key", fits(_SECRET_KEY, self.key_secret_key, 253), "not a Secret key"),
            ("cpu_request", fits(_CPU, self.cpu_request, 32), "not a CPU quantity (500m, 2)"),
            ("cpu_limit", fits(_CPU, self.cpu_limit, 32), "not a CPU quantity (500m, 2)"),
            ("memory_mib", self.memory_mib >= NODE_OVERHEAD_MIB + 64,
             f"must be at least {NODE_OVERHEAD_MIB + 64}"),
            ("prestop_sleep_s", 0 <= self.prestop_sleep_s <= 300, "must be 0..300"),
            ("drain_timeout_s", 1 <= self.drain_timeout_s <= 3600, "must be 1..3600"),
            ("isolation", self.isolation in ISOLATIONS, "not sandbox|process"),
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


def fits(pattern: re.Pattern[str], text: str, max_len: int) -> bool:
    """``text`` is at most ``max_len`` long and matches ``pattern`` whole."""
    return len(text) <= max_len and pattern.fullmatch(text) is not None
