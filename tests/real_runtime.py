"""A runtime with real instance processes (forked from a real zygote) on the test fixture
release ``tests/fixtures/testrel``: for the integration tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tierfaas.config import NodeConfig
from tierfaas.manifest import load_release
from tierfaas.runtime import Invocation, Runtime, RuntimeEvent

TESTREL = Path(__file__).parent / "fixtures" / "testrel"


class Harness:
    def __init__(self, runtime: Runtime, events: list[RuntimeEvent]) -> None:
        self.runtime = runtime
        self.events = events
        self.n = 0

    async def call(self, name: str, body: bytes = b"", **kwargs: Any) -> Invocation:
        self.n += 1
        return await self.runtime.invoke(name, body, request_id=f"req-{self.n}", **kwargs)


async def make(**settings: Any) -> Harness:
    """A started runtime on ``testrel``; ``settings``: ``NodeConfig`` fields. Close it with
    ``harness.runtime.close()``."""
    events: list[RuntimeEvent] = []
    config = NodeConfig(release_dir=TESTREL, **settings)
    runtime = Runtime(load_release(TESTREL), config, listeners=[events.append])
    await runtime.start()
    return Harness(runtime, events)
