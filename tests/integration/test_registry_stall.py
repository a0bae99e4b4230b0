"""A registry whose reads stall (issue 17.5): the master's event loop keeps running, a
stalled call holds one thread, never a pile, and the rollout goes on once the volume
answers. Real threads and real time (the bound is a real timeout)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_rollout_fencing import NAMES, FakeMembership, controller, release
from tierfaas.deploy.offloop import BoundedCalls, Stalled
from tierfaas.deploy.registry import DirectoryRegistry
from tierfaas.membership.base import MemberState

STALL_S = 5.0


class StalledRegistry(DirectoryRegistry):
    """``desired()`` blocks until ``release`` is set (at most ``STALL_S``), like a read of a
    shared volume that does not answer."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.answer = threading.Event()
        self.reads = 0

    def desired(self) -> str | None:
        self.reads += 1
        self.answer.wait(STALL_S)
        return super().desired()


async def loop_lag(until: asyncio.Event, every_s: float = 0.01) -> float:
    """The longest the event loop kept a 10 ms timer waiting beyond its time."""
    worst = 0.0
    while not until.is_set():
        began = time.monotonic()
        await asyncio.sleep(every_s)
        worst = max(worst, time.monotonic() - began - every_s)
    return worst


async def test_a_stalled_registry_read_does_not_hold_the_loop(tmp_path: Path) -> None:
    registry = StalledRegistry(tmp_path / "reg")
    registry.answer.set()
    registry.publish(release(tmp_path, "1.0.0"))
    registry.publish(release(tmp_path, "2.0.0"))
    registry.answer.clear()
    made, provider = controller(registry, FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE)))
    made.io.timeout_s = 0.5
    stop = asyncio.Event()
    lag = asyncio.get_running_loop().create_task(loop_lag(stop))
    began = time.monotonic()
    with pytest.raises(Stalled, match=r"no answer within 0\.5 s"):
        await made.tick()
    waited = time.monotonic() - began
    # Ticks while the read still hangs fail at once and start no second read.
    for _ in range(5):
        with pytest.raises(Stalled, match="has not returned yet"):
            await made.tick()
    assert registry.reads == 1 and made.io.in_flight("desired")
    stop.set()
    worst = await lag
    registry.answer.set()
    for _ in range(200):  # the thread returns once the volume answers
        if not made.io.in_flight("desired"):
            break
        await asyncio.sleep(0.01)
    await made.tick()  # and the rollout goes on
    assert provider.terminated, "the next tick did not act"
    made.io.close()
    print(f"stalled tick gave up after {waited:.2f} s; worst loop lag {worst * 1000:.0f} ms")
    assert 0.45 < waited < 2.0
    assert worst < 0.3  # a blocking read would have held it the whole stall


async def test_bounded_calls_report_the_callee_s_exception() -> None:
    calls = BoundedCalls(1.0)

    def fail() -> Any:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await calls.run("x", fail)
    assert not calls.in_flight("x")
    assert await calls.run("x", lambda: 7) == 7
    calls.close()
