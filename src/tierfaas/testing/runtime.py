"""The runtime without processes: fake instances and a fake spawner on a ``FakeClock``.

``FakeSpawner`` starts ``FakeInstance``s: a start takes ``start_s`` seconds of the fake clock
(or, with ``start_s=None``, until the test calls ``ready()`` or ``fail()`` on it), and each
call on an instance answers, echoing its body, after ``call_s(body)`` seconds of the clock
(by default the body read as a number of seconds; one that is not a number answers at once).
``RuntimeHarness`` puts a real ``Runtime`` (its pools, policy, budget and reaper) on top of
them, so tests drive scale-out, saturation, queue timeouts and keep-alive by advancing the
clock: no fork, no sleep.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tierfaas import errors
from tierfaas.config import NodeConfig
from tierfaas.manifest import EntryPoint, FunctionSpec, Release
from tierfaas.runtime.events import RuntimeEvent
from tierfaas.runtime.instance import Result
from tierfaas.runtime.memory import MiB
from tierfaas.runtime.memwatch import Reading
from tierfaas.runtime.ports import PoolInstance
from tierfaas.runtime.runtime import Invocation, Runtime
from tierfaas.testing.clock import FakeClock, settle


def seconds_in_body(body: bytes) -> float:
    """A fake call's duration: its body read as seconds (none if it is not a number)."""
    try:
        return float(body)
    except ValueError:
        return 0.0


def fake_release(functions: dict[str, dict[str, Any]], root: Path | None = None) -> Release:
    """A release of functions with the given ``FunctionSpec`` settings and no code (their
    handler names a module that does not exist: only fakes may run them)."""
    root = root if root is not None else Path.cwd()
    specs = {
        name: FunctionSpec(
            name=name,
            handler=EntryPoint("fake", name, root / "fake.py"),
            **settings,
        )
        for name, settings in functions.items()
    }
    return Release("fake", "0.0.0", root, specs)


class FakeInstance:
    """An instance with no process (see the module's docstring)."""

    def __init__(
        self,
        instance_id: int,
        spec: FunctionSpec,
        clock: FakeClock,
        call_s: Callable[[bytes], float],
    ) -> None:
        self.id = instance_id
        self.pid = 100_000 + instance_id
        self.host_pid = self.pid
        self.spec = spec
        self.clock = clock
        self.call_s = call_s
        self.busy = 0
        self.calls_served = 0
        self.ready_at = float("inf")
        self.last_used = clock()
        self.start_s = 0.0
        self.dead = False
        self.holds_memory = True
        self.death_reason = ""
        self.takes_context = True
        self.measured_mb: float | None = None  # what memory_bytes() reports (None: unknown)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received: list[tuple[bytes, dict[str, Any] | None]] = []  # every call sent
        self._in_flight: set[asyncio.Future[Result]] = set()

    def call(
        self,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None = None,
    ) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.received.append((body, context))
        seconds = self.call_s(body)
        if seconds > timeout_s:
            self._in_flight.add(future)
            self.clock.call_later(timeout_s, lambda: self._time_out(future))
        elif seconds <= 0:
            future.set_result(Result(body, "application/octet-stream"))
        else:
            self._in_flight.add(future)
            self.clock.call_later(seconds, lambda: self._answer(future, body))
        return future

    def kill(self, reason: str) -> None:
        if not self.death_reason:
            self.death_reason = reason
        self._close()

    def memory_bytes(self) -> int | None:
        if self.measured_mb is None or self.dead:
            return None
        return int(self.measured_mb * MiB)

    def crash(self) -> None:
        """The process dies on its own: calls in flight fail, the pool sees "crashed"."""
        self._close()

    def _close(self) -> None:
        if self.dead:
            return
        self.dead = True
        in_flight, self._in_flight = self._in_flight, set()
        for future in in_flight:
            if not future.done():
                future.set_exception(
                    errors.InstanceCrashed(f"the instance of {self.spec.name!r} died")
                )
        self.closed.set_result(None)

    def _answer(self, future: asyncio.Future[Result], body: bytes) -> None:
        self._in_flight.discard(future)
        if not future.done():
            future.set_result(Result(body, "application/octet-stream"))

    def _time_out(self, future: asyncio.Future[Result]) -> None:
        self._in_flight.discard(future)
        if not future.done():
            future.set_exception(errors.FunctionTimeout(f"{self.spec.name!r} timed out"))
            self.kill("timeout")


