"""``tierfaas.node.compose``: a node's parts come wired together, standalone or clustered.
Nothing is started: no socket is bound, no process forked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tierfaas.config import Address, NodeConfig
from tierfaas.errors import ConfigError
from tierfaas.keys import KEY_ENV
from tierfaas.node import compose
from tierfaas.runtime.events import FunctionCold, FunctionWarm

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


@pytest.fixture(autouse=True)
def no_cluster_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def config(**settings: Any) -> NodeConfig:
    return NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080), **settings)


async def test_a_standalone_node_runs_every_call_here_and_holds_no_routes() -> None:
    parts = compose(config(name="solo"))
    assert parts.cluster is None
    assert parts.router.lookup is None and parts.router.homes is None
    assert parts.app.routes_view is None  # GET /v1/routes answers 404
    assert parts.app.not_ready_reason() is None
    assert parts.app.cluster_view is not None
    view = await parts.app.cluster_view()
    assert view["standalone"] and view["master"] == "solo"
    assert view["members"][0]["http"] == "127.0.0.1:8080"


def test_a_clustered_node_is_not_ready_until_it_joined() -> None:
    parts = compose(config(name="n1", gossip=Address("127.0.0.1", 7946)))
    assert parts.cluster is not None and parts.cluster.rollout is None
    reason = parts.app.not_ready_reason()
    assert reason is not None and reason.startswith("not joined to the cluster")
    assert not parts.app.not_ready_fatal()
    assert parts.app.routes_view is not None
    assert parts.app.routes_view()["node"] == "n1"


def test_the_runtime_reports_warm_functions_to_the_control_plane() -> None:
    parts = compose(config(name="n1", gossip=Address("127.0.0.1", 7946)))
    assert parts.cluster is not None
    control = parts.cluster.control
    parts.runtime.emit(FunctionWarm("echo"))
    assert control.warm == {"echo"} and control.writes.pending == 1
    parts.runtime.emit(FunctionCold("echo"))
    assert control.warm == set()


@pytest.mark.parametrize("cold_starts", ["home", "local"])
def test_the_router_asks_the_control_plane(cold_starts: str) -> None:
    parts = compose(config(gossip=Address("127.0.0.1", 7946), cold_starts=cold_starts))
    assert parts.cluster is not None
    control = parts.cluster.control
    assert parts.router.lookup == control.lookup
    assert parts.router.homes == (control.home if cold_starts == "home" else None)


def test_a_control_address_off_loopback_needs_a_cluster_key() -> None:
    with pytest.raises(ConfigError) as raised:
        compose(config(rpc=Address("10.1.2.3", 7947)))
    assert raised.value.field == "rpc"


def test_anti_entropy_is_counted_in_the_node_metrics() -> None:
    parts = compose(config(name="n1", gossip=Address("127.0.0.1", 7946)))
    registry = parts.metrics.registry
    for answer in ("agree", "confirm", "announce", "wait", "failed"):
        labels = {"answer": answer}
        assert registry.get_sample_value("tierfaas_anti_entropy_checks_total", labels) == 0
    assert registry.get_sample_value("tierfaas_anti_entropy_repairs_total") == 0
    assert registry.get_sample_value("tierfaas_writes_rejected_total") == 0


@pytest.mark.parametrize("gossip", [None, Address("127.0.0.1", 7946)])
def test_what_instances_print_reaches_the_nodes_function_logs(
    tmp_path: Path, gossip: Address | None
) -> None:
    from tierfaas.runtime.output import OutputLine
    from tierfaas.runtime.spawner import ZygoteSpawner

    parts = compose(config(name="n1", gossip=gossip, data_dir=tmp_path, isolation="process"))
    logs = parts.app.logs
    assert logs is not None and logs.node == "n1"
    assert logs.directory == tmp_path / "logs"
    spawner = parts.runtime.spawner
    assert isinstance(spawner, ZygoteSpawner)
    spawner.output_sink(OutputLine("echo", 1, "r1", "stdout", "hello"))
    assert [line.text for line in logs.recent("echo", None, "r1", 10)] == ["hello"]
    logs.close()
    scraped = "\n".join(
        f"{sample.name}{sample.labels} {sample.value}"
        for metric in parts.metrics.registry.collect()
        for sample in metric.samples
    )
    assert "tierfaas_log_lines_total{'function': 'echo'} 1\n" in scraped
