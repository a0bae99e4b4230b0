"""A serving node runs the collector at a raised young threshold (a young collection at
Python's default walked the objects of every call in flight every few calls), and leaves the
process's threshold as it found it when it stops."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from tierfaas.config import Address, NodeConfig
from tierfaas.node.lifecycle import GC_YOUNG_THRESHOLD, Node
from tierfaas.procs import free_port

TESTREL = Path(__file__).parent.parent / "fixtures" / "testrel"


async def test_a_node_serves_at_the_raised_young_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    assert before[0] < GC_YOUNG_THRESHOLD
    config = NodeConfig(
        release_dir=TESTREL,
        http=Address("127.0.0.1", free_port("127.0.0.1")),
        isolation="process",
        drain_timeout_s=1.0,
    )
    node = Node(config)
    running = asyncio.create_task(node.run())
    try:
        for _ in range(300):  # the node is serving within 30 s
            if gc.get_threshold()[0] == GC_YOUNG_THRESHOLD or running.done():
                break
            await asyncio.sleep(0.1)
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        node.request_stop()
        await asyncio.wait_for(running, 60)
    assert gc.get_threshold() == before
