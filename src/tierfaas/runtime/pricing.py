"""The keep-alive and prewarm windows that pay for themselves: an idle instance's memory priced
against the calls it is expected to catch.

Theory of operation. Each idle period of a function ends with its next call, after an idle
time drawn (we assume) from the function's histogram of past idle times. An instance kept
from the period's start ``p`` (the prewarm: 0, or the moment a new one is ready) until ``e``
(the keep-alive's end) catches the call when ``p < idle <= e``, and holds the function's memory
``m`` for ``min(idle, e) - min(idle, p)``. Per idle period, in expectation:

    caught(p, e) = P(idle <= e) - P(idle <= p)
    held(p, e)   = m x (E[min(idle, e)] - E[min(idle, p)])          (MB·s)

A cold start is worth ``worth_mb_s`` MB·s of memory (a node setting, ``cold_start_worth_mb_s``):
the windows chosen maximize ``caught - held / worth_mb_s``, over the ends and prewarms the
histogram's bins suggest (``e`` at a bin's longest idle time plus a margin, ``p`` just before a
bin's shortest one, less the start time, or 0; ``e`` = 0 allowed: nothing is kept). With
``H(x) = P(idle <= x) - m x E[min(idle, x)] / worth_mb_s`` the value is ``H(e) - H(p)``: one
pass over the bins in order, keeping the lowest ``H(p)`` seen so far, finds the best pair.

Why this shape. A fixed keep-alive ``k`` is the point ``(0, k)`` of the same search: the choice
here is never worse for the function by this measure, and summed over the functions (each
weighted by its idle periods) it buys the most cold starts avoided for the memory-time spent,
at the price ``worth_mb_s``: a function whose next call is likely soon is kept (its hazard, the
chance of a call in the next second, is worth the memory), one with long but predictable idle
times is unloaded and prewarmed shortly before its usual next call (its memory is held only
around the expected arrival), and one whose calls are rare and unpredictable is not kept (its
calls are cold under any keep-alive worth its memory). Idle times past the histogram's range
are never caught, and hold the whole window.

Everything here is pure: a function of the histogram's bins, the memory and the price.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bins:
    """A histogram of idle times (seconds) by bin, in increasing order of time: how many
    fell in each, their sum, the shortest and the longest; and how many fell past the range
    (never caught by a window inside it)."""

    counts: Sequence[float]
    totals: Sequence[float]
    lowest: Sequence[float]
    highest: Sequence[float]
    out_of_bounds: float = 0.0


@dataclass(frozen=True, slots=True)
class Choice:
    """The windows of one idle period, counted from its start: a new instance is ready at
    ``prewarm_s`` (0: the last one is kept instead) and is gone at ``until_s`` (0 with no
    prewarm: none is kept). ``caught``: the expected share of idle periods whose call finds it;
    ``held_mb_s``: the memory it holds per idle period, in expectation; ``value``: ``caught``
    less ``held_mb_s`` at the price."""

    prewarm_s: float
    until_s: float
    caught: float
    held_mb_s: float
    value: float


NOTHING = Choice(0.0, 0.0, 0.0, 0.0, 0.0)


def best_windows(
    bins: Bins,
    memory_mb: float,
    worth_mb_s: float,
    *,
    start_s: float = 0.0,
    keep_margin: float = 0.0,
    prewarm_margin: float = 0.0,
    min_prewarm_s: float = 0.0,
    min_keep_s: float = 0.0,
) -> Choice:
    """The windows of greatest ``caught - held_mb_s / worth_mb_s`` (see the module's doc).
    ``keep_margin``: the keep-alive ends this share past a bin's longest idle time;
    ``prewarm_margin``: the instance is ready this share before a bin's shortest one, and
    starts ``start_s`` earlier; a prewarm under ``min_prewarm_s`` is not considered; an
    instance kept at all is kept at least ``min_keep_s`` from the period's start (idle times
    seen are no bound on the next one: a function called back to back for a while would
    otherwise be kept a fraction of a second). Ends past a bin's longest idle time are valued
    as if no call came before them (catching those would only add value). An empty
    histogram, or one where nothing is worth its memory, gives ``NOTHING``."""
    held = [i for i, count in enumerate(bins.counts) if count > 0]
    total = sum(bins.counts[i] for i in held) + bins.out_of_bounds
    if total <= 0 or worth_mb_s <= 0:
        return NOTHING
    rate = memory_mb / worth_mb_s  # the value of one second of the instance, in cold starts

    best = NOTHING
    # The lowest H(p) of the prewarms considered so far: p = 0 has H = 0.
    low_h, low_p, low_c, low_m = 0.0, 0.0, 0.0, 0.0
    below = 0.0  # idle times in the bins before this one
    below_sum = 0.0  # their sum
    for i in held:
        count = bins.counts[i]
        above = total - below  # this bin's and later ones', out of bounds included
        # A prewarm ready just before this bin's shortest idle time.
        ready = bins.lowest[i] * (1 - prewarm_margin)
        p = ready - start_s
        if p >= min_prewarm_s:
            c_p = below / total
            m_p = (below_sum + p * above) / total
            h_p = c_p - rate * m_p
            if h_p < low_h:
                low_h, low_p, low_c, low_m = h_p, p, c_p, m_p
        below += count
        below_sum += bins.totals[i]
        # A keep-alive that ends just after this bin's longest idle time.
        e = max(bins.highest[i] * (1 + keep_margin), min_keep_s)
        c_e = below / total
        m_e = (below_sum + e * (total - below)) / total
        value = (c_e - rate * m_e) - low_h
        if value > best.value:
            caught = c_e - low_c
            best = Choice(low_p, e, caught, memory_mb * (m_e - low_m), value)
    return best
