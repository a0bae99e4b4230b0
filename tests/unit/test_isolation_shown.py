"""Each function's isolation, as the node shows it: ``GET /v1/functions`` (with the sandbox's
limits), ``GET /v1/stats`` and the dashboard's overview. In process: the app is called as
ASGI, no socket is opened and no instance started."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from tierfaas.config import Address, NodeConfig
from tierfaas.http.app import NodeApp
from tierfaas.http.dashboard import Dashboard, function_isolation
from tierfaas.http.metrics import Metrics
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime
from tierfaas.testing.asgi import request

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


def make_app(isolation: Literal["sandbox", "process"]) -> NodeApp:
    config = NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080), isolation=isolation)
    return NodeApp(Runtime(load_release(TESTREL), config), config, Metrics(), "n1")


def get_json(app: NodeApp, path: str) -> Any:
    status, _, body = request(app, path)
    assert status == 200
    return json.loads(body)


@pytest.mark.parametrize("isolation", ["sandbox", "process"])
def test_the_function_list_shows_each_functions_isolation_and_limits(
    isolation: Literal["sandbox", "process"],
) -> None:
    listing = get_json(make_app(isolation), "/v1/functions")
    assert listing["functions"]
    for function in listing["functions"]:
        assert function["isolation"] == isolation
        assert {"cpu", "pids", "network"} <= set(function)
    echo = next(f for f in listing["functions"] if f["name"] == "echo")
    assert (echo["cpu"], echo["pids"], echo["network"]) == (None, 64, "host")


@pytest.mark.parametrize("isolation", ["sandbox", "process"])
def test_a_nodes_stats_say_how_it_isolates(isolation: Literal["sandbox", "process"]) -> None:
    assert get_json(make_app(isolation), "/v1/stats")["isolation"] == isolation


def stats(name: str, isolation: str | None, warm: list[str]) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "node": name, "version": "1", "time": 1000.0, "requests": 0, "cold_starts": 0,
        "errors": 0, "forwards": 0, "latency_bounds": [0.1], "latency_buckets": [0, 0],
        "functions": {fn: {"instances": 1, "busy": 0} for fn in warm},
    }  # fmt: skip
    if isolation is not None:
        sample["isolation"] = isolation
    return sample


def test_the_overview_shows_each_warm_functions_isolation_over_its_nodes() -> None:
    samples = {
        "a": stats("a", "sandbox", ["f", "g"]),
        "b": stats("b", "process", ["g"]),
        "c": stats("c", None, ["h"]),  # a node of an older version says nothing
    }
    members = [{"name": name, "http": f"{name}:1"} for name in samples]

    async def view() -> dict[str, Any]:
        return {"self": "a", "master": "a", "members": members}

    dashboard = Dashboard(view, lambda: samples["a"], "a")

    async def fetch(url: str) -> dict[str, Any] | None:
        return samples[url.removeprefix("http://")[0]]

    dashboard._fetch = fetch  # type: ignore[method-assign]  # the peers, without sockets
    overview = asyncio.run(dashboard._overview())
    assert overview["isolation"] == {"f": ["sandbox"], "g": ["process", "sandbox"], "h": []}
    assert [n["isolation"] for n in overview["nodes"]] == ["sandbox", "process", None]


def test_an_unreachable_node_adds_no_isolation() -> None:
    nodes: list[dict[str, Any]] = [
        {"name": "a", "functions": {"f": {}}, "isolation": "sandbox"},
        {"name": "b", "functions": {}, "isolation": None},
    ]
    assert function_isolation(nodes, ["f"]) == {"f": ["sandbox"]}
