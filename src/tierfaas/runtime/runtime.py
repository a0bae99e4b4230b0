"""The node's runtime: one pool per function, a shared zygote, a memory budget and a reaper.

The memory budget is the sum of ``memory_mb`` of the live and starting instances; a start that
would exceed it first evicts the least recently used idle instances of other functions, and
waits (then 429) if nothing idle is left to evict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tierfaas import errors
from tierfaas.clock import Clock, monotonic
from tierfaas.config import NodeConfig
from tierfaas.manifest import FunctionSpec, Release
from tierfaas.runtime.events import EventListener, RuntimeEvent
from tierfaas.runtime.instance import Instance
from tierfaas.runtime.pool import FunctionPool
from tierfaas.runtime.zygote_client import ZygoteClient

log = logging.getLogger(__name__)


@dataclass(slots=True)  # not frozen: a frozen init costs 3x, one per call
class Invocation:
    body: bytes
    content_type: str
    cold: bool


class Runtime:
    def __init__(
        self,
        release: Release,
        config: NodeConfig,
        clock: Clock = monotonic,
        listeners: Iterable[EventListener] = (),
    ) -> None:
        self.release = release
        self.config = config
        self.clock = clock
        self.listeners = list(listeners)
        self.zygote = ZygoteClient(config.start_timeout_s)
        self.pools = {
            name: FunctionPool(spec, self, clock) for name, spec in release.functions.items()
        }
        self.memory_used_mb = 0
        self.next_instance_id = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.reaper: asyncio.Task[None] | None = None
        for spec in release.functions.values():
            if spec.memory_mb > config.memory_budget_mb:
                raise errors.ConfigError(
                    "memory_budget_mb",
                    f"{config.memory_budget_mb} MiB is less than function {spec.name!r} needs "
                    f"({spec.memory_mb} MiB)",
                )

    async def start(self) -> None:
        await self.zygote.start()
        self.reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def close(self) -> None:
        """Stops every instance and the zygote. In-flight calls fail; drain first."""
        if self.reaper is not None:
            self.reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reaper
        for pool in self.pools.values():
            for instance in list(pool.instances):
                instance.kill("shutdown")
        for task in list(self.tasks):
            task.cancel()
        await self.zygote.close()

    # -- calls -----------------------------------------------------------------------------

    async def invoke(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str,
        method: str = "POST",
        query: str = "",
        headers: dict[str, str] | None = None,
        started: float | None = None,
        deadline: float | None = None,
        warm_only: bool = False,
    ) -> Invocation:
        """Runs ``name`` on a warm instance or a new one. Raises ``errors.HttpError``.
        ``started`` (this clock) is when the request arrived: time already spent counts
        against the function's timeout; ``deadline`` (Unix time, from a forwarding node) can
        only shorten it. ``warm_only``: see ``FunctionPool.invoke``."""
        pool = self.pool(name)
        timeout = pool.spec.timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.time())
            if timeout <= 0:
                # Sent on by a node that has given up on it already (its bytes can arrive late:
                # a partition heals and TCP delivers them). Dispatching it with no time left
                # would arm an expired timer and kill a warm instance, and its other calls.
                raise errors.FunctionTimeout(f"{name!r} arrived past its deadline; it did not run")
        start = self.clock() if started is None else started
        context: dict[str, Any] | None = None
        if pool.takes_context:  # else the handler would not see it: don't build or send it
            context = {
                "request_id": request_id,
                "method": method,
                "query": query,
                "headers": headers or {},
                "deadline": time.time() + timeout - (self.clock() - start),
            }
        result, cold = await pool.invoke(body, context, start + timeout, warm_only)
        return Invocation(result.body, result.content_type, cold)

    def pool(self, name: str) -> FunctionPool:
        """The function's pool; ``UnknownFunction`` (404) if the release has no such name."""
        pool = self.pools.get(name)
        if pool is None:
            raise errors.UnknownFunction(
                f"no function named {name!r} in release {self.release.name} "
                f"{self.release.version}; see GET /v1/functions"
            )
        return pool

    def functions(self) -> list[dict[str, Any]]:
        """Each function's settings and its instances on this node."""
        return [{**pool.spec.describe(), **pool.stats()} for pool in self.pools.values()]

    # -- services for the pools ------------------------------------------------------------

    def new_instance(self, spec: FunctionSpec) -> Instance:
        self.next_instance_id += 1
        instance = Instance(self.next_instance_id, spec, self.zygote, self.clock())
        instance.max_body = self.config.max_response_bytes
        return instance

    def spawn_frame(self, spec: FunctionSpec) -> dict[str, Any]:
        def entry(point: Any) -> dict[str, str] | None:
            if point is None:
                return None
            return {"module": point.module, "attr": point.attr, "path": str(point.path)}

        return {
            "name": spec.name,
            "root": str(self.release.root),
            "handler": entry(spec.handler),
            "init": entry(spec.init),
            "env": spec.env,
            "memory_mb": spec.memory_mb,
            "concurrency": spec.concurrency,
            "threads": spec.threads,
            "max_response_bytes": self.config.max_response_bytes,
            "debug": self.config.debug,
        }

    def reserve_memory(
        self, memory_mb: int, exclude: FunctionPool | None = None, evict: bool = True
    ) -> bool:
        """Books ``memory_mb`` for a new instance, evicting LRU idle instances if needed (and
        ``evict``)."""
        budget = self.config.memory_budget_mb
        if self.memory_used_mb + memory_mb > budget and not evict:
            return False
        if self.memory_used_mb + memory_mb > budget:
            idle = [
                instance
                for pool in self.pools.values()
                if pool is not exclude
                for instance in pool.idle_instances()
            ]
            idle.sort(key=lambda instance: instance.last_used)
            for instance in idle:
                if self.memory_used_mb + memory_mb <= budget:
                    break
                instance.kill("evicted")
                # Its memory is free from now on, though its process ends a moment later.
                instance.holds_memory = False
                self.memory_used_mb -= instance.spec.memory_mb
            if self.memory_used_mb + memory_mb > budget:
                return False
        self.memory_used_mb += memory_mb
        return True

    def release_memory(self, memory_mb: int) -> None:
        self.memory_used_mb = max(0, self.memory_used_mb - memory_mb)

    def emit(self, event: RuntimeEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("runtime event listener failed on %r", event)

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def reap_idle(self) -> int:
        now = self.clock()
        return sum(pool.reap_idle(now) for pool in self.pools.values())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            self.reap_idle()
