"""The pod of a node, pure: names, labels, arguments and the manifest the provider creates.

``pod_manifest`` takes the settings and returns the exact object sent to the API, so tests
validate it against the official schemas with no cluster. Each pod carries labels
(``app.kubernetes.io/name=tierfaas``, ``component=node``, ``tierfaas.dev/version``,
``tierfaas.dev/generation``) from which the provider rebuilds the whole picture, so a master
that takes over mid-rollout sees what its predecessor saw. A pod a master launched also
carries that master's term (annotation ``tierfaas.dev/term``, see ``tierfaas.deploy.term``):
the cluster itself then records the newest term that acted on it.

Removal without failed requests: deleting a pod takes it out of the Service endpoints at
once; the preStop sleep keeps it serving while proxies and load balancers catch up; then
SIGTERM makes the node leave the gossip and drain. ``terminationGracePeriodSeconds`` covers
the sleep, the drain timeout and a margin, so the kubelet never cuts a drain short.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from tierfaas.deploy.kubernetes.settings import (
    GOSSIP_PORT,
    HTTP_PORT,
    REGISTRY_MOUNT,
    RUN_AS,
    STATE_MOUNT,
    KubernetesSettings,
    env_name,
    fits,
)
from tierfaas.deploy.provider import NodePhase
from tierfaas.deploy.term import Term
from tierfaas.keys import KEY_ENV

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "tierfaas.dev/version"  # a label value: see version_label()
LABEL_GENERATION = "tierfaas.dev/generation"
ANNOTATION_VERSION = "tierfaas.dev/version"  # the exact release version
ANNOTATION_TERM = "tierfaas.dev/term"  # the term of the master that launched the pod (JSON)
NODE_LABELS = {LABEL_NAME: "tierfaas", LABEL_COMPONENT: "node"}  # what nodes() selects


def version_label(version: str) -> str:
    """``version`` as a label value (63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends).
    Versions may also hold ``+`` and run to 64 characters; those are made to fit. The exact
    version is in the ``tierfaas.dev/version`` annotation."""
    if fits(_LABEL_VALUE, version, 63):
        return version
    fitted = version.replace("+", "_")[:63].strip("-_.")
    return fitted if fits(_LABEL_VALUE, fitted, 63) else "unlabelled"


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
        "--isolation", settings.isolation,
        "--data-dir", STATE_MOUNT,
        *settings.node_args,
    ]  # fmt: skip


def pod_manifest(
    settings: KubernetesSettings,
    version: str,
    generation: int,
    name: str,
    term: Term | None = None,
) -> dict[str, Any]:
    """The pod of node ``name`` serving release ``version`` in rollout ``generation``,
    launched under ``term`` (None: by an operator's command, ``tierfaas up``)."""
    labels = {
        **NODE_LABELS,
        LABEL_MANAGED_BY: "tierfaas",
        LABEL_VERSION: version_label(version),
        LABEL_GENERATION: str(generation),
    }
    memory = f"{settings.memory_mib}Mi"
    pod_security, container_security = security_contexts(settings.isolation)
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
        "securityContext": container_security,
        "volumeMounts": [
            # Read-write: the master writes the rollout status into the registry.
            {"name": "registry", "mountPath": REGISTRY_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
            # The root file system is read-only: the async calls' store lives here.
            {"name": "state", "mountPath": STATE_MOUNT},
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
            "annotations": {
                ANNOTATION_VERSION: version,
                **({ANNOTATION_TERM: json.dumps(term.to_json())} if term is not None else {}),
            },
        },
        "spec": {
            "serviceAccountName": settings.service_account,
            "automountServiceAccountToken": True,  # whichever node is master calls the API
            "enableServiceLinks": False,  # no *_SERVICE_HOST variables in the functions' env
            "restartPolicy": "Always",  # a crashed node restarts in place, under its name
            "terminationGracePeriodSeconds": settings.grace_period_s,
            "securityContext": pod_security,
            "containers": [container],
            "volumes": [
                {
                    "name": "registry",
                    "persistentVolumeClaim": {"claimName": settings.registry_claim},
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
        },
    }


def security_contexts(isolation: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pod's, the node container's) security context for nodes of ``isolation``.

    ``process``: the restricted Pod Security profile; the node runs as the image's user with
    no capability, and so do its functions, unsandboxed.

    ``sandbox``: a privileged container whose node runs as root (its group still the image's,
    for the registry volume). The sandbox makes user, mount and pid namespaces, mounts a tmpfs
    and a /proc in them, and writes cgroups: a runtime gives a container a read-write cgroup
    file system and a /proc without masked paths only when it is privileged, and the kernel
    refuses a new /proc while masked paths cover the old one. Privileged containers run with
    no seccomp or AppArmor profile, which the pod says instead of asking for one it would not
    get. The functions inside get none of this: each runs as an unprivileged uid of its own,
    with no capability and ``no_new_privs``, in its own namespaces and cgroup."""
    common = {"runAsGroup": RUN_AS, "fsGroup": RUN_AS, "fsGroupChangePolicy": "OnRootMismatch"}
    if isolation == "process":
        pod = {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            **common,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        return pod, container
    pod = {
        "runAsNonRoot": False,
        "runAsUser": 0,
        **common,
        "seccompProfile": {"type": "Unconfined"},
    }
    return pod, {"privileged": True, "readOnlyRootFilesystem": True}


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


def term_of_pod(annotations: Mapping[str, str] | None) -> Term | None:
    """The term a pod was launched under (``ANNOTATION_TERM``); None if none or damaged."""
    text = (annotations or {}).get(ANNOTATION_TERM)
    if not text:
        return None
    try:
        return Term.from_json(json.loads(text))
    except ValueError:
        return None
