"""Instances do not inherit the node's settings: the cluster key stays in the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tierfaas.config import NodeConfig
from tierfaas.manifest import load_release
from tierfaas.runtime import Runtime

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


async def test_the_cluster_key_and_node_settings_do_not_reach_instances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERFAAS_CLUSTER_KEY", "c2VjcmV0")
    monkeypatch.setenv("TIERFAAS_HTTP", "127.0.0.1:1")
    runtime = Runtime(load_release(TESTREL), NodeConfig(release_dir=TESTREL))
    await runtime.start()
    try:
        result = await runtime.invoke("envnames", b"", request_id="req-1")
        assert json.loads(result.body) == []
    finally:
        await runtime.close()