class FakeHolder:
    """A holder of idle instances for a ``MemoryBudget`` (what a pool is to it): the given
    fake instances, and its function's call frequency as a pool counts it."""

    def __init__(self, *instances: FakeInstance, frequency: float = 0.0) -> None:
        self.instances = list(instances)
        self.frequency = frequency

    def idle_instances(self) -> list[PoolInstance]:
        return [i for i in self.instances if not i.dead and not i.busy]

    def call_frequency(self) -> float:
        return self.frequency

    def idle_values(self) -> list[tuple[PoolInstance, float]]:
        return [(instance, self.frequency) for instance in self.idle_instances()]


@dataclass
class FakeStart:
    """A start under way that the test ends (``FakeSpawner(start_s=None)``)."""

    instance: FakeInstance
    began: float
    outcome: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def end(self) -> None:
        """The start's time is up: ready, unless it was cancelled meanwhile."""
        if not self.outcome.done():
            self.outcome.set_result(None)

    def ready(self, takes_context: bool = True) -> None:
        self.instance.takes_context = takes_context
        self.outcome.set_result(None)

    def fail(self, error: BaseException) -> None:
        self.outcome.set_exception(error)


class FakeSpawner:
    """Starts ``FakeInstance``s (see the module's docstring). ``failures``: exceptions the
    next spawns raise at once (as a zygote that cannot fork does)."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        start_s: float | None = 0.3,
        call_s: Callable[[bytes], float] = seconds_in_body,
    ) -> None:
        self.clock = clock
        self.start_s = start_s
        self.call_s = call_s
        self.failures: collections.deque[BaseException] = collections.deque()
        self.spawned: list[FakeInstance] = []  # every instance that started, in order
        self.starts: list[FakeStart] = []  # starts under way (start_s=None), oldest first
        self.attempts = 0
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def close(self) -> None:
        self.running = False
        for instance in self.spawned:
            instance.kill("shutdown")

    async def spawn(self, spec: FunctionSpec) -> FakeInstance:
        self.attempts += 1
        if self.failures:
            raise self.failures.popleft()
        instance = FakeInstance(self.attempts, spec, self.clock, self.call_s)
        start = FakeStart(instance, self.clock())
        if self.start_s is None:
            self.starts.append(start)
        else:
            self.clock.call_later(self.start_s, start.end)
        try:
            await start.outcome
        finally:
            if start in self.starts:
                self.starts.remove(start)
        instance.start_s = self.clock() - start.began
        self.spawned.append(instance)
        return instance


class FakeProbe:
    """Memory readings without a kernel: each instance's ``measured_mb`` and a pressure the
    test sets (``pressure_pct``, some avg10), read at once on the event loop."""

    def __init__(self) -> None:
        self.pressure_pct: float | None = None
        self.rounds = 0

    async def read(self, instances: list[PoolInstance]) -> Reading:
        self.rounds += 1
        return Reading({i: i.memory_bytes() for i in instances}, self.pressure_pct)


FAKE_BUDGET_MB = 2048
"""The harness's memory budget unless a test sets one: the auto budget would read the host."""


class RuntimeHarness:
    """A ``Runtime`` on a ``FakeClock``, a ``FakeSpawner`` and a ``FakeProbe`` (each may be
    given), with the events it emitted. ``settings``: ``NodeConfig`` fields
    (``memory_budget_mb`` defaults to ``FAKE_BUDGET_MB``). Use as ``async with``."""

    def __init__(
        self,
        release: Release,
        *,
        clock: FakeClock | None = None,
        spawner: FakeSpawner | None = None,
        probe: FakeProbe | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.spawner = spawner if spawner is not None else FakeSpawner(self.clock)
        self.probe = probe if probe is not None else FakeProbe()
        self.events: list[RuntimeEvent] = []
        settings.setdefault("memory_budget_mb", FAKE_BUDGET_MB)
        config = NodeConfig(release_dir=release.root, **settings)
        self.runtime = Runtime(
            release, config, self.clock, [self.events.append], self.spawner, self.probe
        )
        self._requests = 0

    async def __aenter__(self) -> RuntimeHarness:
        await self.runtime.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.runtime.close()
        await settle()

    def call(self, name: str, body: bytes = b"", **kwargs: Any) -> asyncio.Task[Invocation]:
        """Starts one invocation of ``name``; it proceeds as the clock runs."""
        self._requests += 1
        return asyncio.get_running_loop().create_task(
            self.runtime.invoke(name, body, request_id=f"req-{self._requests}", **kwargs)
        )

    async def run_for(self, seconds: float) -> None:
        await self.clock.run_for(seconds)
