"""The Kubernetes provider under fencing (issue 17.3): the pods it launches carry the
launching master's term, and a launch or terminate under an older term than any node pod
carries is refused before it reaches the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.k8s_manifests import SETTINGS
from tests.unit.test_kubernetes_provider import FakeKube, client_for
from tierfaas.deploy.kubernetes import KubernetesProvider
from tierfaas.deploy.kubernetes.manifests import ANNOTATION_TERM, pod_manifest, term_of_pod
from tierfaas.deploy.term import FencedError, Term

MAJORITY = Term(1, 5, "majority", "lineage-m")
CUT_OFF = Term(1, 4, "cut-off", "lineage-c")


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
async def provider(fake: FakeKube) -> AsyncIterator[KubernetesProvider]:
    provider = KubernetesProvider(SETTINGS, client_for(fake))
    yield provider
    await provider.close()


def test_a_pod_carries_the_term_it_was_launched_under() -> None:
    pod = pod_manifest(SETTINGS, "2.0.0", 1, "tierfaas-g1-abc23", MAJORITY)
    notes = pod["metadata"]["annotations"]
    assert json.loads(notes[ANNOTATION_TERM]) == MAJORITY.to_json()
    assert term_of_pod(notes) == MAJORITY
    # An operator's launch (tierfaas up) carries none; a damaged one counts as none.
    assert ANNOTATION_TERM not in pod_manifest(SETTINGS, "2.0.0", 1, "x")["metadata"]["annotations"]
    assert term_of_pod({ANNOTATION_TERM: "{not json"}) is None
    assert term_of_pod(None) is None


async def test_launched_pods_record_the_newest_term(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    assert await provider.newest_term() is None
    await provider.launch("2.0.0", 1, 1, term=CUT_OFF)
    await provider.launch("2.0.0", 1, 1, term=MAJORITY)
    await provider.launch("2.0.0", 1, 1)  # no term: not fenced, records none
    assert await provider.newest_term() == MAJORITY
    assert [term_of_pod(body["metadata"].get("annotations")) for body in fake.sent] == [
        CUT_OFF,
        MAJORITY,
        None,
    ]


async def test_a_launch_under_an_older_term_is_refused_before_any_create(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    await provider.launch("2.0.0", 1, 1, term=MAJORITY)
    with pytest.raises(FencedError, match="launching 2 node"):
        await provider.launch("2.0.0", 1, 2, term=CUT_OFF)
    assert len(fake.of("POST")) == 1  # the majority's pod only


async def test_a_terminate_under_an_older_term_is_refused(
    fake: FakeKube, provider: KubernetesProvider
) -> None:
    fake.node("old-1")
    (canary,) = await provider.launch("2.0.0", 1, 1, term=MAJORITY)
    with pytest.raises(FencedError, match="terminating old-1 refused"):
        await provider.terminate("old-1", term=CUT_OFF)
    assert fake.of("DELETE") == []
    # The pod that carries the newer term is draining: its term still counts.
    await provider.terminate(canary, term=MAJORITY)
    with pytest.raises(FencedError):
        await provider.terminate("old-1", term=CUT_OFF)
    # Under the newest term (or an operator's command, with none) it goes ahead.
    await provider.terminate("old-1", term=Term(1, 6, "next"))
    assert [r.url.path.rsplit("/", 1)[1] for r in fake.of("DELETE")] == [canary, "old-1"]
