"""What a pool is given, and what it shows: the protocols that keep the pool, the runtime and
the router apart.

A ``FunctionPool`` receives a ``Spawner`` (starts instances), a ``MemoryBudget``
(``budget.py``), a ``Scheduler`` (``tierfaas.clock``) and an event sink, never the ``Runtime``
that owns it; the router sees a pool only as a ``PoolView``. Production implementations are
``ZygoteSpawner`` (``spawner.py``) and ``Instance`` (``instance.py``); ``tierfaas.testing``
has in-memory fakes of both, driven by a ``FakeClock``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tierfaas.manifest import FunctionSpec
from tierfaas.runtime.instance import Result


class PoolInstance(Protocol):
    """One started instance, as the pool uses it. The pool keeps its own bookkeeping on it:
    ``busy`` (calls in flight), ``calls_served``, ``ready_at`` and ``last_used`` (pool clock),
    and the memory budget ``holds_memory``."""

    id: int
    pid: int
    host_pid: int
    spec: FunctionSpec
    busy: int
    calls_served: int
    ready_at: float
    last_used: float
    start_s: float  # how long its start took, in seconds
    dead: bool
    holds_memory: bool
    death_reason: str
    takes_context: bool  # the handler takes a context (its READY said)
    closed: asyncio.Future[None]  # done once it is gone, for whatever reason

    def call(
        self,
        body: bytes,
        context: dict[str, Any] | None,
        timeout_s: float,
        request_id: str | None = None,
    ) -> asyncio.Future[Result]:
        """Sends one call; past ``timeout_s`` it fails with ``FunctionTimeout`` and the
        instance is killed. ``request_id`` tags the instance's output while the call runs
        alone (a handler without a context gets no context to carry it)."""
        ...

    def kill(self, reason: str) -> None:
        """Stops the instance now; calls in flight fail, and ``closed`` completes."""
        ...

    def memory_bytes(self) -> int | None:
        """The memory it uses now, measured (None: not known). Blocking: off the loop."""
        ...


class Spawner(Protocol):
    """Starts instances of the release's functions."""

    async def start(self) -> None:
        """Makes ready whatever spawning needs (the zygote); before the first ``spawn``."""
        ...

    async def close(self) -> None:
        """Stops every instance it started, and itself."""
        ...

    async def spawn(self, spec: FunctionSpec) -> PoolInstance:
        """A new instance of ``spec``, ready for calls. Raises ``errors.HttpError`` (a start
        that failed or timed out), ``ZygoteError`` or ``OSError``, leaving no process."""
        ...


class PoolView(Protocol):
    """What the router (and whoever reports on the node) may read of a function's pool."""

    @property
    def timeout_s(self) -> float:
        """The function's timeout."""
        ...

    @property
    def takes_context(self) -> bool:
        """Whether the handler takes a context (callers skip building one when not)."""
        ...

    @property
    def registered(self) -> bool:
        """The node is registered for the function (an instance runs or starts here)."""
        ...

    def free_slots(self) -> tuple[int, int]:
        """(warm instances, free call slots on them)."""
        ...

    def slot_due_s(self) -> float:
        """Roughly when a slot frees for a call queued now (seconds; inf if unknown)."""
        ...

    def can_take(self) -> bool:
        """A free slot now, or room to start one (the home's check of a first call)."""
        ...

    def load(self) -> float:
        """The busy share of the function's call slots here now, 0..1 (1 with none)."""
        ...

    def recent_load(self) -> float:
        """The busy share of the function's call slots here over the last second, 0..1."""
        ...
