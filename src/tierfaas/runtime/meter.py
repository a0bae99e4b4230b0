"""``BusyMeter``: how busy a function's call slots on this node were, over the last second.

The instantaneous busy share (busy slots / slots, at one moment) flips between 0 and 1 with
every call of a function with one slot; what says whether the function is *hot* here is the
share of slot-time spent busy over a window. The pool reports every change of its busy slots
and capacity; the meter integrates both over time (a step function, so the integral is exact)
and keeps the share of the last complete window, while the current one fills.

Pure: the clock is injected, nothing is scheduled.
"""

from __future__ import annotations

from tierfaas.clock import Clock


class BusyMeter:
    def __init__(self, clock: Clock, window_s: float = 1.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._clock = clock
        self.window_s = window_s
        now = clock()
        self._window_start = now
        self._at = now  # when busy/capacity last changed (or were last integrated)
        self._busy = 0
        self._capacity = 0
        self._busy_time = 0.0  # slot-seconds busy in the current window
        self._slot_time = 0.0  # slot-seconds available in the current window
        self._last: float | None = None  # the share of the last complete window

    def change(self, busy: int, capacity: int) -> None:
        """The pool's busy slots and capacity (slots on live instances) from now on."""
        now = self._clock()
        if now < self._window_start + self.window_s:  # twice per call: _advance inlined
            elapsed = now - self._at
            if elapsed > 0:
                self._busy_time += self._busy * elapsed
                self._slot_time += self._capacity * elapsed
                self._at = now
        else:
            self._advance(now)
        self._busy, self._capacity = busy, capacity

    def share(self) -> float:
        """Busy slot-time over available slot-time, 0..1: over the last complete window, or
        the current one so far if none has completed yet (0 with no capacity at all)."""
        self._advance(self._clock())
        if self._last is not None:
            return self._last
        return self._busy_time / self._slot_time if self._slot_time > 0 else 0.0

    def _advance(self, now: float) -> None:
        end = self._window_start + self.window_s
        while now >= end:
            self._integrate(end)
            self._last = self._busy_time / self._slot_time if self._slot_time > 0 else 0.0
            self._busy_time = self._slot_time = 0.0
            self._window_start = end
            if now - end >= self.window_s:  # a whole idle window or more: nothing changed
                skipped = int((now - end) // self.window_s)
                self._window_start = end + skipped * self.window_s
                self._at = self._window_start
                if self._capacity == 0:
                    self._last = 0.0
                else:
                    self._last = self._busy / self._capacity  # constant over the gap
            end = self._window_start + self.window_s
        self._integrate(now)

    def _integrate(self, until: float) -> None:
        elapsed = until - self._at
        if elapsed > 0:
            self._busy_time += self._busy * elapsed
            self._slot_time += self._capacity * elapsed
            self._at = until
