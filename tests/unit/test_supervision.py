"""The supervisor of background tasks: a crash is logged, counted and restarted after a
backoff; a crash loop makes the node not ready; a cancelled or finished task stays ended."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

import pytest
from prometheus_client import CollectorRegistry

from tierfaas.supervision import Supervisor
from tierfaas.testing import FakeClock
from tierfaas.testing.clock import settle


class Flaky:
    """A task body that crashes its first ``crashes`` runs, then runs until cancelled."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.forever = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash {self.runs}")
        await self.forever.wait()


def make(clock: FakeClock, **kw: float) -> tuple[Supervisor, CollectorRegistry]:
    registry = CollectorRegistry()
    return Supervisor(registry, clock=clock, sleep=clock.sleep, **kw), registry  # type: ignore[arg-type]


def crashes(registry: CollectorRegistry, task: str) -> float | None:
    return registry.get_sample_value("tierfaas_task_crashes_total", {"task": task})


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_crash_is_logged_counted_and_restarted_after_a_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    supervisor, registry = make(clock, initial_backoff_s=0.1)
    body = Flaky(crashes=1)
    task = supervisor.spawn("table-hub", body)
    await settle()
    assert crashes(registry, "table-hub") == 1.0
    assert "background task table-hub crashed" in caplog.text
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert body.runs == 1  # waiting out the backoff
    await clock.run_for(0.09)
    assert body.runs == 1
    await clock.run_for(0.02)
    assert body.runs == 2 and not task.done()  # running again
    assert supervisor.not_ready_reason() is None  # one crash is not a crash loop
    await stop(task)


async def test_the_series_exists_before_any_crash() -> None:
    supervisor, registry = make(FakeClock())
    task = supervisor.spawn("write-queue", Flaky(crashes=0))
    await settle()
    assert crashes(registry, "write-queue") == 0.0
    await stop(task)


async def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    supervisor, _ = make(FakeClock(), initial_backoff_s=0.1, max_backoff_s=1.0)
    assert [supervisor.backoff_s(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    clock = FakeClock()
    supervisor, _registry = make(clock, initial_backoff_s=0.1, max_backoff_s=1.0, stable_s=10)
    runs: list[float] = []

    async def crash_after(seconds: float) -> None:
        runs.append(clock())
        await clock.sleep(seconds)
        raise RuntimeError("boom")

    task = supervisor.spawn("replicator", lambda: crash_after(0.0))
    await clock.run_for(3.0)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(runs)]
    assert gaps[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]
    await stop(task)

    # A run that lasted stable_s before it crashed starts the backoff over.
    runs.clear()
    task = supervisor.spawn("replicator-2", lambda: crash_after(10.0))
    await clock.run_for(25.0)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(runs)]
    assert gaps[:2] == [10.1, 10.1]
    await stop(task)


async def test_a_crash_loop_makes_the_node_not_ready_until_it_stops() -> None:
    clock = FakeClock()
    supervisor, registry = make(
        clock, initial_backoff_s=0.1, max_backoff_s=0.1, crash_loop=5, window_s=60
    )
    body = Flaky(crashes=5)
    task = supervisor.spawn("cluster-manager", body)
    await clock.run_for(0.35)  # crashes at 0, 0.1, 0.2, 0.3
    assert crashes(registry, "cluster-manager") == 4.0
    assert supervisor.not_ready_reason() is None
    await clock.run_for(0.1)  # the fifth
    reason = supervisor.not_ready_reason()
    assert reason is not None and "cluster-manager keeps crashing" in reason
    await clock.run_for(0.1)
    assert body.runs == 6 and not task.done()  # still restarted: it may recover
    await clock.run_for(59.0)
    assert supervisor.not_ready_reason() is not None  # the crashes are recent still
    await clock.run_for(1.0)
    assert supervisor.not_ready_reason() is None  # a window without a crash: ready again
    await stop(task)


async def test_a_one_shot_task_that_crashes_is_not_restarted_and_the_node_not_ready() -> None:
    clock = FakeClock()
    supervisor, registry = make(clock)
    body = Flaky(crashes=1)
    task = supervisor.spawn("release-check", body, restart=False)
    await clock.run_for(10.0)
    assert task.done() and body.runs == 1
    assert crashes(registry, "release-check") == 1.0
    reason = supervisor.not_ready_reason()
    assert reason is not None and "release-check" in reason


async def test_a_cancelled_or_finished_task_stays_ended() -> None:
    clock = FakeClock()
    supervisor, registry = make(clock)
    body = Flaky(crashes=0)
    task = supervisor.spawn("hub", body)
    await settle()
    await stop(task)
    await clock.run_for(10.0)
    assert task.cancelled() and body.runs == 1
    assert crashes(registry, "hub") == 0.0

    done: list[int] = []

    async def once() -> None:
        done.append(1)

    task = supervisor.spawn("once", once)
    await clock.run_for(10.0)
    assert task.done() and not task.cancelled() and done == [1]
    assert supervisor.not_ready_reason() is None


async def test_readyz_gives_the_supervisors_reason() -> None:
    from tierfaas.node.readiness import Readiness

    clock = FakeClock()
    supervisor, _ = make(clock)
    readiness = Readiness(check_release=False, tasks=supervisor)
    assert readiness.reason() is None
    supervisor.spawn("release-check", Flaky(crashes=1), restart=False)
    await settle()
    assert readiness.reason() == "background task release-check crashed and is not restarted"


async def test_a_cancellation_from_inside_is_a_crash_and_the_task_restarts() -> None:
    # A future the task awaits is cancelled under it (grpc.aio cancels a call whose channel
    # is closed): not a stop of the task, which must go on.
    clock = FakeClock()
    supervisor, registry = make(clock, initial_backoff_s=0.1)
    runs: list[int] = []
    forever = asyncio.Event()

    async def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        await forever.wait()

    task = supervisor.spawn("replicator", body)
    await settle()
    assert crashes(registry, "replicator") == 1.0 and not task.done()
    await clock.run_for(0.11)
    assert len(runs) == 2 and not task.done()
    await stop(task)
    assert task.cancelled()
