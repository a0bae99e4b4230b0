"""The kubernetes provider: one pod per node, created and deleted through the Kubernetes API.

How it works (SPEC 6):

- A node is a bare pod named like the node, which the master creates and deletes through the
  provider (``provider``). Its labels carry the version and generation, so the provider keeps
  nothing in memory but its API client and a new master sees what its predecessor saw.
- ``manifests`` builds the pod, purely, from ``KubernetesSettings`` (``settings``), which
  every pod also carries in its environment (``TIERFAAS_K8S_*``): whichever node becomes
  master launches identical pods. Its security context follows the nodes' isolation: a
  privileged pod for the sandbox, the restricted profile for ``--isolation process``.
- Every API failure is a ``KubernetesError`` saying what to fix (``errors``).
- Gossip seeds are the DNS name of a headless Service that lists every node pod, ready or not;
  ``resolve_seeds`` (``seeds``) turns it into pod IPs before the node starts.
- ``bootstrap`` starts the first generation (``python -m tierfaas.deploy.kubernetes
  bootstrap``, the Job of deploy/kubernetes/); the master rolls the cluster from then on.

lightkube is imported lazily: ``tierfaas node`` imports ``resolve_seeds`` without the
``kubernetes`` extra installed.
"""

from tierfaas.deploy.kubernetes.bootstrap import bootstrap, main, wait_for_release
from tierfaas.deploy.kubernetes.errors import ErrorReason, KubernetesError, api_call, api_error
from tierfaas.deploy.kubernetes.manifests import (
    ANNOTATION_VERSION,
    LABEL_COMPONENT,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_VERSION,
    NODE_LABELS,
    node_args,
    node_phase,
    pod_manifest,
    pod_name,
    random_token,
    security_contexts,
    version_label,
)
from tierfaas.deploy.kubernetes.provider import (
    KubernetesProvider,
    connect,
    pod_readiness,
    provided_node,
)
from tierfaas.deploy.kubernetes.seeds import resolve_seeds
from tierfaas.deploy.kubernetes.settings import (
    DEFAULT_NAMESPACE,
    GOSSIP_PORT,
    HTTP_PORT,
    NODE_OVERHEAD_MIB,
    REGISTRY_MOUNT,
    RUN_AS,
    KubernetesSettings,
    env_name,
    own_namespace,
)

__all__ = [
    "ANNOTATION_VERSION",
    "DEFAULT_NAMESPACE",
    "GOSSIP_PORT",
    "HTTP_PORT",
    "LABEL_COMPONENT",
    "LABEL_GENERATION",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_VERSION",
    "NODE_LABELS",
    "NODE_OVERHEAD_MIB",
    "REGISTRY_MOUNT",
    "RUN_AS",
    "ErrorReason",
    "KubernetesError",
    "KubernetesProvider",
    "KubernetesSettings",
    "api_call",
    "api_error",
    "bootstrap",
    "connect",
    "env_name",
    "main",
    "node_args",
    "node_phase",
    "own_namespace",
    "pod_manifest",
    "pod_name",
    "pod_readiness",
    "provided_node",
    "random_token",
    "resolve_seeds",
    "security_contexts",
    "version_label",
    "wait_for_release",
]
