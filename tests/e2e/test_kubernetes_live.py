"""The kubernetes provider against a real cluster: runs only when ``KUBECONFIG`` is set.

It makes a throwaway namespace (``tierfaas-e2e-<random>``, deleted at the end), so the
kubeconfig's user needs to create and delete namespaces, and pods in them. The pods need not
start (no image, Secret or volume is there): the test checks what the API server accepts and
reports. ``TIERFAAS_K8S_TEST_IMAGE`` names an image if you have one (default tierfaas:0.1.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from tierfaas.deploy.kubernetes import (
    KubernetesError,
    KubernetesProvider,
    KubernetesSettings,
    connect,
    pod_manifest,
    random_token,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a Kubernetes cluster: set KUBECONFIG to run it (it creates and deletes "
        "a throwaway namespace)",
    ),
]


@contextlib.asynccontextmanager
async def throwaway_namespace(enforce: str) -> AsyncIterator[str]:
    """A namespace enforcing Pod Security profile ``enforce``, deleted at the end."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace

    name = f"tierfaas-e2e-{random_token()}"
    client = connect(name)
    labels = {"pod-security.kubernetes.io/enforce": enforce}
    await client.create(Namespace(metadata=ObjectMeta(name=name, labels=labels)))
    try:
        yield name
    finally:
        await client.delete(Namespace, name)
        await client.close()


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    # As namespace.yaml: the sandbox's node pods (the default isolation) are privileged.
    async with throwaway_namespace("privileged") as name:
        yield name


@pytest.fixture
async def provider(namespace: str) -> AsyncIterator[KubernetesProvider]:
    image = os.environ.get("TIERFAAS_K8S_TEST_IMAGE", "tierfaas:0.1.0")
    provider = KubernetesProvider(
        KubernetesSettings(image=image, namespace=namespace, prestop_sleep_s=1),
        connect(namespace),
    )
    yield provider
    await provider.close()


async def test_the_api_server_accepts_the_pod(provider: KubernetesProvider) -> None:
    """Server-side validation and admission of the sandbox's privileged pod (the API server
    refuses, say, allowPrivilegeEscalation: false beside privileged: true)."""
    from lightkube.resources.core_v1 import Pod

    manifest = pod_manifest(provider.settings, "1.0.0", 0, "tierfaas-g0-dryrun")
    await provider.client.create(cast("Pod", Pod.from_dict(manifest)), dry_run=True)


async def test_the_restricted_profile_admits_unsandboxed_pods_only() -> None:
    """What docs/kubernetes.md tells clusters that forbid privileged pods: with
    TIERFAAS_K8S_ISOLATION=process the pods pass the restricted profile; sandboxed ones do
    not."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Pod

    async with throwaway_namespace("restricted") as name:
        client = connect(name)
        try:
            for isolation in ("process", "sandbox"):
                settings = KubernetesSettings(image="img", namespace=name, isolation=isolation)
                pod = Pod.from_dict(pod_manifest(settings, "1.0.0", 0, f"tierfaas-g0-{isolation}"))
                if isolation == "process":
                    await client.create(cast("Pod", pod), dry_run=True)
                else:
                    with pytest.raises(ApiError) as refused:
                        await client.create(cast("Pod", pod), dry_run=True)
                    assert refused.value.status.code == 403
                    assert "restricted" in str(refused.value.status.message)
        finally:
            await client.close()


async def test_launch_list_and_terminate_a_pod(provider: KubernetesProvider) -> None:
    (name,) = await provider.launch("1.0.0", 2, 1)
    (node,) = await provider.nodes()
    assert (node.name, node.version, node.generation) == (name, "1.0.0", 2)
    assert node.phase in ("starting", "running")
    await provider.terminate(name)
    await provider.terminate(name)  # asking twice is fine
    deadline = time.monotonic() + 120
    while (nodes := await provider.nodes()) and time.monotonic() < deadline:
        assert [n.phase for n in nodes] == ["draining"]
        await asyncio.sleep(1)
    assert nodes == [], "the pod was not gone within 120 s"
    await provider.terminate(name)  # gone: ignored


async def test_a_missing_namespace_is_a_clear_error(provider: KubernetesProvider) -> None:
    lost = KubernetesProvider(
        KubernetesSettings(image="img", namespace=f"tierfaas-missing-{random_token()}"),
        connect("default"),
    )
    try:
        with pytest.raises(KubernetesError) as caught:
            await lost.launch("1.0.0", 0, 1)
    finally:
        await lost.close()
    # Not found, or forbidden where the user may not look into other namespaces.
    assert caught.value.reason in ("not_found", "forbidden"), caught.value
    assert lost.settings.namespace in str(caught.value)
