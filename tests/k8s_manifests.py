"""The Kubernetes manifests under deploy/kubernetes/ and their validation against the official
OpenAPI schemas (kubernetes-validate, strict): shared by the unit and integration tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tierfaas.deploy.kubernetes import KubernetesSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kubernetes"
# 1.30: the oldest supported (the preStop sleep action is on by default from 1.30).
K8S_VERSIONS = ["1.30", "1.37"]
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
SETTINGS = KubernetesSettings(image="registry.example.com/tierfaas:0.1.0")


def validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        pytest.fail(f"{kind}/{name} invalid for Kubernetes {version} at {where}: {exc.message}")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
