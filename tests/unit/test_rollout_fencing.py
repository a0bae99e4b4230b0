"""The rollout controller under fencing (issue 17.3): a master without a majority does not
terminate or launch, a master whose term is over is refused, and the one that holds both
carries its term to the provider and the status."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tierfaas.control.api import TablePosition
from tierfaas.deploy.controller import RolloutController
from tierfaas.deploy.provider import ProvidedNode
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.deploy.term import FencedError, SeenTerms, Term
from tierfaas.membership.base import MemberInfo, MemberState
from tierfaas.testing import FakeClock
from tierfaas.topology import Topology

DEMO = Path(__file__).parents[2] / "examples" / "demo"
NAMES = ["n1", "n2", "n3", "n4", "n5"]


def release(tmp_path: Path, version: str) -> Path:
    folder = tmp_path / f"src-{version}"
    shutil.copytree(DEMO, folder)
    toml = folder / "tierfaas.toml"
    toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
    return folder


@dataclass
class FakeProvider:
    listed: list[ProvidedNode]
    kind: str = "fake"
    terminated: list[tuple[str, Term | None]] = field(default_factory=list)
    launched: list[tuple[int, Term | None]] = field(default_factory=list)

    async def launch(
        self, version: str, generation: int, count: int, *, term: Term | None = None
    ) -> list[str]:
        self.launched.append((count, term))
        return [f"new{i}" for i in range(count)]

    async def terminate(self, name: str, *, term: Term | None = None) -> None:
        self.terminated.append((name, term))

    async def nodes(self) -> list[ProvidedNode]:
        return list(self.listed)

    async def close(self) -> None:
        return None


@dataclass
class FakeMembership:
    states: dict[str, MemberState]

    def members(self) -> list[MemberInfo]:
        return [
            MemberInfo(name, 1, state, "x", version="1.0.0") for name, state in self.states.items()
        ]


class FakeBackend:
    def position(self) -> TablePosition:
        return TablePosition(1, "lineage1")


class FakeControl:
    backend = FakeBackend()

    def __init__(self) -> None:
        self.terms = SeenTerms()


class FakeCluster:
    async def topology(self) -> Topology:
        return Topology(tuple(NAMES), "n1", (), (), {})


@pytest.fixture
def registry(tmp_path: Path) -> DirectoryRegistry:
    registry = DirectoryRegistry(tmp_path / "reg")
    registry.publish(release(tmp_path, "1.0.0"))
    registry.publish(release(tmp_path, "2.0.0"))  # desired
    return registry


def controller(registry: DirectoryRegistry, membership: FakeMembership) -> Any:
    # A canary of 2.0.0 that never joined, seen 100 s ago, long past its timeout: the plan
    # aborts the rollout and terminates it.
    canary = ProvidedNode("c1", "2.0.0", 0, "running", None, time.time() - 100)
    provider = FakeProvider([canary])
    clock = FakeClock()
    made = RolloutController(
        name="n1",
        version="1.0.0",
        registry=registry,
        provider=provider,
        cluster=FakeCluster(),  # type: ignore[arg-type]
        control=FakeControl(),  # type: ignore[arg-type]
        membership=membership,  # type: ignore[arg-type]
        poll_s=1.0,
        canaries=1,
        canary_timeout_s=10.0,
        clock=clock,
    )
    made.sightings.age_s("c1")
    clock.advance(100)
    return made, provider


async def test_a_master_without_a_majority_terminates_nothing(
    registry: DirectoryRegistry,
) -> None:
    membership = FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE))
    made, provider = controller(registry, membership)
    made.guard.observe(membership.members())  # it knew five members
    membership.states.update(n2=MemberState.DEAD, n3=MemberState.DEAD, n4=MemberState.SUSPECT)
    made.term = Term(0, 1, "n1")  # claimed before the cut
    await made.tick()
    assert provider.terminated == [] and provider.launched == []
    assert made.suspended == 1
    status = registry.read_status() or {}
    assert status["majority"] == {"reached": 2, "known": 6}  # the canary counts
    assert "no majority (2 of 6 known members reachable)" in status["rollout"]["step"]
    made.io.close()


async def test_a_master_without_a_majority_claims_no_term(registry: DirectoryRegistry) -> None:
    membership = FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE))
    made, provider = controller(registry, membership)
    made.guard.observe(membership.members())
    membership.states.update(n2=MemberState.DEAD, n3=MemberState.DEAD, n4=MemberState.DEAD)
    await made.tick()
    assert made.term is None and registry.current_term() is None
    assert provider.terminated == []
    made.io.close()


async def test_a_master_whose_term_is_over_is_refused(registry: DirectoryRegistry) -> None:
    membership = FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE))
    made, provider = controller(registry, membership)
    made.term = registry.claim_term(0, "n1")
    registry.claim_term(0, "n2")  # the majority elected a master of its own meanwhile
    with pytest.raises(FencedError):
        await made.tick()
    assert provider.terminated == []
    made.io.close()


async def test_the_master_with_a_majority_and_the_newest_term_acts_under_it(
    registry: DirectoryRegistry,
) -> None:
    membership = FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE))
    made, provider = controller(registry, membership)
    await made.tick()
    term = registry.current_term()
    assert term is not None and term.master == "n1" and term.lineage == "lineage1"
    assert provider.terminated == [("c1", term)]
    status = registry.read_status() or {}
    assert status["term"] == term.to_json()
    assert status["history"][-1]["result"] == "aborted"
    made.io.close()


async def test_a_newer_term_seen_in_a_handover_fences_this_master_too(
    registry: DirectoryRegistry,
) -> None:
    membership = FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE))
    made, provider = controller(registry, membership)
    made.term = registry.claim_term(0, "n1")
    # The registry shows no newer term, but this node has seen one (a handover it got).
    made.control.terms.see(Term(0, 9, "n2", "lineage-2"))
    with pytest.raises(FencedError, match=r"older than term 0\.9"):
        await made.tick()
    assert provider.terminated == []
    made.io.close()
