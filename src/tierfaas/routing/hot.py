"""``HotTracker``: which functions this node forwards so often, or to such busy targets, that
it should run an instance of its own.

Each forward costs CPU on two nodes, and calls to a target with no slot to spare queue there
(a slot frees sooner than a start, so the target's own scale-out rarely fires), while an
instance here costs one start and the next calls run here. A function is *hot* in a second in
which this node forwarded it at least ``forwards_per_s`` times, or its targets were on average
``HOT_LOAD`` busy; after ``HOT_SECONDS`` hot seconds in a row (its first seconds are a burst
of first calls, not lasting demand) the tracker says to start an instance here, at most once
per ``HOT_COOLDOWN_S``.

Pure bookkeeping on an injected clock: it counts and answers, the router acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierfaas.clock import Clock

HOT_SECONDS = 3
"""Hot seconds in a row before an instance starts here."""
HOT_COOLDOWN_S = 30.0
"""Least time between two instances started here for one function."""
HOT_LOAD = 0.75
"""Targets this busy on average (their slots' busy share, as they report it) make a function
hot however rarely it is forwarded: at 3/4 of its slots busy, a call often finds every slot
taken and queues for one."""


@dataclass(slots=True)
class _Window:
    """One function's current one-second window of forwards."""

    started: float
    forwards: int = 0
    load_sum: float = 0.0  # of the targets' reported loads, one per forward
    hot_seconds: int = 0  # hot windows in a row before this one
    prewarmed_at: float | None = None


class HotTracker:
    def __init__(
        self,
        clock: Clock,
        forwards_per_s: float,
        *,
        seconds: int = HOT_SECONDS,
        cooldown_s: float = HOT_COOLDOWN_S,
        load: float = HOT_LOAD,
    ) -> None:
        self.clock = clock
        self.forwards_per_s = forwards_per_s
        self.seconds = seconds
        self.cooldown_s = cooldown_s
        self.load = load
        self._windows: dict[str, _Window] = {}

    def forwarded(self, name: str, load: float) -> bool:
        """One more call of ``name`` forwarded from here, answered by a target whose slots for
        it were ``load`` busy (0..1, over its last second). True when an instance of ``name``
        should start here now (the caller starts it in the background; the forwarded call is
        not held up)."""
        now = self.clock()
        window = self._windows.get(name)
        if window is None:
            self._windows[name] = _Window(now, forwards=1, load_sum=load)
            return False
        start_here = False
        elapsed = now - window.started
        if elapsed >= 1.0:
            busy = window.load_sum / max(window.forwards, 1)
            # A gap of a second or more with no forward ends the run of hot seconds.
            hot = elapsed < 2.0 and (
                window.forwards / elapsed >= self.forwards_per_s or busy >= self.load
            )
            window.hot_seconds = window.hot_seconds + 1 if hot else 0
            window.started, window.forwards, window.load_sum = now, 0, 0.0
            if window.hot_seconds >= self.seconds and (
                window.prewarmed_at is None or now - window.prewarmed_at >= self.cooldown_s
            ):
                window.prewarmed_at = now
                start_here = True
        window.forwards += 1
        window.load_sum += load
        return start_here
