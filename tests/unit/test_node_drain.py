"""A node told to stop stops, even when its drain fails (the drain task has no owner that
awaits it: an exception there would otherwise keep the node serving, unseen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfaas.config import Address, NodeConfig
from tierfaas.node.lifecycle import Node

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


class BrokenGauge:
    def set(self, value: float) -> None:
        raise RuntimeError("a bug on the way out")


async def test_a_drain_that_fails_still_stops_the_node(caplog: pytest.LogCaptureFixture) -> None:
    node = Node(NodeConfig(release_dir=TESTREL, http=Address("127.0.0.1", 8080)))
    node.parts.metrics.draining = BrokenGauge()  # type: ignore[assignment]
    await node._drain_and_stop()
    assert node.server.should_exit
    assert "draining failed" in caplog.text
