"""``WriteQueue``: the runtime's warm/cold events -> batched Register/Unregister to the master,
and this node's side of anti-entropy.

It guarantees that reporting an event never blocks or fails the request that caused it:
``warm()``/``cold()`` only record the function's latest state. One background task sends what
is pending as one Register and one Unregister call; while a call is in flight (a slow master)
new events coalesce into the next call, and a function that went warm then cold meanwhile is
sent once, as its final state. A failed call is retried with exponential backoff; a
``FAILED_PRECONDITION`` with ``x-tierfaas-master`` redirects to the named master at once.

The table is soft state, and the queue repairs it whatever was lost (``digest.py``): when
nothing is pending or in flight, the same task asks every ``DIGEST_PERIOD_S`` for the digest of
what the table holds for this run (the node's replica's copy; the master when the copy differs)
and re-announces the whole warm set when the master's differs from the node's (a node declared
dead and back with the same run, a batch lost with a master that stepped down). Pairs the master
rejects (it does not hold this run alive yet) are not dropped: the next check comes within
``DIGEST_RETRY_S`` and repeats (backing off up to the period) until the master holds the run,
then announces. ``announce()`` after a master change resends the whole warm set at once.

Idle histories (``control/histories.py``): a function's Unregister carries the history its
``FunctionCold`` event holds (up to ``HISTORY_BYTES_PER_CALL`` per call; past it, or when an
announce replaces the pending writes, a history is dropped: soft state), and the histories
the master's answer to a Register hands back go to ``on_history`` (the runtime's
``adopt_history``), off every call's path. ``master_keeps_histories``: the last answer said
the master keeps them (a master of an older release does not say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import grpc
from grpc import aio

from tierfaas.clock import Clock, monotonic
from tierfaas.control import tierfaas_pb2 as pb
from tierfaas.control.api import Write
from tierfaas.control.constants import (
    DIGEST_PERIOD_S,
    DIGEST_RETRY_S,
    FLUSH_POLL_S,
    FLUSH_TIMEOUT_S,
    HISTORY_BYTES_PER_CALL,
    WRITE_BACKOFF_S,
    WRITE_BATCH_MAX,
    WRITE_MAX_BACKOFF_S,
)
from tierfaas.control.digest import CheckTimer, Verdict, digest, verdict
from tierfaas.control.entropy_metrics import AntiEntropyMetrics
from tierfaas.control.table import Op
from tierfaas.control.transport import Channels, ControlClient, NotMaster, Sleep, backoff_delays
from tierfaas.runtime.events import FunctionCold, FunctionWarm, RuntimeEvent
from tierfaas.supervision import Supervisor

log = logging.getLogger("tierfaas.control.write_queue")


class WriteQueue:
    """This node's Register/Unregister stream to the master (see the module docstring).

    ``master`` returns the master's control address as the node's topology sees it (None if
    unknown); ``replica`` the address of the replica whose copy this node checks its entries
    against (None: the master). ``max_batch`` bounds the pairs per call;
    ``initial_backoff_s``/``max_backoff_s`` bound retries;
    ``digest_period_s``/``digest_retry_s`` pace the anti-entropy checks on ``clock``; ``sleep``
    is injectable for tests. ``metrics`` counts the checks, repairs and rejected writes for
    /metrics (a private registry if None)."""

    def __init__(
        self,
        node: str,
        epoch: int,
        *,
        master: Callable[[], str | None],
        channels: Channels,
        replica: Callable[[], str | None] = lambda: None,
        max_batch: int = WRITE_BATCH_MAX,
        initial_backoff_s: float = WRITE_BACKOFF_S,
        max_backoff_s: float = WRITE_MAX_BACKOFF_S,
        digest_period_s: float = DIGEST_PERIOD_S,
        digest_retry_s: float = DIGEST_RETRY_S,
        clock: Clock = monotonic,
        sleep: Sleep = asyncio.sleep,
        supervisor: Supervisor | None = None,
        metrics: AntiEntropyMetrics | None = None,
    ) -> None:
        self.node, self.epoch = node, epoch
        self._supervisor = supervisor or Supervisor()
        self.metrics = metrics or AntiEntropyMetrics()
        self._master = master
        self._replica = replica
        self._channels = channels
        self._max_batch = max_batch
        self._delay = backoff_delays(initial_backoff_s, max_backoff_s)
        self._sleep = sleep
        self._pending: dict[str, Op] = {}
        # The idle history each pending REMOVE carries (``FunctionCold.history``).
        self._histories: dict[str, bytes] = {}
        # Takes (function, idle history) from the master's answers to Register.
        self.on_history: Callable[[str, bytes], object] | None = None
        # The last master that answered keeps idle histories (an older release does not).
        self.master_keeps_histories = False
        self._announce: frozenset[str] | None = None
        self._redirect: tuple[str | None, str] | None = None  # (for master, go to)
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()  # an announce not yet taken: cuts a backoff short
        self._task: asyncio.Task[None] | None = None
        # What this node has warm: FunctionWarm seen and no FunctionCold since. It is what an
        # announce sends and what a check compares with the master's digest.
        self.warm_set: set[str] = set()
        self.check = CheckTimer(clock, period_s=digest_period_s, retry_s=digest_retry_s)
        self.sent = 0
        self.failures = 0
        self.rejected = 0  # pairs the master refused (this run was not alive in its view)
        self.repairs = 0  # announces a digest mismatch caused

    # -- the caller's side: never blocks -----------------------------------------------------

    def on_event(self, event: RuntimeEvent) -> None:
        """An ``EventListener`` for the runtime."""
        if isinstance(event, FunctionWarm):
            self.warm(event.function)
        elif isinstance(event, FunctionCold):
            self.cold(event.function, event.history)

    def warm(self, function: str) -> None:
        self.warm_set.add(function)
        self._pending[function] = Op.ADD
        self._histories.pop(function, None)
        self._wake.set()

    def cold(self, function: str, history: bytes = b"") -> None:
        """``history``: the function's idle history here, for the master to keep."""
        self.warm_set.discard(function)
        self._pending[function] = Op.REMOVE
        if history:
            self._histories[function] = history
        else:
            self._histories.pop(function, None)
        self._wake.set()

    def announce(self, functions: Sequence[str] | frozenset[str]) -> None:
        """Sends ``functions`` as the whole warm set (after a master change, or a check that
        found the master's differ); it becomes the warm set and replaces pending writes."""
        self.warm_set = set(functions)
        self._announce = frozenset(functions)
        self._pending.clear()
        self._histories.clear()
        self._wake.set()
        self._kick.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + (self._announce is not None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = self._supervisor.spawn("write-queue", self._run)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flushed(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Waits until nothing is pending or in flight (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self.pending or self._wake.is_set() or self._in_flight:
                await asyncio.sleep(FLUSH_POLL_S)

    _in_flight = False

    def _target(self) -> str | None:
        master = self._master()
        if self._redirect is not None:
            if self._redirect[0] == master:
                return self._redirect[1]
            self._redirect = None  # the topology moved on: trust it again
        return master

    async def _run(self) -> None:
        attempt = 0
        while True:
            await self._idle()
            self._wake.clear()
            if not (self._pending or self._announce is not None):
                if self.check.due():
                    await self._reconcile()
                continue
            while self._pending or self._announce is not None:
                target = self._target()
                if self._kick.is_set():
                    attempt = 0  # a new master: the backoff earned against the old one ends
                taken = self._take()
                self._in_flight = True
                try:
                    if target is None:
                        raise ConnectionError("no master known")
                    await self._send(self._channels.get(target), *taken)
                    attempt = 0
                except NotMaster as exc:
                    self._restore(*taken)
                    followed = self._redirect is not None
                    if exc.master and exc.master != target:
                        self._redirect = (self._master(), exc.master)
                        if not followed:
                            continue  # redirected: retry there at once (once, no ping-pong)
                    attempt += 1
                    await self._backoff(attempt)
                except asyncio.CancelledError:
                    self._restore(*taken)  # kept for a later start()
                    raise
                except (aio.AioRpcError, ConnectionError) as exc:
                    self._restore(*taken)
                    self.failures += 1
                    attempt += 1
                    log.debug("writes to %s failed (%s); attempt %d", target, exc, attempt)
                    # A hint may name a master that is dead: a node not yet promoted still
                    # points at its predecessor. After a failure, trust the topology again.
                    self._redirect = None
                    await self._backoff(attempt)
                finally:
                    self._in_flight = False

    async def _idle(self) -> None:
        """Waits for a write, or until the next anti-entropy check is due."""
        if self._wake.is_set():
            return
        sleep = asyncio.ensure_future(self._sleep(self.check.delay()))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleep, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            wake.cancel()

    async def _reconcile(self) -> None:
        """One anti-entropy check (nothing pending or in flight): asks this node's replica, or
        the master when the replica's copy differed or none is assigned, for the digest of
        this run's entries, and re-announces the warm set if the master's differs."""
        replica = None if self.check.ask_master else self._replica()
        target = replica or self._target()
        outcome: Verdict | None = None
        local = digest(self.warm_set)
        self._in_flight = True
        try:
            if target is None:
                return
            view = await self._channels.get(target).digest(self.node, self.epoch)
            outcome = verdict(local, view)
        except NotMaster as exc:
            # A master that stepped down, or a replica with no copy yet: ask the master soon.
            if replica is None and exc.master and exc.master != target and self._redirect is None:
                self._redirect = (self._master(), exc.master)
            outcome = Verdict.WAIT
        except aio.AioRpcError as exc:
            log.debug("digest check with %s failed: %s", target, exc)
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A peer of a release without Digest (a rollout): nothing to compare with;
                # the writes and the announce on a master change still reach the master.
                outcome = Verdict.AGREE
            elif replica is not None:
                outcome = Verdict.WAIT  # the master answers instead, soon
            else:
                self._redirect = None  # unreachable: try again within retry_s
        except ConnectionError as exc:
            log.debug("digest check with %s failed: %s", target, exc)
        finally:
            self._in_flight = False
            self.check.checked(outcome)
            self.metrics.checked(outcome)
        if outcome is Verdict.ANNOUNCE:
            self.repairs += 1
            self.metrics.repairs.inc()
            log.info(
                "the master's entries for %s differ from its %d warm functions: re-announcing",
                self.node,
                local.count,
            )
            self.announce(frozenset(self.warm_set))

    def _rejected(self, count: int) -> None:
        """The master refused ``count`` pairs: it does not hold this run alive (yet). They
        are not dropped: a check within ``DIGEST_RETRY_S``, repeated until the master holds
        the run again, re-announces the warm set then."""
        if count:
            self.rejected += count
            self.metrics.writes_rejected.inc(count)
            log.info("the master rejected %d writes of %s: checking again soon", count, self.node)
            self.check.hurry()

    async def _backoff(self, attempt: int) -> None:
        """Waits before a retry. An announce (the master changed) cuts the wait short: the
        new master should learn this node's warm set now, not after a backoff of up to
        ``max_backoff_s`` earned against the dead one."""
        if self._kick.is_set():
            return
        sleep = asyncio.ensure_future(self._sleep(self._delay(attempt)))
        kick = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait((sleep, kick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            kick.cancel()

    def _take(self) -> tuple[frozenset[str] | None, dict[str, Op]]:
        announce, self._announce = self._announce, None
        if announce is not None:
            self._kick.clear()
        taken: dict[str, Op] = {}
        for function in list(self._pending)[: self._max_batch]:
            taken[function] = self._pending.pop(function)
        return announce, taken

    def _restore(self, announce: frozenset[str] | None, taken: dict[str, Op]) -> None:
        """Puts failed writes back, unless a newer write or announce replaced them."""
        if announce is not None and self._announce is None:
            # The pairs sent with the announce, then the writes made since, are newer than
            # the announced set: fold them in, in that order (without ``taken``, a function
            # that went warm in the same failed call would be missing from the next announce).
            warm = set(announce)
            for function, op in [*taken.items(), *self._pending.items()]:
                (warm.add if op is Op.ADD else warm.discard)(function)
            self._announce = frozenset(warm)
            self._pending.clear()
            self._histories.clear()
            return
        if self._announce is not None:
            return
        for function, op in taken.items():
            self._pending.setdefault(function, op)

    async def _send(
        self, client: ControlClient, announce: frozenset[str] | None, taken: dict[str, Op]
    ) -> None:
        if announce is not None:
            reply = await client.announce(self.node, self.epoch, sorted(announce))
            self._rejected(len(reply.rejected))
            self.master_keeps_histories = reply.keeps_histories
            self.sent += len(announce)
        adds = [Write(Op.ADD, f, self.node, self.epoch) for f, op in taken.items() if op is Op.ADD]
        removes = self._removes([f for f, op in taken.items() if op is Op.REMOVE])
        if adds:
            reply = await client.register(adds)
            self._rejected(len(reply.rejected))
            self.master_keeps_histories = reply.keeps_histories
            self._adopt(reply.histories, {w.function for w in adds})
        if removes:
            reply = await client.unregister(removes)
            self._rejected(len(reply.rejected))
            self.master_keeps_histories = reply.keeps_histories
            for w in removes:
                if self._histories.get(w.function) is w.history:
                    del self._histories[w.function]  # sent (a newer one stays)
        self.sent += len(adds) + len(removes)

    def _removes(self, functions: Sequence[str]) -> list[Write]:
        """The REMOVE writes of ``functions``, each with its idle history while the call's
        ``HISTORY_BYTES_PER_CALL`` last (the rest are dropped)."""
        removes = []
        budget = HISTORY_BYTES_PER_CALL
        for function in functions:
            history = self._histories.get(function, b"")
            if len(history) > budget:
                del self._histories[function]
                history = b""
            budget -= len(history)
            removes.append(Write(Op.REMOVE, function, self.node, self.epoch, history))
        return removes

    def _adopt(self, histories: Sequence[pb.Route], registered: set[str]) -> None:
        """The master's answer to a Register handed back these functions' histories."""
        if self.on_history is None:
            return
        for route in histories:
            if route.function in registered and route.history:
                try:
                    self.on_history(route.function, route.history)
                except Exception:
                    # Never at the cost of the writes: a history is soft state.
                    log.exception("adopting the idle history of %s failed", route.function)
