"""``Replicator``: a replica's Subscribe loop, keeping a ``ReplicaCopy`` fed.

It subscribes from the copy's resume point, applies each update, and on a gap, a stream drop
or an error re-subscribes (after a backoff if the master was unreachable), so a dropped stream
resumes without losing a delta. It follows forks: after a failover, a new master that kept
its copy resumes it with the deltas it missed, the fork and the deltas after it, when its
version is one the new master's table passed through (``tierfaas.control.lineage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from grpc import aio

from tierfaas.control import wire
from tierfaas.control.constants import REPLICATE_BACKOFF_S, REPLICATE_MAX_BACKOFF_S
from tierfaas.control.replica_copy import Outcome, ReplicaCopy
from tierfaas.control.table import Update
from tierfaas.control.transport import (
    ChannelClosed,
    Channels,
    NotMaster,
    Sleep,
    backoff_delays,
)
from tierfaas.supervision import Supervisor

log = logging.getLogger("tierfaas.control.replicator")


class Replicator:
    """Feeds ``copy`` from the master's Subscribe stream until stopped."""

    def __init__(
        self,
        copy: ReplicaCopy,
        *,
        master: Callable[[], str | None],
        channels: Channels,
        replica: str = "",
        initial_backoff_s: float = REPLICATE_BACKOFF_S,
        max_backoff_s: float = REPLICATE_MAX_BACKOFF_S,
        sleep: Sleep = asyncio.sleep,
        on_update: Callable[[Update, Outcome], None] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.copy = copy
        self._master = master
        self._channels = channels
        self._replica = replica
        self._delay = backoff_delays(initial_backoff_s, max_backoff_s)
        self._sleep = sleep
        self._on_update = on_update
        self._task: asyncio.Task[None] | None = None
        self._supervisor = supervisor or Supervisor()
        self.subscriptions = 0

    def start(self, after_s: float = 0.0) -> None:
        """Subscribes, after ``after_s`` (a standby with no copy: its snapshot waits)."""
        self._task = self._supervisor.spawn("replicator", lambda: self.run(after_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self, after_s: float = 0.0) -> None:
        if after_s > 0:
            await self._sleep(after_s)
        attempt = 0
        while True:
            target = self._master()
            if target is None:
                attempt += 1
                await self._sleep(self._delay(attempt))
                continue
            version, lineage = self.copy.resume_point()
            self.subscriptions += 1
            try:
                stream = self._channels.get(target).subscribe(
                    version, lineage, self._replica, follows_forks=True
                )
                async for update in stream:
                    attempt = 0
                    outcome = self.copy.apply(update)
                    if self._on_update is not None:
                        self._on_update(update, outcome)
                    if outcome is Outcome.GAP:
                        log.info("gap at version %d: re-subscribing", self.copy.version)
                        break
                else:
                    attempt += 1  # the stream ended (the master stepped down?)
                    await self._sleep(self._delay(attempt))
            except (NotMaster, aio.AioRpcError, ChannelClosed, wire.BadMessage) as exc:
                attempt += 1
                log.debug("subscription to %s failed: %s", target, exc)
                await self._sleep(self._delay(attempt))
