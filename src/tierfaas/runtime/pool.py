"""The instances of one function on this node, and who gets a free one.

Theory of operation: a call takes a *slot* (an instance with fewer than ``concurrency`` calls
in flight), preferring the most recently used instance so that the others go idle and are
reaped. With no free slot, the call joins a bounded FIFO of waiters, and ``policy.py`` decides
whether instances start for it now, after the scale-out wait, or once a start under way ends,
and when it gives up (429 with Retry-After). A started instance, or a slot freed by a finished
call, goes to the oldest waiter. A waiter that may start instances never times out while a
start is under way: its ``queue_timeout_s`` counts from when the last start it waited through
ended.

This module holds only the mechanics: the futures of queued calls, handing out slots, the
timers (on the injected ``Scheduler``), and starting instances through the ``Spawner`` with
memory booked in the ``MemoryBudget``. Keep-alive likewise: the pool tells an ``IdleTracker``
of each call's arrival and end, and stops and prewarms instances as the windows
``keepalive.py`` decides say. All of it runs on the node's event loop and never
blocks: the instances are other processes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tierfaas import errors
from tierfaas.clock import Scheduler, Timer
from tierfaas.manifest import FunctionSpec
from tierfaas.runtime import eviction, idle_summary, keepalive, policy
from tierfaas.runtime.budget import MemoryBudget
from tierfaas.runtime.events import (
    EventListener,
    FunctionCold,
    FunctionWarm,
    InstanceStarted,
    InstanceStopped,
)
from tierfaas.runtime.instance import Result
from tierfaas.runtime.meter import BusyMeter
from tierfaas.runtime.ports import PoolInstance, Spawner
from tierfaas.runtime.zygote_client import ZygoteError
from tierfaas.tracing import record
from tierfaas.tracing.spans import CURRENT

log = logging.getLogger(__name__)

Waiter = asyncio.Future[PoolInstance]
Restart = Callable[[float], None]  # moves a waiter's give-up timer to the given time


@dataclass(slots=True)
class PendingCall:
    """A call ``FunctionPool.call_now`` sent: its future (the instance's answer), the
    instance whose slot it holds, when it was dispatched, and whether it waited for a start."""

    future: asyncio.Future[Result]
    instance: PoolInstance
    dispatched: float
    cold: bool


class FunctionPool:
    def __init__(
        self,
        spec: FunctionSpec,
        settings: policy.Settings,
        *,
        scheduler: Scheduler,
        budget: MemoryBudget,
        spawner: Spawner,
        emit: EventListener,
        learn_keep_alive: bool = False,
    ) -> None:
        """``learn_keep_alive``: keep-alive and prewarm windows learned from the function's
        idle times here (``keepalive.py``); else its fixed ``keep_alive_s``."""
        self.spec = spec
        self.settings = settings
        self.scheduler = scheduler
        self.clock = scheduler.clock
        self.budget = budget
        self.spawner = spawner
        self.emit = emit
        self.instances: list[PoolInstance] = []
        self.starting = 0
        self.waiters: deque[Waiter] = deque()
        # Whether the handler takes a context, as its first instance's READY said; callers
        # skip building one when it does not. Until then, assume it does.
        self.takes_context = True
        # FunctionWarm was emitted and FunctionCold not since: the node is registered for
        # this function from the moment its first instance *starts* (SPEC 4.5: register at
        # the same time as the cold start), so other nodes send their calls here to queue
        # behind it instead of starting instances of their own.
        self.registered = False
        self.last_start_s: float | None = None  # how long this function's last start took
        self.call_s: float | None = None  # recent time of a call here (moving average)
        self.meter = BusyMeter(self.clock, policy.BUSY_WINDOW_S)
        # How often this function is called here: its instances' value to the eviction policy.
        self.calls = eviction.CallRate()
        # The same, by how many instances' worth of its calls were in flight here when each
        # arrived (its depth): how often a second, third... instance is needed.
        self.calls_by_depth: list[eviction.CallRate] = []
        self._calls_in_flight = 0
        # Keep-alive: the windows in force (refreshed each reap round from the idle times
        # when learning), and the timer of the next prewarm.
        self.idle = keepalive.IdleTracker() if learn_keep_alive else None
        self.windows = keepalive.fixed_windows(spec.keep_alive_s)
        self._windows_of = -1  # the histogram's ``changes`` the windows were computed from
        self._prewarm_timer: Timer | None = None
        self.prewarms = 0  # instances started by the prewarm timer
        # The function's idle history leaves with its FunctionCold (the control plane carries
        # it to the node that starts the function next: ``Runtime.share_histories``), and
        # whether the function is warm on another node, as this node knows.
        self.hands_off_history = False
        self.histories_kept: Callable[[], bool] | None = None  # None: they always are
        self.warm_elsewhere: Callable[[str], bool] | None = None
        self.refresh_windows()
        self._tasks: set[asyncio.Task[None]] = set()
        # Instances the master placed here for min_instances, until the lease ends (``pin``):
        # neither reaped nor evicted meanwhile.
        self.pinned = 0
        self.pinned_until = -math.inf
        # Calls waiting here that may start instances (how to restart each one's give-up
        # timer), and those of them held through a start under way.
        self._local_waiters: dict[Waiter, Restart] = {}
        self._behind_start: set[Waiter] = set()
        # Forwarded calls queued behind a start: how to restart each one's timer, and its
        # deadline, once no start is under way...
        self._forwarded_behind_start: dict[Waiter, tuple[Restart, float]] = {}
        # ... and those still waiting after it ended: their timer restarts whenever the queue
        # moves, so they give up only when no call was served for a start's time.
        self._forwarded_after_start: dict[Waiter, tuple[Restart, float]] = {}

    # -- what others may read (PoolView) ---------------------------------------------------

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s

    def state(self) -> policy.PoolState:
        """This pool now, for the policy."""
        concurrency = self.spec.concurrency
        free = 0
        newest: float | None = None
        for i in self.instances:
            if not i.dead:
                free += concurrency - i.busy
            if newest is None or i.ready_at > newest:
                newest = i.ready_at
        return policy.PoolState(
            settings=self.settings,
            concurrency=concurrency,
            max_instances=self.spec.max_instances,
            instances=len(self.instances),
            free_slots=free,
            starting=self.starting,
            waiters=len(self.waiters),
            last_start_s=self.last_start_s,
            busy_share=self.meter.share(),
            newest_ready_at=newest,
        )

    def can_take(self) -> bool:
        """A free slot now, or room (instances and memory permitting) to start one: what the
        function's home checks before it accepts a forwarded first call."""
        return policy.can_take(self.state())

    def free_slots(self) -> tuple[int, int]:
        """(warm instances, free call slots on them), for the router."""
        live = [i for i in self.instances if not i.dead]
        return len(live), sum(self.spec.concurrency - i.busy for i in live)

    def slot_due_s(self) -> float:
        """Roughly when a slot here frees for a call queued now (see ``policy.slot_due_s``)."""
        live = sum(1 for i in self.instances if not i.dead)
        return policy.slot_due_s(self.call_s, live, self.spec.concurrency, len(self.waiters))

    def recent_load(self) -> float:
        """The busy share of this function's call slots here over the last second, 0..1."""
        return self.meter.share()

    def load(self) -> float:
        """The busy share of this function's call slots here, 0..1 (1 with no instance)."""
        warm, free = self.free_slots()
        capacity = warm * self.spec.concurrency
        return 1.0 if capacity == 0 else 1.0 - free / capacity

    def stats(self) -> dict[str, int]:
        return {
            "instances": len(self.instances),
            "busy": sum(1 for i in self.instances if i.busy),
            "starting": self.starting,
            "queued": len(self.waiters),
            "pinned": self.pinned_now(),
        }

    # -- calls -----------------------------------------------------------------------------

    async def invoke(
        self,
        body: bytes,
        context: dict[str, Any] | None,
        deadline: float,
        warm_only: bool = False,
        request_id: str | None = None,
    ) -> tuple[Result, bool]:
        """Runs one call; returns its result and whether it waited for a cold start.
        ``warm_only`` (a forwarded call): never start an instance, and wait for a slot only
        briefly (``policy.admit_forwarded``); else raise ``NotWarm``/``Busy`` so the sender
        can try elsewhere knowing nothing ran here. A call whose deadline passed while it
        waited is answered 504 unrun: dispatched with no time left, it would kill a warm
        instance. A call is cold when it waited for an instance to start, the first on it or
        not: it arrived before the instance it ran on was ready. ``request_id`` tags the
        instance's output lines while the call runs alone there."""
        arrived = self.clock()
        trace = CURRENT.get()  # None unless tracing is on (``tierfaas.tracing``)
        if warm_only:
            instance = self._free_instance()
            if instance is None:
                instance = await self._wait_for_slot(deadline)
            else:
                instance.busy += 1
                self._metered()
            self._call_arrived(arrived)  # a forwarded call refused unrun never arrived here
        else:
            self._call_arrived(arrived)
            instance = self._free_instance()
            if instance is not None:
                instance.busy += 1
                self._metered()
            else:
                try:
                    instance = await self._acquire()
                except BaseException:
                    self._call_ended(self.clock())
                    raise
        future, dispatched, cold = self._send(
            instance, arrived, body, context, deadline, request_id
        )
        try:
            result = await future
        except BaseException as exc:
            self._ended(instance, dispatched, False)
            if trace is not None:
                record.ran(trace, self.spec.name, arrived, dispatched, instance.last_used,
                           instance.id, cold, exc)  # fmt: skip
            raise
        self._ended(instance, dispatched, True)
        if trace is not None:
            record.ran(trace, self.spec.name, arrived, dispatched, instance.last_used,
                       instance.id, cold)  # fmt: skip
        return result, cold

    def call_now(
        self, body: bytes, context: dict[str, Any] | None, deadline: float, request_id: str
    ) -> PendingCall | None:
        """A local call (``invoke`` without ``warm_only``) sent at once to a free slot, with no
        task: ``ended`` finishes it once its future is done. None, and nothing changes, when
        no slot is free now (``invoke`` then queues it or starts an instance). Raises
        ``FunctionTimeout`` for a deadline already past (the call did not run)."""
        instance = self._free_instance()
        if instance is None:
            return None
        arrived = self.clock()
        instance.busy += 1
        self._metered()
        self._call_arrived(arrived)
        future, dispatched, cold = self._send(
            instance, arrived, body, context, deadline, request_id
        )
        return PendingCall(future, instance, dispatched, cold)

    def ended(self, call: PendingCall) -> None:
        """``call_now``'s call is done (its future resolved, answered or failed)."""
        future = call.future
        answered = not future.cancelled() and future.exception() is None
        self._ended(call.instance, call.dispatched, answered)

    def _send(
        self,
        instance: PoolInstance,
        arrived: float,
        body: bytes,
        context: dict[str, Any] | None,
        deadline: float,
        request_id: str | None,
    ) -> tuple[asyncio.Future[Result], float, bool]:
        """Sends a call on ``instance``, whose slot it holds: its future, when it was
        dispatched, and whether it is cold."""
        cold = arrived < instance.ready_at
        dispatched = self.clock()  # one read: the time left, and the start of the call's run
        remaining = deadline - dispatched
        if remaining <= 0:
            self._release(instance, served=False)
            self._call_ended(instance.last_used)
            raise errors.FunctionTimeout(
                f"{self.spec.name!r} ran out of time waiting for an instance; it did not run"
            )
        return instance.call(body, context, remaining, request_id), dispatched, cold

    def _ended(self, instance: PoolInstance, dispatched: float, answered: bool) -> None:
        self._release(instance)
        ended = instance.last_used  # now, as _release read it
        self._call_ended(ended)
        if answered:
            took = ended - dispatched
            self.call_s = took if self.call_s is None else self.call_s + 0.2 * (took - self.call_s)

    async def _acquire(self) -> PoolInstance:
        """A slot for a local call when none is free now: it waits in the queue, starting
        an instance or scaling out as the policy says."""
        decision = policy.admit(self.state(), self.clock())
        if isinstance(decision, policy.Refuse):
            raise errors.Overloaded(
                f"{self.spec.name!r} is busy on this node and {len(self.waiters)} calls are "
                "already waiting",
                retry_after_s=decision.retry_after_s,
            )
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        if isinstance(decision, policy.Start):
            self._start(decision.count)
        else:
            if decision.scale_out_at is not None:
                self.scheduler.call_at(
                    decision.scale_out_at, functools.partial(self._scale_out, waiter)
                )
            if decision.extra:
                self._start_extra()
        timeout = self.settings.queue_timeout_s
        return await self._await_slot(
            waiter,
            self.clock() + timeout,
            lambda: self._overloaded(timeout),
            local=True,
        )

    async def _wait_for_slot(self, deadline: float) -> PoolInstance:
        """A forwarded call (``warm_only``) with no free slot: it waits as
        ``policy.admit_forwarded`` says, or raises ``NotWarm``/``Busy`` unrun."""
        decision = policy.admit_forwarded(self.state(), self.clock(), deadline)
        name = self.spec.name
        if decision is policy.Rejection.NOT_WARM:
            raise errors.NotWarm(f"{name!r} is not warm on this node")
        if decision is policy.Rejection.BUSY:
            raise errors.Busy(f"every instance of {name!r} here is busy")
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        if decision.extra:
            self._start_extra()
        return await self._await_slot(
            waiter,
            decision.until,
            lambda: errors.Busy(f"no instance of {name!r} here was free in time"),
            forwarded_deadline=deadline if decision.behind_start else None,
        )

    async def _await_slot(
        self,
        waiter: Waiter,
        give_up_at: float,
        error: Callable[[], errors.HttpError],
        local: bool = False,
        forwarded_deadline: float | None = None,
    ) -> PoolInstance:
        """Waits for ``waiter`` (already queued) to be handed a slot; at ``give_up_at`` it
        leaves the queue and raises ``error()``. A ``local`` waiter's timer is held through
        starts (``_hold_through_start``); a forwarded waiter queued behind a start (with its
        ``forwarded_deadline``) gets ``policy.forwarded_give_up_at`` once it ends."""

        def give_up() -> None:
            if not waiter.done():
                self._drop_waiter(waiter)
                waiter.set_exception(error())

        scheduler = self.scheduler
        timer: Timer = scheduler.call_at(give_up_at, give_up)

        def restart(until: float) -> None:
            nonlocal timer
            timer.cancel()
            timer = scheduler.call_at(until, give_up)

        if local:
            self._local_waiters[waiter] = restart
            if self.starting:
                self._hold_through_start()
        elif forwarded_deadline is not None:
            self._forwarded_behind_start[waiter] = (restart, forwarded_deadline)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled just after being handed a slot: give the slot back.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise
        finally:
            timer.cancel()
            self._local_waiters.pop(waiter, None)
            self._behind_start.discard(waiter)
            self._forwarded_behind_start.pop(waiter, None)
            self._forwarded_after_start.pop(waiter, None)

    def _overloaded(self, timeout: float) -> errors.HttpError:
        return errors.Overloaded(
            f"no instance of {self.spec.name!r} became free within "
            f"{timeout:g} s ({len(self.instances)} running, max_instances "
            f"{self.spec.max_instances})",
            retry_after_s=self.settings.retry_after_s,
        )

    def _free_instance(self) -> PoolInstance | None:
        best: PoolInstance | None = None
        limit = self.spec.concurrency
        for i in self.instances:
            if i.busy < limit and not i.dead and (best is None or i.last_used > best.last_used):
                best = i
        return best

    def _release(self, instance: PoolInstance, served: bool = True) -> None:
        instance.busy -= 1
        instance.calls_served += served
        instance.last_used = self.clock()
        if instance.dead:
            self._metered()
        else:
            self._hand_out(instance)

    def _hand_out(self, instance: PoolInstance) -> None:
        served = False
        while instance.busy < self.spec.concurrency and self.waiters:
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            instance.busy += 1
            waiter.set_result(instance)
            served = True
        if served and self._forwarded_after_start:
            # The queue moves: forwarded calls behind it keep waiting.
            now = self.clock()
            for restart, deadline in self._forwarded_after_start.values():
                restart(self._forwarded_give_up_at(now, deadline))
        self._metered()

    def _drop_waiter(self, waiter: Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    def _forwarded_give_up_at(self, now: float, deadline: float) -> float:
        return policy.forwarded_give_up_at(self.settings, self.last_start_s, now, deadline)

    # -- starting and stopping instances ---------------------------------------------------

    def _book(self, evict: bool = True) -> bool:
        """Books memory for one more instance (evicting other functions' idle instances only
        if ``evict``)."""
        return self.budget.book(self.spec, exclude=self, evict=evict)

    def _start(self, count: int) -> None:
        """Starts up to ``count`` instances for the queued calls, while memory can be booked."""
        for _ in range(count):
            if not self._book():
                return
            self._start_now()

    def _start_extra(self) -> None:
        """The slots here are saturated (``policy.saturated``): one more instance that no call
        in particular waits for (it takes the oldest waiter when ready), never evicting
        another function's idle instances for it."""
        if self._book(evict=False):
            log.info("%s: slots busy for the last second here, starting one more", self.spec.name)
            self._start_now(extra=True)

    def _start_now(self, extra: bool = False) -> None:
        """Starts one instance (its memory already booked). An ``extra`` one adds capacity
        while others serve: if it fails to start, the calls queued here stay queued for
        those, rather than being answered with its error."""
        self.starting += 1
        task = asyncio.get_running_loop().create_task(self._start_one(extra))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._set_registered(True)
        self._hold_through_start()

    async def _start_one(self, extra: bool = False) -> None:
        # Traced: the call that set this start off (its task's context was copied into this
        # one) gets the start and its phases as spans.
        trace = CURRENT.get()
        began = self.clock()
        try:
            instance = await self.spawner.spawn(self.spec)
        except (errors.HttpError, ZygoteError, OSError) as exc:
            error = exc if isinstance(exc, errors.HttpError) else errors.StartFailed(str(exc))
            log.warning("cold start of %s failed: %s", self.spec.name, error)
            if trace is not None:
                record.cold_start(trace, self.spec.name, began, self.clock(), error=error)
            self._start_failed(error, extra)
            return
        except Exception as exc:
            # A bug below the pool: the start fails like any other, so that ``starting`` and
            # the memory it reserved are given back and the waiters answered, instead of the
            # pool waiting for a start that never ends.
            log.exception("cold start of %s failed unexpectedly", self.spec.name)
            self._start_failed(errors.StartFailed(f"internal error: {exc!r}"), extra)
            return
        self.starting -= 1
        instance.ready_at = self.clock()
        if trace is not None:
            record.cold_start(
                trace, self.spec.name, began, instance.ready_at, instance=instance.id,
                forked=getattr(instance, "forked_at", None),
                init_s=getattr(instance, "init_s", None),
            )  # fmt: skip
        self.last_start_s = instance.start_s
        self.takes_context = instance.takes_context
        self.instances.append(instance)
        self.budget.started(instance)
        self._metered()
        instance.closed.add_done_callback(lambda _: self._on_closed(instance))
        self.emit(InstanceStarted(self.spec.name, instance.id, instance.host_pid, instance.start_s))
        self._set_registered(True)
        self._hand_out(instance)
        self._start_ended()

    def _start_failed(self, error: errors.HttpError, extra: bool) -> None:
        self.starting -= 1
        self.budget.start_failed(self.spec)
        if not extra or not self.instances:
            self._fail_waiters(error)
        self._start_ended()
        self._set_registered(bool(self.instances or self.starting))

    def _hold_through_start(self) -> None:
        """A start is under way: no local waiter times out before it ends (start timeout)."""
        if not self._local_waiters:
            return
        held_until = policy.queue_give_up_at(self.settings, self.clock(), behind_start=True)
        for waiter, restart in self._local_waiters.items():
            if waiter not in self._behind_start:
                self._behind_start.add(waiter)
                restart(held_until)

    def _start_ended(self) -> None:
        """The waiters held through a start wait like any other once no start is under way:
        ``queue_timeout_s`` for a slot from now, and another instance starts for each one
        still waiting after the scale-out wait."""
        if self.starting:
            return
        now = self.clock()
        forwarded, self._forwarded_behind_start = self._forwarded_behind_start, {}
        for waiter, (restart_forwarded, deadline) in forwarded.items():
            if not waiter.done():
                restart_forwarded(self._forwarded_give_up_at(now, deadline))
                self._forwarded_after_start[waiter] = (restart_forwarded, deadline)
        behind, self._behind_start = self._behind_start, set()
        give_up_at = policy.queue_give_up_at(self.settings, now, behind_start=False)
        scale_out_at = now + policy.scale_out_wait(self.settings, self.last_start_s)
        for waiter in behind:
            restart = self._local_waiters.get(waiter)
            if waiter.done() or restart is None:
                continue
            restart(give_up_at)
            self.scheduler.call_at(scale_out_at, functools.partial(self._scale_out, waiter))

    def _scale_out(self, waiter: Waiter) -> None:
        """``waiter`` waited the scale-out wait: start one more instance for it if
        ``policy.scale_out_due``."""
        if waiter.done():
            return
        try:
            ahead = self.waiters.index(waiter)
        except ValueError:
            return
        if policy.scale_out_due(self.state(), ahead):
            self._start(1)

    def _fail_waiters(self, error: errors.HttpError) -> None:
        """A failed start answers the waiters ``policy.waiters_to_fail`` names, oldest first."""
        count = policy.waiters_to_fail(self.state())
        while count and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                count -= 1

    def _on_closed(self, instance: PoolInstance) -> None:
        if instance not in self.instances:
            return
        self.instances.remove(instance)
        self._metered()
        self.budget.stopped(instance)  # nothing, if it was evicted
        reason = instance.death_reason or "crashed"
        if reason == "crashed":
            log.warning("instance %d of %s died unexpectedly", instance.id, self.spec.name)
        self.emit(InstanceStopped(self.spec.name, instance.id, reason))
        if self.waiters:
            self._start(policy.starts_for_waiters(self.state()))
        self._set_registered(bool(self.instances or self.starting))

    def _set_registered(self, warm: bool) -> None:
        if warm != self.registered:
            self.registered = warm
            name = self.spec.name
            idle = self.idle
            if warm:
                if idle is not None:
                    idle.went_warm(self.clock())  # before the master's answer can come
                self.emit(FunctionWarm(name))
            elif idle is None:
                self.emit(FunctionCold(name))
            else:
                summary = idle.summary(self.clock())
                self.emit(FunctionCold(name, idle_summary.encode(summary)))
                kept = self.histories_kept
                if self.hands_off_history and (kept is None or kept()):
                    idle.hand_off()

    def adopt_history(self, summary: idle_summary.IdleSummary) -> bool:
        """Takes over the function's idle history the master handed back when it registered
        here (``IdleTracker.adopt``); false if this node does not learn windows or adopted
        one since the function went warm here."""
        if self.idle is None or not self.idle.adopt(summary, self.clock()):
            return False
        self.refresh_windows()
        return True

    def _metered(self) -> None:
        # Twice per call: one loop, no list and no generator.
        busy = live = 0
        for instance in self.instances:
            if not instance.dead:
                busy += instance.busy
                live += 1
        self.meter.change(busy, live * self.spec.concurrency)

    def prewarm(self, evict: bool = False) -> bool:
        """Starts an instance that no call waits for (``policy.may_prewarm``), only if memory
        is free without evicting anything (unless ``evict``: the prewarm of a predicted call,
        worth the idle instances the eviction policy values least). It registers when it
        starts, like any other."""
        if not policy.may_prewarm(self.state()) or not self._book(evict=evict):
            return False
        self._start_now()
        return True

    def pin(self, count: int, until: float) -> int:
        """Keeps ``count`` instances here (at most ``max_instances``) until ``until``, neither
        reaped nor evicted, starting the missing ones now; a required instance is worth more
        than an idle one elsewhere, so these starts may evict. Returns the instances here
        (starting ones included)."""
        self.pinned = min(count, self.spec.max_instances)
        self.pinned_until = until
        live = sum(1 for i in self.instances if not i.dead)
        for _ in range(self.pinned - live - self.starting):
            if not self._book():
                log.warning("%s: no memory for an instance min_instances asks for", self.spec.name)
                break
            self._start_now()
        return sum(1 for i in self.instances if not i.dead) + self.starting

    def pinned_now(self) -> int:
        """Instances pinned here now (0 once the lease ended)."""
        return self.pinned if self.clock() < self.pinned_until else 0

    # -- keep-alive and shutdown -----------------------------------------------------------

    def call_frequency(self) -> float:
        """How often this function is called here, for the eviction policy: its decayed calls,
        or, under learned windows, at least the one call they predict within the keep-alive
        window (``eviction.CallRate.count_expecting``)."""
        now = self.clock()
        windows = self.windows
        if windows.source == "learned":
            return self.calls.count_expecting(now, windows.keep_alive_s)
        return self.calls.count(now)

    def _call_arrived(self, now: float) -> None:
        self.calls.called(now)
        depth = min(self._calls_in_flight // self.spec.concurrency, self.spec.max_instances - 1)
        while len(self.calls_by_depth) <= depth:
            self.calls_by_depth.append(eviction.CallRate())
        self.calls_by_depth[depth].called(now)
        self._calls_in_flight += 1
        idle = self.idle
        if idle is not None:
            idle.arrived(now)
            if self._prewarm_timer is not None:
                self._prewarm_timer.cancel()
                self._prewarm_timer = None

    def _call_ended(self, now: float) -> None:
        self._calls_in_flight -= 1
        idle = self.idle
        if idle is None:
            return
        if not idle.ended(now):
            return
        began = now if idle.began is None else idle.began
        period = keepalive.windows_for_idle_period(self.windows, began, now)
        if period.prewarm_s > 0:
            self._prewarm_timer = self.scheduler.call_at(now + period.prewarm_s, self._prewarm_due)

    def idle_values(self) -> list[tuple[PoolInstance, float]]:
        """The idle instances the memory budget may evict (``idle_instances``), each with the
        call frequency its value is taken from. Calls go to the most recently used free
        instance, so an idle one of *rank* r (r instances busy or more recently used ahead of
        it) serves only calls that arrive while at least r instances' worth of calls are in
        flight here: it is worth their frequency (``calls_by_depth``), and the first one (rank
        0) all of the function's (``call_frequency``). Valued at the function's frequency, the
        extra instances a peak of a busy function left idle outranked the only instance of
        every quieter function and held their memory until the fixed keep-alive ended."""
        evictable = self.idle_instances()
        if not evictable:
            return []
        now = self.clock()
        live = [i for i in self.instances if not i.dead]
        busy = sum(1 for i in live if i.busy)
        # Ranked among all idle ones, those the pins keep included: they are ahead too.
        idle = sorted((i for i in live if not i.busy), key=lambda i: i.last_used, reverse=True)
        values = []
        for ahead, instance in enumerate(idle, start=busy):
            if instance not in evictable:
                continue
            if ahead == 0:
                values.append((instance, self.call_frequency()))
            else:
                depths = self.calls_by_depth[ahead:]
                values.append((instance, math.fsum(rate.count(now) for rate in depths)))
        return values

    def _prewarm_due(self) -> None:
        """The prewarm window after the function's last activity here has passed with no
        call: one instance starts for the predicted call, unless one is here or starting. It
        may evict: the windows stopped this function's instance when its activity ended on the
        promise of this start, and a prewarm that finds no room would turn the predicted call
        into a cold one (in a full node, most of them)."""
        self._prewarm_timer = None
        if self.hands_off_history and self.warm_elsewhere and self.warm_elsewhere(self.spec.name):
            # This node handed the function's history off when its last instance here went;
            # another node started the function since, serves the predicted call, and holds
            # the history (and prewarms it) if it took it.
            log.info("%s: warm on another node, not prewarming it here", self.spec.name)
            return
        if self.idle is not None and not self.idle.active and self.prewarm(evict=True):
            self.prewarms += 1
            log.info("%s: prewarming one instance for its predicted next call", self.spec.name)

    def refresh_windows(self) -> keepalive.Windows:
        """The windows in force, recomputed from the idle times when they changed."""
        idle = self.idle
        if idle is not None and idle.histogram.changes != self._windows_of:
            self._windows_of = idle.histogram.changes
            self.windows = keepalive.learned_windows(
                idle.histogram,
                self.spec.keep_alive_s,
                self.last_start_s,
                idle.gaps,
                memory_mb=self.budget.estimate_mb(self.spec),
                worth_mb_s=self.settings.cold_start_worth_mb_s,
            )
        return self.windows

    def keep_alive_view(self) -> dict[str, Any]:
        """The windows in force, for ``GET /v1/functions``."""
        windows = self.windows
        idle = self.idle
        return {
            "keep_alive_window_s": round(windows.keep_alive_s, 3),
            "prewarm_window_s": round(windows.prewarm_s, 3),
            "keep_alive_source": windows.source,
            "keep_alive_anchor": windows.anchor,
            "keep_alive_reason": windows.reason,
            "idle_samples": 0 if idle is None else round(idle.histogram.samples),
        }

    def idle_instances(self) -> list[PoolInstance]:
        """The idle instances the reaper and the memory budget may stop: all but the most
        recently used ones the pins still need (a busy instance counts toward a pin)."""
        live = [i for i in self.instances if not i.dead]
        idle = [i for i in live if i.busy == 0]
        keep = self.pinned_now() - (len(live) - len(idle))
        if keep <= 0:
            return idle
        idle.sort(key=lambda instance: instance.last_used)
        return idle[: max(0, len(idle) - keep)]

    def reap_idle(self, now: float) -> int:
        """Stops the idle instances ``keepalive.reap_due`` says are due, under the windows in
        force (``refresh_windows``; ``keepalive.extra_windows`` for all but the most recently
        used instance); returns how many."""
        windows = self.refresh_windows()
        function_idle = self.idle is None or not self.idle.active
        idle = self.idle
        if function_idle and idle is not None and idle.idle_since is not None:
            # The idle period under way: windows that count from an arrival, from its end.
            began = idle.idle_since if idle.began is None else idle.began
            windows = keepalive.windows_for_idle_period(windows, began, idle.idle_since)
        if function_idle and self._copy_without_history(windows):
            windows = keepalive.copy_windows(self.spec.keep_alive_s)
        extra = keepalive.extra_windows(windows, self.spec.keep_alive_s)
        # The most recently used live instance (a busy one is as recent as can be) follows
        # the windows; any other is an extra one.
        newest = max(
            (math.inf if i.busy else i.last_used for i in self.instances if not i.dead),
            default=math.inf,
        )
        reaped = 0
        for instance in self.idle_instances():
            if keepalive.reap_due(
                extra if instance.last_used < newest else windows,
                now=now,
                last_used=instance.last_used,
                served=instance.calls_served > 0,
                function_idle=function_idle,
            ):
                instance.kill("idle")
                reaped += 1
        return reaped

    def carries_history(self) -> bool:
        """This node carries the function's travelling idle history: histories travel, and
        its windows are learned from it (a copy beside it elsewhere has the fixed default)."""
        return self.idle is not None and self.hands_off_history and self.windows.source == "learned"

    def _copy_without_history(self, windows: keepalive.Windows) -> bool:
        """This node learns windows but holds no history of the function (it handed it off,
        or never served it) while the function is warm on another node: this pool is a copy
        beside the instance that carries the function's history (``keepalive.copy_windows``)."""
        return (
            self.idle is not None
            and self.hands_off_history
            and windows.source == "default"
            and self.warm_elsewhere is not None
            and self.warm_elsewhere(self.spec.name)
        )

    def close(self) -> None:
        """Stops every instance and start; in-flight calls fail."""
        if self._prewarm_timer is not None:
            self._prewarm_timer.cancel()
            self._prewarm_timer = None
        for instance in list(self.instances):
            instance.kill("shutdown")
        for task in list(self._tasks):
            task.cancel()
