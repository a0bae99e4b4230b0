"""Instances do not inherit the node's settings: the cluster key stays in the node."""

from __future__ import annotations

import json

import pytest

from tests.real_runtime import make


async def test_the_cluster_key_and_node_settings_do_not_reach_instances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERFAAS_CLUSTER_KEY", "c2VjcmV0")
    monkeypatch.setenv("TIERFAAS_HTTP", "127.0.0.1:1")
    rt = await make()
    try:
        result = await rt.call("envnames")
        assert json.loads(result.body) == []
    finally:
        await rt.runtime.close()
