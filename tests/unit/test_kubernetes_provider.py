"""The kubernetes provider without a cluster.

Every manifest under deploy/kubernetes/ and every pod the provider would create are validated
against the official Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
fail) for the oldest supported version and the newest one shipped. The provider's logic runs
against ``FakeKube``, an in-memory API served to the real client library through
``httpx2.MockTransport``: the objects checked are the ones that would go on the wire.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx2
import kubernetes_validate
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from tests.k8s_manifests import DEPLOY, K8S_VERSIONS, MANIFESTS, REPO, SETTINGS, load, validate
from tierfaas.config import Address
from tierfaas.deploy import kubernetes as k8s
from tierfaas.deploy.kubernetes import (
    KubernetesError,
    KubernetesProvider,
    KubernetesSettings,
    pod_manifest,
    resolve_seeds,
)
from tierfaas.deploy.kubernetes.settings import DNS_LABEL
from tierfaas.deploy.provider import ProviderError
from tierfaas.errors import ConfigError
from tierfaas.keys import parse_key


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for p in MANIFESTS for o in load(p)}


# -- manifests against the schemas ------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_file_is_valid(path: Path, version: str) -> None:
    docs = load(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        validate(doc, version)


def test_the_schemas_catch_a_typo() -> None:
    """The check above can fail: a misspelt field is refused in strict mode."""
    pod = pod_manifest(SETTINGS, "1.0.0", 0, "tierfaas-g0-abc")
    pod["spec"]["containers"][0]["readinesProbe"] = pod["spec"]["containers"][0].pop(
        "readinessProbe"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.30", strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    applied = {p.name for p in MANIFESTS if not p.name.endswith(".example.yaml")}
    assert set(kustomization["resources"]) == applied
    assert kustomization["namespace"] == "tierfaas"


# -- the pods the provider sends ------------------------------------------------------------

POD_CASES = [
    (SETTINGS, "1.0.0", 0),
    (SETTINGS, "2.0.0-rc.1", 7),
    (SETTINGS, "1.0.0+build.5", 12),  # '+' cannot be in a label value
    (SETTINGS, "v" + "9" * 63, 3),  # 64 characters: longer than a label value may be
    (KubernetesSettings(image="tierfaas:0.1.0", isolation="process"), "1.0.0", 2),
    (
        KubernetesSettings(
            image="tierfaas@sha256:" + "ab" * 32,
            namespace="faas-prod",
            memory_mib=8192,
            prestop_sleep_s=0,
            drain_timeout_s=120,
            node_args=("--canaries", "3", "--replicas=2"),
        ),
        "3.1.4",
        1,
    ),
]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("settings", "release", "generation"), POD_CASES)
def test_every_pod_the_provider_sends_is_valid(
    settings: KubernetesSettings, release: str, generation: int, version: str
) -> None:
    validate(pod_manifest(settings, release, generation, f"tierfaas-g{generation}-bcd42"), version)


def test_pod_runs_the_node_as_specified() -> None:
    pod = pod_manifest(SETTINGS, "2.0.0", 4, "tierfaas-g4-xyz23")
    meta, spec = pod["metadata"], pod["spec"]
    (container,) = spec["containers"]
    assert meta["name"] == "tierfaas-g4-xyz23"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "tierfaas",
        "app.kubernetes.io/component": "node",
        "app.kubernetes.io/managed-by": "tierfaas",
        "tierfaas.dev/version": "2.0.0",
        "tierfaas.dev/generation": "4",
    }
    assert meta["annotations"] == {"tierfaas.dev/version": "2.0.0"}
    assert "ownerReferences" not in meta  # nothing recreates or garbage-collects a node
    assert container["args"] == [
        "node",
        "--registry", "/registry",
        "--release-version", "2.0.0",
        "--generation", "4",
        "--provider", "kubernetes",
        "--name", "$(POD_NAME)",
        "--http", "$(POD_IP):8080",
        "--gossip", "$(POD_IP):7946",
        "--join", "tierfaas-gossip.tierfaas.svc.cluster.local:7946",
        "--drain-timeout-s", "30",
        "--memory-budget-mb", "1536",
        "--isolation", "sandbox",
        "--data-dir", "/var/lib/tierfaas",
    ]  # fmt: skip
    # The root file system is read-only: the async calls' store has a volume of its own.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == "/var/lib/tierfaas"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"]
    env = {e["name"]: e for e in container["env"]}
    # $(POD_NAME) and $(POD_IP) expand only from variables defined in the container.
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["TIERFAAS_CLUSTER_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "tierfaas-cluster-key", "key": "cluster.key"}
    }
    assert not any("key" in arg for arg in container["args"]), "no key on a command line"
    assert spec["serviceAccountName"] == "tierfaas"
    assert spec["automountServiceAccountToken"] is True
    assert spec["restartPolicy"] == "Always"


def test_pod_drains_within_its_grace_period() -> None:
    for settings, release, generation in POD_CASES:
        pod = pod_manifest(settings, release, generation, "n")
        (container,) = pod["spec"]["containers"]
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        drain = int(container["args"][container["args"].index("--drain-timeout-s") + 1])
        assert sleep == settings.prestop_sleep_s
        assert drain == settings.drain_timeout_s
        assert pod["spec"]["terminationGracePeriodSeconds"] >= sleep + drain + 5
        liveness = container["livenessProbe"]
        # The liveness probe cannot kill a draining node (it stops listening) before its
        # grace period ends.
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] > grace
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}


def test_instances_fit_in_the_pod_memory() -> None:
    pod = pod_manifest(SETTINGS, "1.0.0", 0, "n")
    (container,) = pod["spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "2048Mi"
    budget = int(container["args"][container["args"].index("--memory-budget-mb") + 1])
    assert budget == 2048 - k8s.NODE_OVERHEAD_MIB


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod but the sandbox's nodes, which are privileged (the next test but one)."""
    unsandboxed = KubernetesSettings(image=SETTINGS.image, isolation="process")
    yield "node", pod_manifest(unsandboxed, "1.0.0", 0, "n")["spec"]
    for (kind, name), obj in objects().items():
        if kind == "Pod":
            yield name, obj["spec"]
        elif kind == "Job":
            yield name, obj["spec"]["template"]["spec"]


