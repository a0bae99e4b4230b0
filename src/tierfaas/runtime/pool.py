"""The instances of one function on this node, and who gets a free one.

Theory of operation: a call takes a *slot* (an instance with fewer than ``concurrency`` calls
in flight), preferring the most recently used instance so that the others go idle and are
reaped. With no free slot, the call joins a bounded FIFO of waiters, and the pool starts new
instances while the waiters outnumber the slots already being started and ``max_instances``
and the node's memory budget allow; when the function is warm and only busy, it first waits
``scale_out_wait_s`` for a slot to free (a cold start costs far more than a short call), and
while an instance is starting, new calls queue behind it (it is ready sooner than another
would be) and the same wait applies once it serves. A wait shorter than that still costs
when it lasts: a function whose slots here were busy 9/10 of the last second, and which a call
finds with no slot free, gets one more instance here (``SATURATED``), whatever each call waits.
A started instance, or a slot freed by a finished call, goes to the oldest waiter. A waiter
not covered by a start waits at most ``queue_timeout_s``; a full queue or an expired wait
answers 429 with Retry-After.

All of this runs on the node's event loop and never blocks: the instances are other processes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tierfaas import errors
from tierfaas.clock import Clock
from tierfaas.manifest import FunctionSpec
from tierfaas.runtime.events import FunctionCold, FunctionWarm, InstanceStarted, InstanceStopped
from tierfaas.runtime.instance import Instance, Result
from tierfaas.runtime.meter import BusyMeter
from tierfaas.runtime.zygote_client import ZygoteError

if TYPE_CHECKING:
    from tierfaas.runtime.runtime import Runtime

log = logging.getLogger(__name__)

# The busy share of a function's slots here, over the last second, past which a call that
# finds no free slot starts one more instance (max_instances and free memory permitting, at
# most one a second). The scale-out wait alone misses this case: with calls much shorter than
# a start, each call waits less than a start takes, so none starts one, while together they
# queue for as long as the load lasts (seen in benchmarks/routing.py: the most popular
# function, on one instance with one slot, kept its calls queued ~60 ms for seconds).
SATURATED = 0.9


class FunctionPool:
    def __init__(self, spec: FunctionSpec, runtime: Runtime, clock: Clock) -> None:
        self.spec = spec
        self.runtime = runtime
        self.clock = clock
        self.instances: list[Instance] = []
        self.starting = 0
        self.waiters: deque[asyncio.Future[Instance]] = deque()
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
        self.meter = BusyMeter(clock)  # the busy share of its slots here, last second
        # Calls waiting here that may start instances: how to restart each one's queue timer,
        # and its queue timeout; those held through a start under way (see _await_slot).
        self._local_waiters: dict[
            asyncio.Future[Instance], tuple[Callable[[float], None], float]
        ] = {}
        self._behind_start: set[asyncio.Future[Instance]] = set()
        # Forwarded calls queued behind a start: how to restart each one's timer, and for how
        # long, once no start is under way.
        self._forwarded_behind_start: dict[
            asyncio.Future[Instance], tuple[Callable[[float], None], Callable[[], float]]
        ] = {}
        # ... and those still waiting after it ended: their timer restarts whenever the queue
        # moves, so they give up only when no call was served for a start's time.
        self._forwarded_after_start: dict[
            asyncio.Future[Instance], tuple[Callable[[float], None], Callable[[], float]]
        ] = {}

    # -- calls -----------------------------------------------------------------------------

    async def invoke(
        self,
        body: bytes,
        context: dict[str, Any] | None,
        deadline: float,
        warm_only: bool = False,
    ) -> tuple[Result, bool]:
        """Runs one call; returns its result and whether it waited for a cold start.
        ``warm_only`` (a forwarded call): never start an instance, and wait for a slot only
        briefly (``_wait_for_slot``); else raise ``NotWarm``/``Busy`` so the sender can try
        elsewhere knowing nothing ran here. A call whose deadline passed while it waited is
        answered 504 unrun: dispatched with no time left, it would kill a warm instance.
        A call is cold when it waited for an instance to start, the first on it or not: it
        arrived before the instance it ran on was ready."""
        arrived = self.clock()
        if warm_only:
            instance = self._free_instance()
            if instance is None:
                instance = await self._wait_for_slot(deadline)
            else:
                instance.busy += 1
                self._metered()
        else:
            instance = await self._acquire()
        cold = arrived < instance.ready_at
        remaining = deadline - self.clock()
        if remaining <= 0:
            self._release(instance, served=False)
            raise errors.FunctionTimeout(
                f"{self.spec.name!r} ran out of time waiting for an instance; it did not run"
            )
        dispatched = self.clock()
        future = instance.call(body, context, remaining)
        try:
            result = await future
        finally:
            self._release(instance)
        took = self.clock() - dispatched
        self.call_s = took if self.call_s is None else self.call_s + 0.2 * (took - self.call_s)
        return result, cold

    async def _acquire(self) -> Instance:
        instance = self._free_instance()
        if instance is not None:
            instance.busy += 1
            self._metered()
            return instance
        config = self.runtime.config
        if len(self.waiters) >= config.queue_max:
            raise errors.Overloaded(
                f"{self.spec.name!r} is busy on this node and {len(self.waiters)} calls are "
                "already waiting",
                retry_after_s=config.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Instance] = loop.create_future()
        self.waiters.append(waiter)
        wait = self._scale_out_wait()
        if wait <= 0 or not (self.instances or self.starting):
            self._start_for_waiters()
        elif not self.starting:
            # Warm but busy: a slot usually frees within one call's time, while a new
            # instance costs a process and the function's init. Wait a moment first.
            loop.call_later(wait, self._scale_out, waiter)
            self._grow_if_saturated()
        # else an instance is starting: queue behind it. It is ready sooner than one started
        # now would be, and once it ends the same wait applies (``_start_ended``): a burst
        # of short calls on a cold function starts one instance, not one per call.
        timeout = config.queue_timeout_s
        return await self._await_slot(
            waiter, timeout, lambda: self._overloaded(timeout), local=True
        )

    async def _wait_for_slot(self, deadline: float) -> Instance:
        """A forwarded call (``warm_only``) may wait for a slot, but never starts an instance
        itself and never waits long: behind an instance that is starting (the sender chose
        this node because it registered at the start), until the start ends (at most the
        start timeout), then while the queue moves (no call served for as long as the start
        took: Busy); behind busy instances, ``scale_out_wait_s``. Past that it raises
        ``Busy`` (``NotWarm`` with nothing here), and the sender tries elsewhere, knowing
        the call did not run."""
        if not self.instances and not self.starting:
            raise errors.NotWarm(f"{self.spec.name!r} is not warm on this node")
        config = self.runtime.config
        wait = config.start_timeout_s if self.starting else self._scale_out_wait()
        wait = min(wait, deadline - self.clock())
        if wait <= 0 or len(self.waiters) >= config.queue_max:
            raise errors.Busy(f"every instance of {self.spec.name!r} here is busy")
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        name = self.spec.name
        behind_start = bool(self.starting)
        if not behind_start:
            # Queued behind busy instances, with the wait computed above (a start this
            # causes adds capacity; it does not hold this call longer).
            self._grow_if_saturated()

        def after_start() -> float:
            # Once the start ends and its instance is taken, the call is behind busy ones:
            # a burst queued behind the start (the queue moves, and each call served
            # restarts this wait) or one long call (it does not). With no call served for as
            # long as a start took (at least the scale-out wait), the sender starting its own
            # instance would serve it sooner: Busy, unrun.
            took = self.last_start_s or 0.0
            return min(max(self._scale_out_wait(), took), deadline - self.clock())

        return await self._await_slot(
            waiter,
            wait,
            lambda: errors.Busy(f"no instance of {name!r} here was free in time"),
            after_start=after_start if behind_start else None,
        )

    async def _await_slot(
        self,
        waiter: asyncio.Future[Instance],
        timeout: float,
        error: Callable[[], errors.HttpError],
        local: bool = False,
        after_start: Callable[[], float] | None = None,
    ) -> Instance:
        """Waits for ``waiter`` (already queued) to be handed a slot; past ``timeout`` it
        leaves the queue and raises ``error()``. A ``local`` waiter (one that may start
        instances) never times out while a start is under way: its ``timeout`` counts from
        when the last start it waited through ended. A forwarded waiter queued behind a
        start gets ``after_start()`` seconds more once no start is under way."""

        def give_up() -> None:
            if not waiter.done():
                self._drop_waiter(waiter)
                waiter.set_exception(error())

        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, give_up)

        def restart(seconds: float) -> None:
            nonlocal timer
            timer.cancel()
            timer = loop.call_later(max(0.0, seconds), give_up)

        if local:
            self._local_waiters[waiter] = (restart, timeout)
            if self.starting:
                self._hold_through_start()
        elif after_start is not None:
            self._forwarded_behind_start[waiter] = (restart, after_start)
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

    def _scale_out_wait(self) -> float:
        """How long a call waits for a busy instance's slot before another instance starts:
        ``scale_out_wait_s``, but never longer than a start takes (measured on this
        function's last start): past that, waiting cannot beat starting."""
        cap = self.runtime.config.scale_out_wait_s
        return cap if self.last_start_s is None else min(cap, self.last_start_s)

    def _overloaded(self, timeout: float) -> errors.HttpError:
        return errors.Overloaded(
            f"no instance of {self.spec.name!r} became free within "
            f"{timeout:g} s ({len(self.instances)} running, max_instances "
            f"{self.spec.max_instances})",
            retry_after_s=self.runtime.config.retry_after_s,
        )

    def _free_instance(self) -> Instance | None:
        best: Instance | None = None
        limit = self.spec.concurrency
        for i in self.instances:
            if i.busy < limit and not i.dead and (best is None or i.last_used > best.last_used):
                best = i
        return best

    def _release(self, instance: Instance, served: bool = True) -> None:
        instance.busy -= 1
        instance.calls_served += served
        instance.last_used = self.clock()
        if instance.dead:
            self._metered()
        else:
            self._hand_out(instance)

    def _hand_out(self, instance: Instance) -> None:
        served = False
        while instance.busy < self.spec.concurrency and self.waiters:
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            instance.busy += 1
            waiter.set_result(instance)
            served = True
        if served and self._forwarded_after_start:
            # The queue moves: forwarded calls behind it keep waiting (see _wait_for_slot).
            for restart, seconds in self._forwarded_after_start.values():
                restart(seconds())
        self._metered()

    def _drop_waiter(self, waiter: asyncio.Future[Instance]) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    # -- starting and stopping instances ---------------------------------------------------

    def _book_another(self, evict: bool = True) -> bool:
        """Room for one more instance under ``max_instances``, and its memory booked (by
        evicting other functions' idle instances only if ``evict``): then start it."""
        return len(self.instances) + self.starting < self.spec.max_instances and (
            self.runtime.reserve_memory(self.spec.memory_mb, exclude=self, evict=evict)
        )

    def _start_for_waiters(self) -> None:
        while len(self.waiters) > self.starting * self.spec.concurrency and self._book_another():
            self._start_now()

    def _start_now(self, extra: bool = False) -> None:
        """Starts one instance (its memory already reserved). An ``extra`` one adds capacity
        while others serve: if it fails to start, the calls queued here stay queued for
        those, rather than being answered with its error."""
        self.starting += 1
        task = asyncio.get_running_loop().create_task(self._start_one(extra))
        self.runtime.track(task)
        self._set_registered(True)
        self._hold_through_start()

    async def _start_one(self, extra: bool = False) -> None:
        instance = self.runtime.new_instance(self.spec)
        try:
            frame = self.runtime.spawn_frame(self.spec)
            await instance.start(frame, self.runtime.config.start_timeout_s)
        except (errors.HttpError, ZygoteError, OSError) as exc:
            self.starting -= 1
            self.runtime.release_memory(self.spec.memory_mb)
            error = exc if isinstance(exc, errors.HttpError) else errors.StartFailed(str(exc))
            log.warning("cold start of %s failed: %s", self.spec.name, error)
            if not extra or not self.instances:
                self._fail_waiters(error)
            self._start_ended()
            self._set_registered(bool(self.instances or self.starting))
            return
        self.starting -= 1
        instance.ready_at = self.clock()
        self.last_start_s = instance.start_s
        self.takes_context = instance.takes_context
        self.instances.append(instance)
        self._metered()
        instance.closed.add_done_callback(lambda _: self._on_closed(instance))
        self.runtime.emit(
            InstanceStarted(self.spec.name, instance.id, instance.pid, instance.start_s)
        )
        self._set_registered(True)
        self._hand_out(instance)
        self._start_ended()

    def _hold_through_start(self) -> None:
        """A start is under way: no local waiter times out before it ends (start timeout)."""
        start_timeout = self.runtime.config.start_timeout_s
        for waiter, (restart, timeout) in self._local_waiters.items():
            if waiter not in self._behind_start:
                self._behind_start.add(waiter)
                restart(start_timeout + timeout)

    def _start_ended(self) -> None:
        """The waiters held through a start wait like any other once no start is under way:
        ``queue_timeout_s`` for a slot from now, and another instance starts for each one
        still waiting after the scale-out wait."""
        if self.starting:
            return
        forwarded, self._forwarded_behind_start = self._forwarded_behind_start, {}
        for waiter, (restart_forwarded, seconds) in forwarded.items():
            if not waiter.done():
                restart_forwarded(seconds())
                self._forwarded_after_start[waiter] = (restart_forwarded, seconds)
        behind, self._behind_start = self._behind_start, set()
        wait = self._scale_out_wait()
        loop = asyncio.get_running_loop()
        for waiter in behind:
            if waiter.done() or waiter not in self._local_waiters:
                continue
            restart, timeout = self._local_waiters[waiter]
            restart(timeout)
            loop.call_later(wait, self._scale_out, waiter)

    def _scale_out(self, waiter: asyncio.Future[Instance]) -> None:
        """``waiter`` waited the scale-out wait: start one more instance for it, unless it
        got a slot meanwhile or the starts already under way will reach it first. (A check
        of the queue as a whole would, under steady load, nearly always find some call that
        just arrived, and start an instance every time.)"""
        if waiter.done():
            return
        try:
            ahead = self.waiters.index(waiter)
        except ValueError:
            return
        if ahead >= self.starting * self.spec.concurrency and self._book_another():
            self._start_now()

    def _grow_if_saturated(self) -> None:
        """A call found no free slot and no start under way: if the slots here were busy at
        least ``SATURATED`` of the last second, start one more instance that no call in
        particular waits for (it takes the oldest waiter when ready). At most one per
        second after the newest instance was ready, so that the share it is judged by
        already counts that instance's slots; never past ``max_instances``, never
        evicting another function's idle instances for it."""
        now = self.clock()
        newest = max((i.ready_at for i in self.instances), default=now)
        if (
            now - newest < self.meter.window_s
            or self.meter.share() < SATURATED
            or not self._book_another(evict=False)
        ):
            return
        log.info("%s: slots busy for the last second here, starting one more", self.spec.name)
        self._start_now(extra=True)

    def _fail_waiters(self, error: errors.HttpError) -> None:
        """A failed start answers the waiters it was meant for; all of them if nothing else
        will ever serve them (no instance running or starting)."""
        count = self.spec.concurrency
        if not self.instances and not self.starting:
            count = len(self.waiters)
        while count and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                count -= 1

    def _on_closed(self, instance: Instance) -> None:
        if instance not in self.instances:
            return
        self.instances.remove(instance)
        self._metered()
        if instance.holds_memory:
            self.runtime.release_memory(self.spec.memory_mb)
        reason = instance.death_reason or "crashed"
        if reason == "crashed":
            log.warning("instance %d of %s died unexpectedly", instance.id, self.spec.name)
        self.runtime.emit(InstanceStopped(self.spec.name, instance.id, reason))
        if self.waiters:
            self._start_for_waiters()
        self._set_registered(bool(self.instances or self.starting))

    def _set_registered(self, warm: bool) -> None:
        if warm != self.registered:
            self.registered = warm
            name = self.spec.name
            self.runtime.emit(FunctionWarm(name) if warm else FunctionCold(name))

    def can_take(self) -> bool:
        """A free slot now, or room (instances and memory permitting) to start one: what the
        function's home checks before it accepts a forwarded first call."""
        if self._free_instance() is not None:
            return True
        waiting = len(self.waiters) + 1
        if waiting <= self.starting * self.spec.concurrency:
            return True
        return len(self.instances) + self.starting < self.spec.max_instances

    def free_slots(self) -> tuple[int, int]:
        """(warm instances, free call slots on them), for the router."""
        live = [i for i in self.instances if not i.dead]
        return len(live), sum(self.spec.concurrency - i.busy for i in live)

    def slot_due_s(self) -> float:
        """Roughly when a slot here frees for a call queued now (seconds; inf when no call
        has finished here yet): the recent call time, times the calls ahead per slot."""
        if self.call_s is None:
            return math.inf
        slots = sum(1 for i in self.instances if not i.dead) * self.spec.concurrency
        return math.inf if slots == 0 else (len(self.waiters) + 1) * self.call_s / slots

    def _metered(self) -> None:
        live = [i for i in self.instances if not i.dead]
        self.meter.change(sum(i.busy for i in live), len(live) * self.spec.concurrency)

    def recent_load(self) -> float:
        """The busy share of this function's call slots here over the last second, 0..1."""
        return self.meter.share()

    def prewarm(self) -> bool:
        """Starts an instance that no call waits for (this node forwards a function whose
        warm nodes are hot): only if none is here or starting and memory is free without
        evicting anything. It registers when it starts, like any other."""
        if self.instances or self.starting or not self._book_another(evict=False):
            return False
        self._start_now()
        return True

    def load(self) -> float:
        """The busy share of this function's call slots here, 0..1 (1 with no instance)."""
        warm, free = self.free_slots()
        capacity = warm * self.spec.concurrency
        return 1.0 if capacity == 0 else 1.0 - free / capacity

    def idle_instances(self) -> list[Instance]:
        return [i for i in self.instances if i.busy == 0 and not i.dead]

    def reap_idle(self, now: float) -> int:
        """Stops instances idle for longer than keep_alive_s; returns how many."""
        reaped = 0
        for instance in self.idle_instances():
            if now - instance.last_used >= self.spec.keep_alive_s:
                instance.kill("idle")
                reaped += 1
        return reaped

    def stats(self) -> dict[str, int]:
        return {
            "instances": len(self.instances),
            "busy": sum(1 for i in self.instances if i.busy),
            "starting": self.starting,
            "queued": len(self.waiters),
        }
