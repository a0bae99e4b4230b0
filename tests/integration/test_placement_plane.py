"""The master's min_instances placement through real control planes (gRPC on loopback,
membership on the in-memory ``FakeNetwork``): each placed node's runtime gets its pins, a
suspect or dead node's share moves, and a node takes pins only from its own master."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.test_control_plane_suspect import Cluster
from tierfaas.control.api import NotMasterError
from tierfaas.control.placement import PIN_LEASE_S, Wanted


class Pins:
    """A node's runtime as the control plane sees it: records what it is asked to pin."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.calls = 0

    def __call__(self, pins: dict[str, int], lease_s: float) -> dict[str, int]:
        assert lease_s == PIN_LEASE_S
        self.calls += 1
        self.now = dict(pins)
        return dict(pins)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    await c.close()


async def test_the_master_places_min_instances_and_moves_them_off_a_lost_node(
    cluster: Cluster,
) -> None:
    await cluster.add("abc")
    pins = {name: Pins() for name in "abc"}
    for name, node in cluster.nodes.items():
        node.plane.pin = pins[name]
        node.plane.wanted = {"f": Wanted(2, 4)}
    master = cluster.nodes["a"].plane
    assert master.role == "master"

    plan = await master.place_once()
    placed = sorted(plan["f"])
    assert len(placed) == 2 and all(count == 1 for count in plan["f"].values())
    assert {n: p.now for n, p in pins.items() if p.now} == {n: {"f": 1} for n in placed}
    assert await master.place_once() == plan  # renewed, not moved
    assert master.routes_view()["placement"] == {"f": {n: 1 for n in placed}}
    assert all(pins[n].calls == 2 for n in placed)

    lost = next(n for n in placed if n != "a")  # two of three placed: one is not the master
    (unplaced,) = set("abc") - set(placed)
    cluster.net.suspect(lost)
    await cluster.settle()
    plan = await master.place_once()
    assert sorted(plan["f"]) == sorted(set("abc") - {lost})  # a suspect is not placed on
    assert pins[unplaced].now == {"f": 1}

    cluster.net.kill(lost)
    await cluster.settle()
    assert await master.place_once() == plan  # stable once moved


async def test_a_node_takes_pins_only_from_its_master(cluster: Cluster) -> None:
    await cluster.add("ab")
    b = cluster.nodes["b"].plane
    pins = Pins()
    b.pin = pins
    with pytest.raises(NotMasterError):
        b.take_pins("b", {"f": 1}, PIN_LEASE_S)
    assert b.take_pins("a", {"f": 1}, PIN_LEASE_S) == ({"f": 1}, "")
    assert pins.now == {"f": 1}


async def test_a_plan_that_drops_a_node_unpins_it_at_once(cluster: Cluster) -> None:
    await cluster.add("ab")
    pins = {name: Pins() for name in "ab"}
    for name, node in cluster.nodes.items():
        node.plane.pin = pins[name]
    master = cluster.nodes["a"].plane
    master.wanted = {"f": Wanted(2, 4)}
    await master.place_once()
    assert pins["a"].now == pins["b"].now == {"f": 1}
    master.wanted = {"f": Wanted(1, 4)}
    await master.place_once()
    assert sorted(p.now.get("f", 0) for p in pins.values()) == [0, 1]  # told, not left to lapse


async def test_warm_elsewhere_reads_the_masters_own_table(cluster: Cluster) -> None:
    await cluster.add("ab")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    hub = a.plane.backend.hub
    assert hub is not None
    hub.batcher.register("f", b.endpoint())
    hub.batcher.register("h", a.endpoint())
    hub.flush()
    assert a.plane.warm_elsewhere("f")
    assert not a.plane.warm_elsewhere("h")  # only here
    assert not a.plane.warm_elsewhere("g")
    cluster.net.kill("b")
    await cluster.settle()
    assert not a.plane.warm_elsewhere("f")  # a dead run is nowhere