@pytest.mark.parametrize(("name", "spec"), list(_pod_specs()), ids=lambda v: str(v)[:20])
def test_every_pod_meets_the_restricted_pod_security_profile(
    name: str, spec: dict[str, Any]
) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == k8s.RUN_AS
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"]:
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert set(c["resources"]) == {"requests", "limits"}
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret"}


def test_sandboxed_nodes_run_privileged_as_root_and_nothing_more() -> None:
    """What the sandbox needs and no more (docs/kubernetes.md, "The sandbox's security
    context"): a privileged container whose node is root, its group still the image's; no
    host namespace, no host path; the same read-only root file system and volumes."""
    pod = pod_manifest(SETTINGS, "1.0.0", 0, "n")
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert SETTINGS.isolation == "sandbox"  # the default
    assert spec["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": k8s.RUN_AS,
        "fsGroup": k8s.RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "Unconfined"},  # what a privileged container gets anyway
    }
    # allowPrivilegeEscalation: false is refused beside privileged: true by the API server.
    assert container["securityContext"] == {"privileged": True, "readOnlyRootFilesystem": True}
    assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & set(spec)
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret"}
    args = container["args"]
    assert args[args.index("--isolation") + 1] == "sandbox"


def test_unsandboxed_nodes_say_so_to_the_node() -> None:
    pod = pod_manifest(KubernetesSettings(image="img", isolation="process"), "1.0.0", 0, "n")
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--isolation") + 1] == "process"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["TIERFAAS_K8S_ISOLATION"] == "process"  # the next master launches the same


