"""The Kubernetes manifests as kubectl builds them, and the seed resolver in a process without
the kubernetes client: both start processes, so they live in the integration tier."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from tests.k8s_manifests import DEPLOY, K8S_VERSIONS, load, validate


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_is_valid() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    built = [doc for doc in yaml.safe_load_all(out) if doc]
    assert len(built) == sum(len(load(DEPLOY / r)) for r in _resources())
    for doc in built:
        validate(doc, K8S_VERSIONS[0])
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "tierfaas"


def _resources() -> list[str]:
    return list(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])


def test_resolve_seeds_needs_no_kubernetes_client() -> None:
    """``tierfaas node`` imports it on machines without the kubernetes extra."""
    code = (
        "import sys; sys.modules['lightkube'] = None; sys.modules['httpx2'] = None\n"
        "from tierfaas.deploy.kubernetes import resolve_seeds\n"
        "print(resolve_seeds(['127.0.0.1:7946']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('127.0.0.1:7946',)"
