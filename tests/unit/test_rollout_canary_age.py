"""Canary ages come from the controller's own clock (issue 17.3): a launch time another host
stamped, in the future or far in the past, neither aborts a rollout early nor keeps a canary
from timing out. And the controller's loop is a supervised task (issue 17.6)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_rollout_fencing import (
    NAMES,
    FakeCluster,
    FakeControl,
    FakeMembership,
    FakeProvider,
    release,
)
from tierfaas.deploy.controller import RolloutController, Sightings
from tierfaas.deploy.provider import ProvidedNode
from tierfaas.deploy.registry import DirectoryRegistry, FailedVersions
from tierfaas.membership.base import MemberState
from tierfaas.supervision import Supervisor
from tierfaas.testing import FakeClock

TIMEOUT_S = 10.0


@pytest.fixture
def registry(tmp_path: Path) -> DirectoryRegistry:
    registry = DirectoryRegistry(tmp_path / "reg")
    registry.publish(release(tmp_path, "1.0.0"))
    registry.publish(release(tmp_path, "2.0.0"))  # desired
    return registry


def controller(
    registry: DirectoryRegistry, launched_at: float, clock: FakeClock, **kwargs: Any
) -> tuple[RolloutController, FakeProvider]:
    # A canary of 2.0.0 that never joins: it times out canary_timeout_s after the
    # controller first saw it, whatever launched_at says.
    provider = FakeProvider([ProvidedNode("c1", "2.0.0", 0, "running", None, launched_at)])
    made = RolloutController(
        name="n1",
        version="1.0.0",
        registry=registry,
        provider=provider,
        cluster=FakeCluster(),  # type: ignore[arg-type]
        control=FakeControl(),  # type: ignore[arg-type]
        membership=FakeMembership(dict.fromkeys(NAMES, MemberState.ALIVE)),  # type: ignore[arg-type]
        poll_s=1.0,
        canaries=1,
        canary_timeout_s=TIMEOUT_S,
        clock=clock,
        **kwargs,
    )
    return made, provider


@pytest.mark.parametrize(
    "launched_at",
    [
        4_102_444_800.0,  # 2100: the launching host's clock (or the API server's) runs ahead
        1_700_000_000.0,  # 2023: ... or behind, or this master's runs ahead
        1.0,  # an epoch near 1970
    ],
)
async def test_a_canary_times_out_on_this_controllers_clock_only(
    registry: DirectoryRegistry, launched_at: float
) -> None:
    clock = FakeClock()
    made, provider = controller(registry, launched_at, clock)
    await made.tick()
    assert provider.terminated == []  # first sight: age 0, whatever launched_at says
    clock.advance(TIMEOUT_S - 0.1)
    await made.tick()
    assert provider.terminated == []  # still within its timeout
    clock.advance(0.2)
    await made.tick()
    assert [name for name, _ in provider.terminated] == ["c1"]  # timed out, once
    status = registry.read_status() or {}
    assert status["history"][-1]["result"] == "aborted"
    made.io.close()


def test_sightings_count_from_the_first_and_forget_the_gone() -> None:
    clock = FakeClock()
    seen = Sightings(clock)
    assert seen.age_s("a") == 0.0
    clock.advance(5)
    assert seen.age_s("a") == 5.0 and seen.age_s("b") == 0.0
    seen.keep_only({"b"})
    clock.advance(1)
    assert seen.age_s("a") == 0.0  # back after being gone: a new sight
    assert seen.age_s("b") == 1.0


async def test_the_controller_loop_is_restarted_after_a_crash(
    registry: DirectoryRegistry,
) -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    supervisor = Supervisor(clock=clock, sleep=sleep)
    made, _ = controller(registry, 0.0, clock, supervisor=supervisor)
    runs = 0
    restarted = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug outside one tick's error handling")
        restarted.set()
        await asyncio.Event().wait()  # runs until stopped

    made._run = run  # type: ignore[method-assign]
    made.start()
    await asyncio.wait_for(restarted.wait(), 5)
    assert runs == 2 and slept == [supervisor.backoff_s(1)]
    assert supervisor.crashes.labels("rollout")._value.get() == 1
    await made.stop()
    assert made._task is not None and made._task.cancelled()


async def test_an_abort_read_between_its_two_writes_is_recorded_aborted(
    registry: DirectoryRegistry,
) -> None:
    # ``tierfaas rollout abort`` marks the version failed, then sets the previous one desired;
    # a master that reads between the two sees its desired version failed mid-rollout.
    clock = FakeClock()
    made, _ = controller(registry, 0.0, clock)
    await made.tick()
    assert (registry.read_status() or {})["phase"] == "rolling"
    FailedVersions(registry.root).mark("2.0.0", "aborted by the operator")
    await made.tick()  # desired is still 2.0.0
    status = registry.read_status() or {}
    assert [h["result"] for h in status["history"] if h["to"] == "2.0.0"] == ["aborted"]
    assert status["history"][-1]["reason"] == "aborted by the operator"
    made.io.close()