def test_manifests_fit_the_pods_the_provider_makes() -> None:
    objs = objects()
    pod = pod_manifest(SETTINGS, "1.0.0", 0, "n")
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p for p in container["ports"]}

    gossip = objs["Service", SETTINGS.gossip_service]["spec"]
    assert gossip["clusterIP"] == "None"
    assert gossip["publishNotReadyAddresses"] is True
    assert gossip["selector"].items() <= labels.items()
    assert {(p["protocol"], p["port"]) for p in gossip["ports"]} == {("UDP", 7946), ("TCP", 7946)}
    for p in gossip["ports"]:
        assert ports[p["targetPort"]]["protocol"] == p["protocol"]
        assert ports[p["targetPort"]]["containerPort"] == p["port"]

    http = objs["Service", "tierfaas"]["spec"]
    assert http["selector"].items() <= labels.items()
    assert http.get("publishNotReadyAddresses") is not True  # only ready nodes get clients
    assert [(p["port"], p["targetPort"]) for p in http["ports"]] == [(8080, "http")]
    assert ports["http"]["containerPort"] == 8080

    claim = objs["PersistentVolumeClaim", SETTINGS.registry_claim]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    assert {"name": "registry", "persistentVolumeClaim": {"claimName": "tierfaas-registry"}} in pod[
        "spec"
    ]["volumes"]

    assert ("ServiceAccount", SETTINGS.service_account) in objs
    secret = objs["Secret", SETTINGS.key_secret]
    assert set(secret["stringData"]) == {SETTINGS.key_secret_key}
    with pytest.raises(ConfigError):  # a placeholder, never a real key
        parse_key(secret["stringData"][SETTINGS.key_secret_key])

    # The sandbox's node pods are privileged (the default isolation): the namespace admits
    # them, and audits every pod against the restricted profile.
    ns = objs["Namespace", "tierfaas"]["metadata"]["labels"]
    assert SETTINGS.isolation == "sandbox"
    assert ns["pod-security.kubernetes.io/enforce"] == "privileged"
    assert ns["pod-security.kubernetes.io/audit"] == "restricted"

    # Tools are not nodes: the provider never lists, counts or deletes them.
    for kind, obj in objs.items():
        if kind[0] in ("Pod", "Job"):
            meta = obj["metadata"] if kind[0] == "Pod" else obj["spec"]["template"]["metadata"]
            assert meta["labels"]["app.kubernetes.io/component"] != "node"


def test_rbac_grants_pods_in_the_namespace_and_nothing_more() -> None:
    objs = objects()
    role = objs["Role", "tierfaas-provider"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]
    binding = objs["RoleBinding", "tierfaas-provider"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tierfaas-provider",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SETTINGS.service_account, "namespace": "tierfaas"}
    ]
    assert not any(kind in ("ClusterRole", "ClusterRoleBinding") for kind, _ in objs)
    assert objs["ServiceAccount", "tierfaas"]["automountServiceAccountToken"] is False


def test_bootstrap_job_starts_nodes_with_valid_settings() -> None:
    job = objects()["Job", "tierfaas-bootstrap"]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["serviceAccountName"] == SETTINGS.service_account
    assert spec["automountServiceAccountToken"] is True
    assert container["command"][:4] == ["python", "-m", "tierfaas.deploy.kubernetes", "bootstrap"]
    env = {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}
    settings = KubernetesSettings.from_environment({**env, "TIERFAAS_K8S_IMAGE": "x"})
    assert settings == KubernetesSettings(image="x")  # the documented defaults, spelt right
    names = {f"TIERFAAS_K8S_{f.upper()}" for f in KubernetesSettings.__dataclass_fields__}
    assert set(env) <= names


# -- settings -------------------------------------------------------------------------------


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("faas\n")
    settings = KubernetesSettings.from_environment(
        {
            "TIERFAAS_K8S_IMAGE": "img:1",
            "TIERFAAS_K8S_MEMORY_MIB": "4096",
            "TIERFAAS_K8S_NODE_ARGS": "--canaries 3 --log-level 'debug'",
            "TIERFAAS_K8S_CPU_LIMIT": "",  # empty: the default
        },
        service_account_dir=tmp_path,
    )
    assert settings.namespace == "faas"  # the pod's own, from the service account
    assert settings.memory_mib == 4096
    assert settings.node_args == ("--canaries", "3", "--log-level", "debug")
    assert settings.cpu_limit == "2"
    assert settings.seed == "tierfaas-gossip.faas.svc.cluster.local:7946"


