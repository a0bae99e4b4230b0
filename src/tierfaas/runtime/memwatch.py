"""The node's watch on memory: every ``memory_sample_s`` it reads each live instance's use and
the kernel's memory pressure, gives the readings to the budget and lets it relieve pressure.

The readings are file reads in ``/proc`` and the cgroup filesystem, and a cgroup read takes a
kernel-wide lock that other cgroups' operations contend for, so they run off the event loop
(``KernelProbe``: one worker thread per round, all instances in it); only the bookkeeping
runs on the loop. Rounds never overlap: the next is scheduled when one ends. A round that
fails is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tierfaas.clock import Scheduler, Timer
from tierfaas.runtime import memory
from tierfaas.runtime.budget import MemoryBudget
from tierfaas.runtime.ports import PoolInstance

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reading:
    """One round's numbers: each instance's use in bytes (None: not read) and the pressure
    (some avg10, percent; None: no PSI here)."""

    instances: dict[PoolInstance, int | None] = field(default_factory=dict)
    pressure_pct: float | None = None


class MemoryProbe(Protocol):
    async def read(self, instances: list[PoolInstance]) -> Reading:
        """The use of ``instances`` and the pressure now, read off the event loop."""
        ...


class KernelProbe:
    """Reads each instance's ``memory_bytes()`` and the PSI file in a worker thread."""

    def __init__(self, pressure: Path | None) -> None:
        self.pressure = pressure

    async def read(self, instances: list[PoolInstance]) -> Reading:
        return await asyncio.to_thread(self.read_now, instances)

    def read_now(self, instances: list[PoolInstance]) -> Reading:
        reading = Reading()
        for instance in instances:
            try:
                reading.instances[instance] = instance.memory_bytes()
            except (OSError, ValueError):  # gone meanwhile
                reading.instances[instance] = None
        if self.pressure is not None:
            try:
                reading.pressure_pct = memory.some_avg10(self.pressure.read_text())
            except OSError:
                pass
        return reading


class MemoryWatch:
    def __init__(
        self,
        scheduler: Scheduler,
        budget: MemoryBudget,
        instances: Callable[[], list[PoolInstance]],
        probe: MemoryProbe,
        interval_s: float,
        pressure_threshold_pct: float,
    ) -> None:
        """``instances``: the live instances now. ``pressure_threshold_pct``: some avg10
        past which idle instances are evicted (0: never for pressure)."""
        self.scheduler = scheduler
        self.budget = budget
        self.instances = instances
        self.probe = probe
        self.interval_s = interval_s
        self.threshold = pressure_threshold_pct
        self.pressure_pct: float | None = None  # the last round's
        self._timer: Timer | None = None
        self._round: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._closed = False
        self._schedule()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._round is not None:
            self._round.cancel()
            self._round = None

    async def sample(self) -> None:
        """One round: read, book the readings, relieve pressure."""
        live = [i for i in self.instances() if not i.dead]
        reading = await self.probe.read(live)
        self.pressure_pct = reading.pressure_pct
        self.budget.measured(reading.instances)
        evicted = self.budget.relieve(reading.pressure_pct, self.threshold)
        if evicted:
            log.warning(
                "memory: evicted %d idle instance(s) (%.0f MiB booked of %.0f, pressure %s)",
                evicted,
                self.budget.used_mb,
                self.budget.budget_mb,
                "-" if reading.pressure_pct is None else f"{reading.pressure_pct:g}%",
            )

    def _schedule(self) -> None:
        if not self._closed:
            self._timer = self.scheduler.call_later(self.interval_s, self._begin)

    def _begin(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._run())
        self._round = task

    async def _run(self) -> None:
        try:
            await self.sample()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory: a reading round failed")
        finally:
            self._round = None
        self._schedule()
