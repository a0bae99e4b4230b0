"""When a function's pool starts an instance, how long a call waits for a slot, and when it is
refused: pure functions of a snapshot of the pool (``PoolState``) and the time.

Theory of operation. A call takes a free slot if there is one; that is the pool's business and
involves no decision. A call that finds none (``admit``) is refused with 429 when the queue is
full; else it queues, and:

- with nothing running or starting here, or no scale-out wait, instances start for the queued
  calls at once, as many as the calls need (``starts_for_waiters``), ``max_instances`` and
  the node's memory permitting;
- warm but busy, the call waits ``scale_out_wait`` for a slot to free (a cold start costs far
  more than a short call, and a slot usually frees within one call's time); one more instance
  starts for it then if it still waits and the starts under way will not reach it first
  (``scale_out_due``);
- behind an instance that is starting, the call queues and nothing more starts: that instance
  is ready sooner than another would be, and once it ends the same wait applies. A burst of
  short calls on a cold function starts one instance, not one per call.

A wait shorter than a start still costs when it lasts: with calls much shorter than a start,
each waits less than the scale-out wait and none starts an instance, while together they queue
for as long as the load lasts. So a function whose slots here were busy ``SATURATED`` of the
last second, and which a call finds with no slot free, gets one more instance here whatever
each call waits (``saturated``), at most one a second after the newest instance was ready (so
the share it is judged by already counts that instance's slots).

A forwarded call (``admit_forwarded``) never starts an instance and never waits long: the
sender can run it elsewhere, knowing it did not run here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

from tierfaas.config import NodeConfig

SATURATED = 0.9
"""The busy share of a function's slots here, over the last second, past which a call that
finds no free slot starts one more instance (``saturated``)."""

BUSY_WINDOW_S = 1.0
"""The window of the busy share (``BusyMeter``), and the least time between two instances
started by ``saturated``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The node's settings the policy reads (see ``NodeConfig`` for their meaning)."""

    queue_max: int
    queue_timeout_s: float
    retry_after_s: int
    scale_out_wait_s: float
    start_timeout_s: float
    cold_start_worth_mb_s: float = 307200.0  # the keep-alive's price (``pricing.py``)

    @classmethod
    def of(cls, config: NodeConfig) -> Settings:
        return cls(
            queue_max=config.queue_max,
            queue_timeout_s=config.queue_timeout_s,
            retry_after_s=config.retry_after_s,
            scale_out_wait_s=config.scale_out_wait_s,
            start_timeout_s=config.start_timeout_s,
            cold_start_worth_mb_s=config.cold_start_worth_mb_s,
        )


@dataclass(frozen=True, slots=True)
class PoolState:
    """One function's pool on this node, at one moment."""

    settings: Settings
    concurrency: int  # call slots per instance
    max_instances: int
    instances: int = 0  # in the pool, serving or dying (they count against max_instances)
    free_slots: int = 0  # on live instances
    starting: int = 0
    waiters: int = 0  # calls queued for a slot
    last_start_s: float | None = None  # how long the function's last start here took
    busy_share: float = 0.0  # of its slots here, over the last complete window (BusyMeter)
    newest_ready_at: float | None = None  # when the newest instance got ready (None: none)

    @property
    def room(self) -> bool:
        """Another instance fits under ``max_instances`` (memory is booked separately)."""
        return self.instances + self.starting < self.max_instances


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer 429 with Retry-After: the queue is full."""

    retry_after_s: int


@dataclass(frozen=True, slots=True)
class Start:
    """Queue the call, and start up to ``count`` instances for the queued calls now (each
    only if the node's memory can be booked for it, evicting other functions' idle ones)."""

    count: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Queue the call. ``scale_out_at``: when to ask ``scale_out_due`` for it if it still
    waits (None: it waits behind a start, and is asked once that start ends). ``extra``: start
    one more instance now for no call in particular (``saturated``), never evicting."""

    scale_out_at: float | None
    extra: bool = False


class Rejection(Enum):
    """Why a forwarded call is refused unrun (the ``X-Tierfaas-Reject`` value)."""

    NOT_WARM = "not_warm"  # nothing runs or starts here
    BUSY = "busy"  # no slot in time, or the queue is full


@dataclass(frozen=True, slots=True)
class Hold:
    """Queue a forwarded call until ``until`` at most (then ``Rejection.BUSY``, unrun).
    ``behind_start``: it waits behind a start, and gets ``forwarded_give_up_at`` once the
    start ends. ``extra``: as in ``Wait``."""

    until: float
    behind_start: bool = False
    extra: bool = False


def scale_out_wait(settings: Settings, last_start_s: float | None) -> float:
    """How long a call waits for a busy instance's slot before another instance starts:
    ``scale_out_wait_s``, but never longer than a start takes (measured on the function's last
    start here): past that, waiting cannot beat starting."""
    cap = settings.scale_out_wait_s
    return cap if last_start_s is None else min(cap, last_start_s)