def test_pods_carry_the_settings_to_the_next_master() -> None:
    settings = POD_CASES[-1][0]
    pod = pod_manifest(settings, "1.0.0", 0, "n")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}
    env["TIERFAAS_K8S_NAMESPACE"] = pod["metadata"]["namespace"]  # from the pod's metadata
    assert KubernetesSettings.from_environment(env) == settings


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "IMAGE"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_MEMORY_MIB": "lots"}, "MEMORY_MIB"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_MEMORY_MIB": "256"}, "MEMORY_MIB"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_NAMESPACE": "Prod"}, "NAMESPACE"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_CPU_LIMIT": "2 cores"}, "CPU_LIMIT"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_NODE_ARGS": "--name x"}, "NODE_ARGS"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_NODE_ARGS": "--join=a:1"}, "NODE_ARGS"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_NODE_ARGS": "'open"}, "NODE_ARGS"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_IMAGE_PULL_POLICY": "Sometimes"},
         "IMAGE_PULL_POLICY"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_ISOLATION": "container"}, "ISOLATION"),
        ({"TIERFAAS_K8S_IMAGE": "x", "TIERFAAS_K8S_NODE_ARGS": "--isolation process"},
         "NODE_ARGS"),
    ],
)  # fmt: skip
def test_bad_settings_name_their_variable(env: dict[str, str], field: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        KubernetesSettings.from_environment(env, service_account_dir=tmp_path)
    assert caught.value.field == f"TIERFAAS_K8S_{field}"


@pytest.mark.parametrize(
    ("version", "label"),
    [
        ("1.0.0", "1.0.0"),
        ("2.0.0-rc.1", "2.0.0-rc.1"),
        ("1.0.0+build.5", "1.0.0_build.5"),
        ("1.0+", "1.0"),
        ("v" + "9" * 63, "v" + "9" * 62),
    ],
)
def test_version_labels_are_valid_label_values(version: str, label: str) -> None:
    assert k8s.version_label(version) == label
    pod = pod_manifest(SETTINGS, version, 0, "n")
    assert pod["metadata"]["annotations"]["tierfaas.dev/version"] == version


def test_pod_names_are_valid_node_and_pod_names() -> None:
    from tierfaas.names import is_valid_name

    names = {k8s.pod_name(123456, k8s.random_token()) for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert is_valid_name(name)
        assert DNS_LABEL.fullmatch(name)  # also a valid hostname


# -- pure mappings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "deleting", "expected"),
    [
        ("Pending", False, "starting"),
        (None, False, "starting"),
        ("Running", False, "running"),
        ("Unknown", False, "running"),
        ("Pending", True, "draining"),
        ("Running", True, "draining"),
        ("Succeeded", False, None),
        ("Failed", False, None),
        ("Succeeded", True, None),
    ],
)
def test_pod_phases_map_to_node_phases(phase: str | None, deleting: bool, expected: str) -> None:
    assert k8s.node_phase(phase, deleting) == expected


@pytest.mark.parametrize(
    ("status", "creating", "reason", "words"),
    [
        (401, False, "unauthorized", ["401", "credentials", "KUBECONFIG"]),
        (403, True, "forbidden", ["403", "RBAC", "'tierfaas'", "rbac.yaml", "create"]),
        (404, True, "not_found", ["namespace 'tierfaas' not found", "namespace.yaml"]),
        (404, False, "not_found", ["not found (404)"]),
        (409, True, "exists", ["409", "taken"]),
        (422, True, "invalid", ["422", "invalid"]),
        (500, False, "api", ["answered 500"]),
    ],
)
def test_api_errors_say_what_to_fix(
    status: int, creating: bool, reason: str, words: list[str]
) -> None:
    error = k8s.api_error("create pod x", status, "boom", namespace="tierfaas", creating=creating)
    assert isinstance(error, KubernetesError)
    assert error.reason == reason
    assert error.status == status
    for word in [*words, "create pod x", "boom"]:
        assert word in str(error)


# -- the provider against a fake API ----------------------------------------------------------


class FakeKube:
    """Pods in one namespace, in memory, as the Kubernetes API serves them; a handler for
    ``httpx2.MockTransport``. Records every request; fails on demand."""

    def __init__(self, namespace: str = "tierfaas") -> None:
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx2.Request] = []
        self.sent: list[dict[str, Any]] = []  # bodies of POST requests, as sent
        self.fail: dict[str, tuple[int, str]] = {}  # method -> (status, reason), every time
        # method -> (how many such requests succeed in all, then status, reason, message)
        self.fail_after: dict[str, tuple[int, int, str, str]] = {}
        self.refuse = False
        self.ready_after_gets = -1  # pods turn Ready after this many GETs of them (-1: never)
        self._gets: dict[str, int] = {}

    def add(self, name: str, labels: dict[str, str], **status: Any) -> dict[str, Any]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"containers": [{"name": "node", "image": "img"}]},
            "status": {"phase": "Pending", **status},
        }
        self.pods[name] = pod
        return pod

    def node(self, name: str, generation: int = 0, version: str = "1.0.0", **status: Any) -> None:
        labels = {**k8s.NODE_LABELS, k8s.LABEL_GENERATION: str(generation)}
        self.add(name, labels, **status)["metadata"]["annotations"] = {
            k8s.ANNOTATION_VERSION: version
        }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.refuse:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        method = request.method
        if method in self.fail_after:
            ok, status, reason, message = self.fail_after[method]
            if len(self.of(method)) > ok:  # counting this one
                return _status(status, reason, message)
        if method in self.fail:
            return _status(*self.fail[method])
        parts = request.url.path.strip("/").split("/")
        # api/v1/namespaces/<ns>/pods[/<name>]
        assert parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods", request.url
        if parts[3] != self.namespace:
            if method == "POST":
                return _status(404, "NotFound", f'namespaces "{parts[3]}" not found')
            return httpx2.Response(200, json=_pod_list([]))
        name = parts[5] if len(parts) > 5 else None
        if method == "POST":
            body = json.loads(request.content)
            self.sent.append(body)
            pod_name = body["metadata"]["name"]
            if pod_name in self.pods:
                return _status(409, "AlreadyExists", f'pods "{pod_name}" already exists')
            created = datetime.now(UTC).replace(microsecond=0).isoformat()
            body = {**body, "status": {"phase": "Pending"}}
            body["metadata"] = {**body["metadata"], "creationTimestamp": created}
            self.pods[pod_name] = body
            return httpx2.Response(201, json=body)
        if method == "GET" and name is None:
            query = parse_qs(request.url.query.decode())
            wanted = dict(
                pair.split("=", 1)
                for pair in query.get("labelSelector", [""])[0].split(",")
                if pair
            )
            found = [
                p
                for p in self.pods.values()
                if wanted.items() <= (p["metadata"].get("labels") or {}).items()
            ]
            return httpx2.Response(200, json=_pod_list(found))
        assert name is not None
        if name not in self.pods:
            return _status(404, "NotFound", f'pods "{name}" not found')
        pod = self.pods[name]
        if method == "GET":
            self._gets[name] = self._gets.get(name, 0) + 1
            if 0 <= self.ready_after_gets <= self._gets[name]:
                pod["status"] = {
                    "phase": "Running",
                    "podIP": "10.0.0.9",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            return httpx2.Response(200, json=pod)
        if method == "DELETE":
            pod["metadata"]["deletionTimestamp"] = datetime.now(UTC).isoformat()
            pod["metadata"]["deletionGracePeriodSeconds"] = int(
                request.url.params["gracePeriodSeconds"]
            )
            return httpx2.Response(200, json=pod)
        raise AssertionError(f"unexpected {method} {request.url}")

    def of(self, method: str) -> list[httpx2.Request]:
        return [r for r in self.requests if r.method == method]


def _status(code: int, reason: str, message: str = "refused") -> httpx2.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return httpx2.Response(code, json=body)


def _pod_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}


