"""A sliding window of the last minute of calls: one slot per second of the injected clock.

Theory of operation. ``WINDOW_S`` slots form a ring indexed by the whole second a call ended
in. A slot is reused when a later second maps onto it, so recording is O(1) and touches one
slot, and a minute without calls costs nothing. Reading sums the slots whose second lies in
the last ``WINDOW_S`` seconds. Latencies go into a log-scale histogram per slot (bins
``BIN_RATIO`` wide), so the p99 of the window is read from merged bins with a relative error
under ``BIN_RATIO - 1``, in memory bounded by the number of distinct bins, never by the call
rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 60
"""How far back the rate and the p99 look, in seconds."""
BIN_RATIO = 1.05
"""The ratio of a latency bin's upper bound to its lower one: the p99's relative error."""
_MIN_MS = 0.01  # the upper bound of bin 0: anything faster shows as 0.01 ms
_LOG_RATIO = math.log(BIN_RATIO)
_MAX_BIN = 400  # 0.01 ms * 1.05 ** 400: about 9 hours, past any function's timeout


def latency_bin(ms: float) -> int:
    """The histogram bin of a latency of ``ms`` milliseconds (0 for anything <= 0.01 ms)."""
    if ms <= _MIN_MS:
        return 0
    return min(_MAX_BIN, math.ceil(math.log(ms / _MIN_MS) / _LOG_RATIO - 1e-9))


def bin_upper_ms(index: int) -> float:
    """The upper bound of bin ``index``, in milliseconds: what a percentile in it is shown as."""
    return _MIN_MS * BIN_RATIO**index


class _Slot:
    __slots__ = ("calls", "errors", "latency", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.calls = 0
        self.errors = 0
        self.latency: dict[int, int] = {}  # bin -> calls


@dataclass(frozen=True, slots=True)
class WindowView:
    """The last ``WINDOW_S`` seconds of one function: calls, errors, and the p99 latency in
    milliseconds (None without calls)."""

    calls: int
    errors: int
    p99_ms: float | None


class CallWindow:
    """The calls of the last ``WINDOW_S`` seconds of one function. Not thread-safe: the node
    records and reads on its event loop."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[_Slot | None] = [None] * WINDOW_S

    def record(self, now: float, seconds: float, error: bool) -> None:
        """One call that ended at ``now`` (clock seconds) after ``seconds``."""
        second = int(now)
        index = second % WINDOW_S
        slot = self._slots[index]
        if slot is None or slot.second != second:
            slot = self._slots[index] = _Slot(second)
        slot.calls += 1
        if error:
            slot.errors += 1
        key = latency_bin(seconds * 1000.0)
        slot.latency[key] = slot.latency.get(key, 0) + 1

    def view(self, now: float, quantile: float = 0.99) -> WindowView:
        """The calls that ended in the last ``WINDOW_S`` seconds before ``now`` (the current
        second included), and their ``quantile`` latency."""
        oldest = int(now) - WINDOW_S
        calls = errors = 0
        merged: dict[int, int] = {}
        for slot in self._slots:
            if slot is None or not oldest < slot.second <= int(now):
                continue
            calls += slot.calls
            errors += slot.errors
            for key, count in slot.latency.items():
                merged[key] = merged.get(key, 0) + count
        return WindowView(calls, errors, percentile_ms(merged, calls, quantile))


def percentile_ms(histogram: dict[int, int], total: int, quantile: float) -> float | None:
    """The ``quantile`` (0..1) of ``total`` latencies binned in ``histogram``: the upper bound
    of the bin holding the call of rank ceil(quantile * total); None for no calls."""
    if total <= 0:
        return None
    rank = max(1, math.ceil(quantile * total))
    seen = 0
    for key in sorted(histogram):
        seen += histogram[key]
        if seen >= rank:
            return round(bin_upper_ms(key), 3)
    return round(bin_upper_ms(max(histogram)), 3)  # unreachable while the counts add up
