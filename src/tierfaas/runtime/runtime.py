"""The node's runtime: one pool per function, a spawner (the zygote), a memory budget with
its watch (measured use and pressure, ``memwatch.py``) and a reaper of idle instances (each
pool's keep-alive windows, learned or fixed: ``keepalive.py``).

It composes the parts and owns nothing the pools decide: each pool gets the scheduler, the
budget, the spawner and the event sink, never the runtime (see ``ports.py``). The router and
the HTTP app see a pool only as a ``PoolView`` (``pool(name)``); what they may do to one goes
through methods here (``invoke``, ``prewarm``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tierfaas import errors
from tierfaas.clock import LoopScheduler, Scheduler, Timer
from tierfaas.config import NodeConfig
from tierfaas.funcstats.stats import FunctionStats
from tierfaas.manifest import Release
from tierfaas.runtime import eviction, idle_summary, keepalive, policy
from tierfaas.runtime.budget import MemoryBudget, MemoryReport
from tierfaas.runtime.events import EventListener, InstanceStarted, RuntimeEvent
from tierfaas.runtime.instance import Result
from tierfaas.runtime.keepalive import Windows
from tierfaas.runtime.memory import auto_budget, pressure_file, read_capacity
from tierfaas.runtime.memwatch import KernelProbe, MemoryProbe, MemoryWatch
from tierfaas.runtime.output import OutputBudget, OutputLine
from tierfaas.runtime.pool import FunctionPool, PendingCall
from tierfaas.runtime.ports import PoolView, Spawner
from tierfaas.runtime.spawner import ZygoteSpawner

if TYPE_CHECKING:
    from tierfaas.secrets.delivery import SecretsDelivery

log = logging.getLogger(__name__)


def memory_budget_mb(config: NodeConfig) -> int:
    """``--memory-budget-mb``, or, unset, what the host or the node's cgroup can give less the
    reserve (``memory.auto_budget``; read from the kernel)."""
    if config.memory_budget_mb is not None:
        return config.memory_budget_mb
    try:
        found = auto_budget(read_capacity(config.cgroup_root), config.memory_reserve_mb)
    except OSError as exc:
        raise errors.ConfigError(
            "memory_budget_mb", f"cannot read the host's memory ({exc}): set it"
        ) from None
    log.info("memory budget for instances %s", found)
    return found.budget_mb


@dataclass(slots=True)  # not frozen: a frozen init costs 3x, one per call
class Invocation:
    body: bytes
    content_type: str
    cold: bool
    status: int = 200
    headers: list[tuple[bytes, bytes]] | None = None
    """The function's own response headers (an http exec function's), beside its type."""


class Runtime:
    def __init__(
        self,
        release: Release,
        config: NodeConfig,
        scheduler: Scheduler | None = None,
        listeners: Iterable[EventListener] = (),
        spawner: Spawner | None = None,
        memory_probe: MemoryProbe | None = None,
        output_sinks: Sequence[Callable[[OutputLine], None]] = (),
        secrets: SecretsDelivery | None = None,
    ) -> None:
        """``scheduler``: every timer of the runtime, on its clock (default: the running
        loop's, on ``time.monotonic``). ``spawner``: starts instances (default: forked by a
        zygote this runtime starts and stops). ``memory_probe``: reads the instances' memory
        use and the memory pressure (default: from the kernel, in a worker thread).
        ``output_sinks``: who gets the default spawner's output lines besides the node's log
        (the function logs of ``tierfaas.funclogs``). ``secrets``: the node's copy of the
        secrets its functions list, for the default spawner (None: none do)."""
        budget_mb = memory_budget_mb(config)
        for spec in release.functions.values():
            if spec.memory_mb > budget_mb:
                raise errors.ConfigError(
                    "memory_budget_mb",
                    f"{budget_mb} MiB is less than function {spec.name!r} needs "
                    f"({spec.memory_mb} MiB)",
                )
        self.release = release
        self.config = config
        self.scheduler = scheduler if scheduler is not None else LoopScheduler()
        self.clock = self.scheduler.clock
        self.listeners = list(listeners)
        # Every call run here, counted where its outcome is known (GET /v1/functions).
        self.stats = FunctionStats(release.functions, self.clock)
        self.listeners.append(self._count_start)
        self.spawner = (
            spawner
            if spawner is not None
            else ZygoteSpawner(release, config, self.scheduler, output_sinks, secrets)
        )
        self.budget = MemoryBudget(
            budget_mb,
            accounting=config.memory_accounting,
            policy=eviction.make_policy(config.eviction),
            clock=self.clock,
        )
        settings = policy.Settings.of(config)
        self.pools = {
            name: FunctionPool(
                spec,
                settings,
                scheduler=self.scheduler,
                budget=self.budget,
                spawner=self.spawner,
                emit=self.emit,
                learn_keep_alive=config.keep_alive_policy == "learned",
            )
            for name, spec in release.functions.items()
        }
        for pool in self.pools.values():
            self.budget.add(pool)
        self.budget.carries_history = lambda name: self.pools[name].carries_history()
        self._reaper: Timer | None = None
        if memory_probe is None:
            pressure = (
                None if config.memory_pressure_pct == 0 else pressure_file(config.cgroup_root)
            )
            memory_probe = KernelProbe(pressure)
        self.memory_watch = MemoryWatch(
            self.scheduler,
            self.budget,
            lambda: [i for pool in self.pools.values() for i in pool.instances],
            memory_probe,
            config.memory_sample_s,
            config.memory_pressure_pct,
        )

    def output_budgets(self) -> Mapping[str, OutputBudget]:
        """Each function's output budget (its counts of dropped and cut lines), when the
        instances are the default spawner's; else none."""
        if isinstance(self.spawner, ZygoteSpawner):
            return self.spawner.output_budgets
        return {}

    @property
    def memory_used_mb(self) -> float:
        """What the live and starting instances book against the budget."""
        return self.budget.used_mb

    def memory_report(self) -> MemoryReport:
        return self.budget.report()

    async def start(self) -> None:
        await self.spawner.start()
        self._schedule_reap()
        self.memory_watch.start()

    async def close(self) -> None:
        """Stops every instance and the spawner. In-flight calls fail; drain first."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        self.memory_watch.close()
        for pool in self.pools.values():
            pool.close()
        await self.spawner.close()

    # -- calls -----------------------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str = "POST",
        path: str = "/",
        query: str = "",
        headers: dict[str, str] | None = None,
        started: float | None = None,
        deadline: float | None = None,
        warm_only: bool = False,
    ) -> Invocation:
        """Runs ``name`` on a warm instance or a new one. Raises ``errors.HttpError``.
        ``started`` (this clock) is when the request arrived: time already spent counts
        against the function's timeout; ``deadline`` (this clock: the time a forwarding node
        had left, counted from the arrival here) can only shorten it. ``warm_only``: see
        ``FunctionPool.invoke``."""
        pool = self._pool(name)
        timeout = pool.spec.timeout_s
        start = self.clock() if started is None else started
        if deadline is not None:
            if deadline <= self.clock():
                # Out of time before it could be dispatched. Dispatching it with no time left
                # would arm an expired timer and kill a warm instance, and its other calls.
                exc = errors.FunctionTimeout(f"{name!r} arrived past its deadline; it did not run")
                self.stats.raised(name, self.clock() - start, request_id, exc)
                raise exc
            timeout = min(timeout, deadline - start)
        context = self._context(pool, request_id, method, path, query, headers, start, timeout)
        try:
            result, cold = await pool.invoke(body, context, start + timeout, warm_only, request_id)
        except errors.HttpError as exc:
            # A forwarded call refused unrun (not warm, busy) is the sender's to run elsewhere.
            if not (warm_only and isinstance(exc, errors.NotWarm | errors.Busy)):
                self.stats.raised(name, self.clock() - start, request_id, exc)
            raise
        return self._ran(name, start, request_id, result, cold)

    def call_now(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str] | None,
        started: float,
    ) -> PendingCall | None:
        """``invoke``'s local call (no ``deadline``, not ``warm_only``) sent at once, with no
        task, when a slot of ``name`` is free here; ``finish_now`` takes its answer once its
        future is done. None, and nothing changes, when no slot is free now. Raises
        ``errors.HttpError`` as ``invoke`` does."""
        pool = self._pool(name)
        timeout = pool.spec.timeout_s
        context = self._context(pool, request_id, method, path, query, headers, started, timeout)
        try:
            return pool.call_now(body, context, started + timeout, request_id)
        except errors.HttpError as exc:
            self.stats.raised(name, self.clock() - started, request_id, exc)
            raise

    def finish_now(
        self, name: str, started: float, request_id: str, call: PendingCall
    ) -> Invocation:
        """The outcome of ``call_now``'s call, whose future is done: what ``invoke`` returns
        or raises, counted the same way."""
        self.pools[name].ended(call)
        exc = call.future.exception()
        if exc is not None:
            if isinstance(exc, errors.HttpError):
                self.stats.raised(name, self.clock() - started, request_id, exc)
            raise exc
        return self._ran(name, started, request_id, call.future.result(), call.cold)

    def _context(
        self,
        pool: FunctionPool,
        request_id: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str] | None,
        start: float,
        timeout: float,
    ) -> dict[str, Any] | None:
        """What the handler sees of the call, or None when it takes no context (it would not
        see it: not built, not sent)."""
        if not pool.takes_context:
            return None
        return {
            "request_id": request_id,
            "method": method,
            "path": path,
            "query": query,
            "headers": headers or {},
            "deadline": time.time() + timeout - (self.clock() - start),
        }

    def _ran(
        self, name: str, start: float, request_id: str, result: Result, cold: bool
    ) -> Invocation:
        if result.status < 500:
            self.stats.ran(name, self.clock() - start)
        else:  # an exec function's own error answer
            self.stats.answered_error(name, self.clock() - start, request_id, result.status)
        return Invocation(result.body, result.content_type, cold, result.status, result.headers)

    def pool(self, name: str) -> PoolView:
        """The function's pool, to read; ``UnknownFunction`` (404) if the release has no such
        name."""
        return self._pool(name)

    def prewarm(self, name: str) -> bool:
        """Starts an instance of ``name`` that no call waits for, if none is here or starting
        and memory is free without evicting anything; true if it started one."""
        return self._pool(name).prewarm()

    def pin(self, pins: Mapping[str, int], lease_s: float) -> dict[str, int]:
        """The master's placement for this node (min_instances): keep ``pins[name]``
        instances of each function for ``lease_s`` (a function not named is pinned no more).
        Returns the instances of each pinned function here; ``UnknownFunction`` for a name
        the release lacks (nothing changes then)."""
        for name in pins:
            self._pool(name)
        until = self.clock() + lease_s
        placed = {}
        for name, pool in self.pools.items():
            count = pins.get(name, 0)
            if count or pool.pinned:
                instances = pool.pin(count, until)
                if count:
                    placed[name] = instances
        return placed

    def share_histories(
        self,
        warm_elsewhere: Callable[[str], bool] | None = None,
        kept: Callable[[], bool] | None = None,
    ) -> None:
        """The control plane carries each function's idle history from the node where it
        went cold to the next that starts it (``adopt_history``): a pool hands its history
        off with its ``FunctionCold`` instead of keeping it (``IdleTracker.hand_off``), while
        ``kept()`` says the master keeps them (None: always; a master of an older release,
        in a rollout, does not), and skips the prewarm its windows scheduled before when
        ``warm_elsewhere(function)`` (as far as this node knows: its route cache, its table
        copy) says another node has started the function since."""
        for pool in self.pools.values():
            pool.hands_off_history = True
            pool.histories_kept = kept
            pool.warm_elsewhere = warm_elsewhere

    def adopt_history(self, name: str, data: bytes) -> bool:
        """The master's answer to this node's registration of ``name`` carried the idle
        history the node that served it last left (``idle_summary.py``): the function's
        pool adopts it. False, and nothing changes, for a function the release lacks, bytes
        that are not a valid summary (logged), or a pool that does not learn windows or
        adopted one since it went warm."""
        pool = self.pools.get(name)
        if pool is None:
            return False
        try:
            summary = keepalive.decode_summary(data)
        except idle_summary.BadSummary as exc:
            log.warning("ignoring the idle history of %s the master sent: %s", name, exc)
            return False
        return pool.adopt_history(summary)

    def start_would_evict(self, name: str) -> bool:
        """Whether starting an instance of ``name`` now would evict another function's idle
        instance (or find no room): the router asks before it starts one."""
        return self.budget.would_evict(self._pool(name).spec)

    def functions(self) -> list[dict[str, Any]]:
        """Each function's settings and its instances on this node."""
        return [self.function(name) for name in self.pools]

    def function(self, name: str) -> dict[str, Any]:
        """``name``'s settings and its instances on this node; ``UnknownFunction`` (404) if
        the release has no such name."""
        pool = self._pool(name)
        return {**pool.spec.describe(), **pool.stats(), **pool.keep_alive_view()}

    def keep_alive(self) -> Iterator[tuple[str, Windows, int]]:
        """Each function's keep-alive windows in force here, and how many instances its
        prewarm timer started (for /metrics)."""
        for name, pool in self.pools.items():
            yield name, pool.windows, pool.prewarms

    def _pool(self, name: str) -> FunctionPool:
        pool = self.pools.get(name)
        if pool is None:
            raise errors.UnknownFunction(
                f"no function named {name!r} in release {self.release.name} "
                f"{self.release.version}; see GET /v1/functions"
            )
        return pool

    # -- events and keep-alive -------------------------------------------------------------

    def _count_start(self, event: RuntimeEvent) -> None:
        if isinstance(event, InstanceStarted):
            self.stats.started(event.function)

    def emit(self, event: RuntimeEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("runtime event listener failed on %r", event)

    def reap_idle(self) -> int:
        """Stops the instances idle past their function's keep-alive window (learned or
        fixed: ``--keep-alive-policy``); returns how many."""
        now = self.clock()
        return sum(pool.reap_idle(now) for pool in self.pools.values())

    def _schedule_reap(self) -> None:
        self._reaper = self.scheduler.call_later(self.config.reap_interval_s, self._reap)

    def _reap(self) -> None:
        try:
            self.reap_idle()
        finally:
            self._schedule_reap()