def starts_for_waiters(state: PoolState) -> int:
    """How many instances to start so that the starts under way cover every queued call
    (``concurrency`` each), within ``max_instances``."""
    needed = math.ceil(state.waiters / state.concurrency) - state.starting
    room = state.max_instances - state.instances - state.starting
    return max(0, min(needed, room))


def saturated(state: PoolState, now: float) -> bool:
    """Start one more instance, for no call in particular: the slots here were busy at least
    ``SATURATED`` of the last window, the newest instance has been ready for a whole window,
    and there is room under ``max_instances``."""
    newest = state.newest_ready_at
    return (
        newest is not None
        and now - newest >= BUSY_WINDOW_S
        and state.busy_share >= SATURATED
        and state.room
    )


def admit(state: PoolState, now: float) -> Refuse | Start | Wait:
    """A call that may start instances finds no free slot; ``state`` is before it queues."""
    settings = state.settings
    if state.waiters >= settings.queue_max:
        return Refuse(settings.retry_after_s)
    wait = scale_out_wait(settings, state.last_start_s)
    if wait <= 0 or not (state.instances or state.starting):
        return Start(starts_for_waiters(replace(state, waiters=state.waiters + 1)))
    if not state.starting:
        return Wait(now + wait, extra=saturated(state, now))
    return Wait(None)


def scale_out_due(state: PoolState, ahead: int) -> bool:
    """A call with ``ahead`` calls queued before it waited the scale-out wait: start one
    instance for it, unless the starts under way will reach it first or there is no room. (A
    check of the queue as a whole would, under steady load, nearly always find some call that
    just arrived, and start an instance every time.)"""
    return ahead >= state.starting * state.concurrency and state.room


def queue_give_up_at(settings: Settings, now: float, *, behind_start: bool) -> float:
    """When a queued call that may start instances gives up (429): ``queue_timeout_s`` after
    it queued or after the last start it waited through ended; while a start is under way, not
    before that start's timeout."""
    held = settings.start_timeout_s if behind_start else 0.0
    return now + held + settings.queue_timeout_s


def admit_forwarded(state: PoolState, now: float, deadline: float) -> Rejection | Hold:
    """A forwarded call finds no free slot; ``state`` is before it queues. Behind an instance
    that is starting (the sender chose this node because it registered at the start) it waits
    until the start ends, at most the start timeout; behind busy instances, the scale-out
    wait; never past its ``deadline``."""
    if not state.instances and not state.starting:
        return Rejection.NOT_WARM
    settings = state.settings
    if state.starting:
        wait = settings.start_timeout_s
    else:
        wait = scale_out_wait(settings, state.last_start_s)
    wait = min(wait, deadline - now)
    if wait <= 0 or state.waiters >= settings.queue_max:
        return Rejection.BUSY
    if state.starting:
        return Hold(now + wait, behind_start=True)
    # Behind busy instances: a start this causes adds capacity; it does not hold the call.
    return Hold(now + wait, extra=saturated(state, now))


def forwarded_give_up_at(
    settings: Settings, last_start_s: float | None, now: float, deadline: float
) -> float:
    """A forwarded call still queued after the start it waited behind ended (its instance went
    to another call): it is behind busy instances, a burst queued behind the start (the queue
    moves, and each call served asks again) or one long call (it does not). With no call
    served for as long as a start took (at least the scale-out wait), the sender starting its
    own instance would serve it sooner: it gives up then (Busy, unrun)."""
    patience = max(scale_out_wait(settings, last_start_s), last_start_s or 0.0)
    return min(now + patience, deadline)


def can_take(state: PoolState) -> bool:
    """A free slot now, a start under way with a slot to spare, or room to start one: what
    the function's home checks before it accepts a forwarded first call."""
    if state.free_slots > 0:
        return True
    if state.waiters + 1 <= state.starting * state.concurrency:
        return True
    return state.room


def may_prewarm(state: PoolState) -> bool:
    """An instance no call waits for (this node forwards a function whose warm nodes are hot,
    or the function's prewarm window passed) starts only if none is here or starting (and,
    separately, memory is free without evicting anything)."""
    return not state.instances and not state.starting and state.room


def waiters_to_fail(state: PoolState) -> int:
    """A start failed: it answers the calls it was meant for (one instance's slots), or every
    queued call if nothing else will ever serve them (no instance running or starting)."""
    if not state.instances and not state.starting:
        return state.waiters
    return state.concurrency


def slot_due_s(call_s: float | None, live: int, concurrency: int, waiters: int) -> float:
    """Roughly when a slot frees for a call queued now (seconds; inf when no call has
    finished here yet, or nothing is live): the recent call time, times the calls ahead per
    slot."""
    slots = live * concurrency
    if call_s is None or slots == 0:
        return math.inf
    return (waiters + 1) * call_s / slots


def idle_expired(now: float, last_used: float, keep_alive_s: float) -> bool:
    """An idle instance unused for ``keep_alive_s`` is stopped."""
    return now - last_used >= keep_alive_s