SERVER = "https://kube.test:6443"


def client_for(fake: FakeKube, handler: Any = None) -> AsyncClient:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "test", "cluster": {"server": SERVER}}],
            "users": [{"name": "test", "user": {"token": "t"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
    )
    transport = httpx2.MockTransport(handler or fake)
    return AsyncClient(config=config, namespace=fake.namespace, transport=transport)


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
async def provider(fake: FakeKube) -> AsyncIterator[KubernetesProvider]:
    provider = KubernetesProvider(SETTINGS, client_for(fake))
    yield provider
    await provider.close()


async def test_launch_sends_the_pod_manifests(fake: FakeKube, provider: KubernetesProvider) -> None:
    names = await provider.launch("2.0.0", 3, 4)
    assert len(set(names)) == 4
    assert sorted(names) == sorted(fake.pods)
    for name, body in zip(names, fake.sent, strict=True):
        assert name.startswith("tierfaas-g3-")
        # What went on the wire is exactly the pure template, and valid.
        assert body == pod_manifest(SETTINGS, "2.0.0", 3, name)
        validate(body, K8S_VERSIONS[0])
    assert all(r.url.path == "/api/v1/namespaces/tierfaas/pods" for r in fake.of("POST"))


async def test_nodes_lists_by_label_and_maps_phases(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.node("tierfaas-g1-start", 1)
    fake.pods["tierfaas-g1-start"]["metadata"]["creationTimestamp"] = "2026-01-02T03:04:05Z"
    fake.node("tierfaas-g1-run", 1, phase="Running", podIP="10.1.2.3")
    fake.node("tierfaas-g0-v6", 0, version="1.0.0+b", phase="Running", podIP="fd00::5")
    fake.node("tierfaas-g0-drain", 0, phase="Running", podIP="10.1.2.4")
    fake.pods["tierfaas-g0-drain"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    fake.node("tierfaas-g0-done", 0, phase="Succeeded")
    fake.add("tierfaas-publisher", {"app.kubernetes.io/name": "tierfaas"}, phase="Running")
    fake.add("someone-else", {}, phase="Running")
    fake.add("tierfaas-g0-bad", {**k8s.NODE_LABELS, k8s.LABEL_GENERATION: "x"}, phase="Running")

    nodes = await provider.nodes()

    (listing,) = fake.of("GET")
    assert parse_qs(listing.url.query.decode())["labelSelector"] == [
        "app.kubernetes.io/name=tierfaas,app.kubernetes.io/component=node"
    ]
    assert [(n.name, n.version, n.generation, n.phase, n.http) for n in nodes] == [
        ("tierfaas-g0-drain", "1.0.0", 0, "draining", "10.1.2.4:8080"),
        ("tierfaas-g0-v6", "1.0.0+b", 0, "running", "[fd00::5]:8080"),
        ("tierfaas-g1-run", "1.0.0", 1, "running", "10.1.2.3:8080"),
        ("tierfaas-g1-start", "1.0.0", 1, "starting", None),
    ]
    launched = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert [n.launched_at for n in nodes] == [0.0, 0.0, 0.0, launched]  # 0: not known


async def test_launched_pods_are_listed_as_nodes(provider: KubernetesProvider) -> None:
    before = time.time()
    names = await provider.launch("1.0.0+build.5", 2, 2)
    nodes = await provider.nodes()
    assert [(n.name, n.version, n.generation, n.phase) for n in nodes] == [
        (name, "1.0.0+build.5", 2, "starting") for name in sorted(names)
    ]
    # The launch time, as the API server stamps it (shown; canary ages use the controller's clock).
    assert all(before - 1 <= n.launched_at <= time.time() for n in nodes)


async def test_terminate_deletes_with_the_grace_period(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    (name,) = await provider.launch("1.0.0", 0, 1)
    fake.pods[name]["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    await provider.terminate(name)
    (delete,) = fake.of("DELETE")
    assert delete.url.path == f"/api/v1/namespaces/tierfaas/pods/{name}"
    assert delete.url.params["gracePeriodSeconds"] == str(SETTINGS.grace_period_s) == "45"
    assert [n.phase for n in await provider.nodes()] == ["draining"]
    await provider.terminate(name)  # already asked: not asked again
    assert len(fake.of("DELETE")) == 1


async def test_terminate_ignores_unknown_names_and_spares_other_pods(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    await provider.terminate("tierfaas-g0-gone")
    fake.add("tierfaas-publisher", {"app.kubernetes.io/name": "tierfaas"})
    await provider.terminate("tierfaas-publisher")
    assert fake.of("DELETE") == []


async def test_terminate_keeps_the_grace_period_the_pod_was_made_with(
    fake: FakeKube,
) -> None:
    old = KubernetesSettings(image="img", drain_timeout_s=100)
    fake.pods["n"] = pod_manifest(old, "1.0.0", 0, "n")
    provider = KubernetesProvider(SETTINGS, client_for(fake))
    try:
        await provider.terminate("n")
    finally:
        await provider.close()
    assert fake.of("DELETE")[0].url.params["gracePeriodSeconds"] == str(old.grace_period_s)


async def test_forbidden_is_a_clear_provider_error(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.fail["POST"] = (403, "Forbidden")
    with pytest.raises(KubernetesError) as caught:
        await provider.launch("1.0.0", 0, 1)
    assert caught.value.reason == "forbidden"
    assert "RBAC" in str(caught.value) and "create pod tierfaas-g0-" in str(caught.value)
    fake.fail = {"GET": (403, "Forbidden")}
    with pytest.raises(KubernetesError, match="list pods: forbidden by RBAC"):
        await provider.nodes()
    with pytest.raises(KubernetesError, match="get pod x: forbidden by RBAC"):
        await provider.terminate("x")


async def test_missing_namespace_is_named(fake: FakeKube) -> None:
    provider = KubernetesProvider(
        KubernetesSettings(image="img", namespace="nowhere"), client_for(fake)
    )
    try:
        with pytest.raises(KubernetesError, match="namespace 'nowhere' not found") as caught:
            await provider.launch("1.0.0", 0, 1)
    finally:
        await provider.close()
    assert caught.value.reason == "not_found"


async def test_a_taken_name_is_drawn_again(fake: FakeKube) -> None:
    draws = iter(["taken", "taken", "free"])
    provider = KubernetesProvider(SETTINGS, client_for(fake), new_name=lambda g: next(draws))
    fake.node("taken")
    try:
        assert await provider.launch("1.0.0", 0, 1) == ["free"]
    finally:
        await provider.close()


async def test_a_name_taken_three_times_fails(fake: FakeKube) -> None:
    provider = KubernetesProvider(SETTINGS, client_for(fake), new_name=lambda g: "taken")
    fake.node("taken")
    try:
        with pytest.raises(KubernetesError, match="the name is taken") as caught:
            await provider.launch("1.0.0", 0, 1)
    finally:
        await provider.close()
    assert caught.value.reason == "exists"
    assert len(fake.of("POST")) == 3


async def test_a_failure_midway_names_the_pods_already_created(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    (earlier,) = await provider.launch("1.0.0", 0, 1)
    fake.fail_after["POST"] = (2, 422, "Invalid", "spec.containers[0].image: Required value")
    with pytest.raises(KubernetesError) as caught:
        await provider.launch("1.0.0", 0, 3)
    message = str(caught.value)
    assert caught.value.reason == "invalid"
    assert "Required value" in message and "left running" in message
    (created,) = set(fake.pods) - {earlier}
    assert created in message and earlier not in message  # only this launch's pods


async def test_an_answer_that_is_no_kubernetes_status_keeps_its_code(fake: FakeKube) -> None:
    """A proxy in front of the API answering with its own page."""

    def proxy(request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            return httpx2.Response(502, text="<html>Bad Gateway</html>")
        return fake(request)

    provider = KubernetesProvider(SETTINGS, client_for(fake, handler=proxy))
    try:
        with pytest.raises(KubernetesError) as caught:
            await provider.launch("1.0.0", 0, 1)
    finally:
        await provider.close()
    assert caught.value.reason == "api"
    assert caught.value.status == 502
    assert "answered 502: <html>Bad Gateway</html>" in str(caught.value)


async def test_an_unreachable_api_is_a_clear_provider_error(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.refuse = True
    for call in (provider.nodes(), provider.launch("1.0.0", 0, 1), provider.terminate("n")):
        with pytest.raises(KubernetesError) as caught:
            await call
        assert caught.value.reason == "unreachable"
        assert f"cannot reach the Kubernetes API at {SERVER}" in str(caught.value)
        assert "Connection refused" in str(caught.value)


def test_no_configuration_is_a_clear_provider_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubernetesError) as caught:
        KubernetesProvider.from_environment({"TIERFAAS_K8S_IMAGE": "img"})
    assert caught.value.reason == "no_config"
    assert "KUBECONFIG" in str(caught.value)


async def test_wait_ready_returns_once_the_pod_is_ready(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.ready_after_gets = 3
    (name,) = await provider.launch("1.0.0", 0, 1)
    await provider.wait_ready(name, timeout_s=60, poll_s=0)
    assert len([r for r in fake.of("GET") if r.url.path.endswith(name)]) == 3


async def test_wait_ready_times_out_saying_what_it_waits_on(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    (name,) = await provider.launch("1.0.0", 0, 1)
    fake.pods[name]["status"] = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "node",
                "image": "img",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
            }
        ],
    }
    now = iter([0.0, 5.0, 11.0])
    with pytest.raises(KubernetesError, match="ErrImagePull: not found") as caught:
        await provider.wait_ready(name, timeout_s=10, poll_s=0, clock=lambda: next(now))
    assert caught.value.reason == "not_ready"


# -- bootstrap ----------------------------------------------------------------------------


async def test_bootstrap_starts_one_node_then_the_others(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.ready_after_gets = 2
    started = await k8s.bootstrap(provider, "1.0.0", 3, timeout_s=60, poll_s=0)
    assert len(started) == 3
    posts = [i for i, r in enumerate(fake.requests) if r.method == "POST"]
    readiness = [
        i
        for i, r in enumerate(fake.requests)
        if r.method == "GET" and r.url.path.endswith(started[0])
    ]
    # The others are created only after the first was seen ready.
    assert posts[0] < readiness[-1] < posts[1]
    assert {p["metadata"]["labels"]["tierfaas.dev/generation"] for p in fake.sent} == {"0"}


async def test_bootstrap_tops_up_and_then_leaves_the_cluster_to_the_master(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.node("tierfaas-g0-a", 0, phase="Running")
    fake.ready_after_gets = 1
    assert len(await k8s.bootstrap(provider, "1.0.0", 3, timeout_s=5, poll_s=0)) == 2
    assert len(fake.pods) == 3
    assert await k8s.bootstrap(provider, "1.0.0", 3, timeout_s=5, poll_s=0) == []
    fake.node("tierfaas-g1-b", 1, phase="Running")
    assert await k8s.bootstrap(provider, "1.0.0", 9, timeout_s=5, poll_s=0) == []
    assert len(fake.of("POST")) == 2


def test_bootstrap_command_fails_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TIERFAAS_K8S_IMAGE", "img")
    monkeypatch.delenv("POD_NAME", raising=False)
    assert k8s.main(["bootstrap", "--version", "1.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no usable Kubernetes configuration")
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        k8s.main(["bootstrap"])  # neither --version nor --registry
    assert usage.value.code == 2


async def test_bootstrap_waits_for_a_published_release(tmp_path: Path) -> None:
    from tierfaas.deploy.registry import DirectoryRegistry

    now = iter([0.0, 1.0, 2.0])
    with pytest.raises(ProviderError, match="no desired version"):
        await k8s.wait_for_release(tmp_path, None, 1.5, poll_s=0, clock=lambda: next(now))
    DirectoryRegistry(tmp_path).publish(REPO / "examples" / "demo")
    assert await k8s.wait_for_release(tmp_path, None, 1.0, poll_s=0) == "1.0.0"
    assert await k8s.wait_for_release(tmp_path, "1.0.0", 1.0, poll_s=0) == "1.0.0"


# -- gossip seeds ---------------------------------------------------------------------------


def test_ip_seeds_pass_without_a_lookup() -> None:
    def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError("looked up")

    seeds = ["10.0.0.1:7946", "[fd00::1]:7946", "localhost:7946"]
    assert resolve_seeds(seeds, lookup=no_lookup) == (
        "10.0.0.1:7946",
        "[fd00::1]:7946",
        "localhost:7946",
    )


def test_a_service_name_becomes_every_pod_address() -> None:
    def lookup(host: str, port: int) -> list[str]:
        assert (host, port) == ("tierfaas-gossip.tierfaas.svc.cluster.local", 7946)
        return ["10.0.0.3", "10.0.0.1", "fd00::2", "10.0.0.3"]

    seeds = resolve_seeds([" tierfaas-gossip.tierfaas.svc.cluster.local:7946 "], lookup=lookup)
    assert seeds == ("10.0.0.1:7946", "10.0.0.3:7946", "[fd00::2]:7946")
    for seed in seeds:  # what NodeConfig accepts for --join
        Address.parse(seed, "join")


def test_a_name_is_asked_again_until_it_resolves() -> None:
    answers: list[list[str] | OSError] = [
        socket.gaierror(-2, "Name or service not known"),
        [],
        ["10.0.0.7"],
    ]
    sleeps: list[float] = []

    def lookup(host: str, port: int) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    seeds = resolve_seeds(
        ["seed.test:7946", "10.0.0.1:7946"],
        lookup=lookup,
        sleep=sleeps.append,
        clock=lambda: 0.0,
        retry_s=0.5,
    )
    assert seeds == ("10.0.0.7:7946", "10.0.0.1:7946")
    assert sleeps == [0.5, 0.5]


def test_a_name_that_never_resolves_is_a_config_error() -> None:
    now = iter([0.0, 1.0, 30.0, 61.0])
    with pytest.raises(ConfigError) as caught:
        resolve_seeds(
            ["seed.test:7946"],
            lookup=lambda h, p: [],
            sleep=lambda s: None,
            clock=lambda: next(now),
        )
    assert caught.value.field == "join"
    assert "seed.test (no address)" in str(caught.value) and "60 s" in str(caught.value)


@pytest.mark.parametrize("seed", ["seed.test", "seed.test:", ":7946", "seed.test:99999"])
def test_a_malformed_seed_fails_at_once(seed: str) -> None:
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        resolve_seeds([seed], lookup=lambda h, p: ["10.0.0.1"])
