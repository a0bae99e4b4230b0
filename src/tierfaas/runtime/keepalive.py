"""Keep-alive and prewarm learned per function on each node: the idle-time histogram of
Shahrad et al., "Serverless in the Wild" (USENIX ATC '20), with windows priced against memory.

Theory of operation. A function's *idle time* on this node is the time from the end of its
activity here (the moment no call of it is in flight on any of its instances) to the arrival
of its next call. ``IdleTracker`` records each one in an ``IdleHistogram``; ``learned_windows``
turns the histogram into two windows:

- the *prewarm window*: how long after the end of activity an instance starts again, shortly
  before the next call is expected. Until then the function's instances are not kept: they
  are stopped once its activity ends, and the memory serves others.
- the *keep-alive window*: how long an instance is kept, waiting for a call. With a prewarm
  window it counts from the prewarm; without one, from the instance's last call.

The windows are the ones that buy the most cold starts avoided for the memory they hold
(``pricing.py``): a cold start is worth ``cold_start_worth_mb_s`` MB·s of an idle instance (a
node setting), and the function's instance costs its memory as the budget counts it. So a
function is kept as long as the chance of its next call coming soon is worth its memory (a
fixed keep-alive is one of the windows considered, and never worth more), one whose idle times
are long but predictable is unloaded and prewarmed shortly before its usual next call, and one
whose calls are rare and unpredictable is not kept (0: stopped after its call). The paper's
fixed percentiles (keep-alive to the 99th) spent memory on rare calls wherever memory was
plentiful: a simulated day on 3 nodes had 52 % fewer cold starts than a fixed 10 minutes for
20 % more memory-time.

Two references. The tracker also records the *gaps* between the arrivals that begin the
function's activities. A timer's arrivals keep their period to a second, but its idle times
spread as widely as its calls' lengths do (a minute's timer whose calls take 1 to 9 s idles 51
to 59 s): when a prewarm priced on the gaps is worth more than the windows priced on the idle
times, the windows are taken from the gaps and count from the arrival that began the last
activity (``anchor="arrival"``), and ``windows_for_idle_period`` turns them, once the activity
ends, into windows counted from that end. An activity that ends less than ``MIN_PREWARM_S``
before the prewarm keeps its instance.

A prewarm window under ``MIN_PREWARM_S`` is none, and an instance kept at all is kept at least
``MIN_KEEP_ALIVE_S``, or its function's ``keep_alive_s`` when that is shorter. The windows are
the function's, not an instance's: its most recently used instance follows them, and an
instance a peak or ``concurrency`` added is kept after its own last call the learned window
held between the fixed default and 1.5 times it (``extra_windows``: the histogram does not see
how often a second instance is needed), unless a prewarm window stops every instance at the
end of the activity; a prewarm starts one instance.

A histogram says little with few samples (unless they are tight: ``MIN_TIGHT_SAMPLES``); the
function then gets the fixed default: its ``keep_alive_s`` and no prewarm, exactly as
``--keep-alive-policy fixed`` (``fixed_windows``).

The windows are taken from the idle times seen in the bins, not from the bins' edges: a timer
called every 5 minutes has idle times just under 300 s, in the bin [240, 300); its edge would
start the prewarm more than a minute early, and in a full node an instance idle that long, not
yet called, is among the first evicted (simulated day, one node: the 5-minute timers were cold
at nearly every call).

Bins. The paper uses 1-minute bins up to 4 hours. Ours are the same above a minute, and 1 s
wide below it: with 1-minute bins every idle time under a minute falls in one bin, so a timer
function called every 30-60 s could never be prewarmed to the second, and its keep-alive after
a prewarm could not be shorter than a minute.

History that travels. A node that starts a function warm nowhere else adopts the history the
node that served it last left with the master (``idle_summary.py``): ``IdleTracker.summary``
when the function's last instance here goes, ``IdleTracker.adopt`` when the master's answer to
the function's registration here carries one. Adopting replaces this node's histograms (its own
earlier history of the function is part of the chain the summary carries) and records the idle
time and gap of the call that brought the function here against the cluster's last activity,
not this node's (which may be hours older).

Everything here is pure: the tracker is given the time, and schedules nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tierfaas.runtime import idle_summary, policy, pricing

FINE_BIN_S = 1.0
"""The width of a bin under a minute."""
BIN_S = 60.0
"""The width of a bin from a minute on (the paper's)."""
RANGE_S = 4 * 3600.0
"""Idle times from here on are out of bounds: counted, not placed (the paper's range)."""

PREWARM_MARGIN = 0.05
"""A prewarmed instance is ready this share before the shortest idle time of the bin it is
aimed at. The paper's 10% covers its 1-minute bins; ours are at most 1 s wide under a minute,
so 5% covers the jitter of a timer, and the function's start time is subtracted on top."""
KEEP_ALIVE_MARGIN = 0.10
"""A keep-alive ends this share past the longest idle time of the bin it is taken from (the
paper's margin): the next idle time may be a little longer than any seen."""

MIN_SAMPLES = 10
"""Fewer idle times: the fixed default (a price needs a distribution to weigh). With 10, a
timer called every hour is learned after 10 hours (with 20 it never was in a day of simulation,
and each of its calls was cold), one called every minute after 10 minutes; 5 gave no fewer
cold calls on a simulated half day (3 nodes, either accounting)."""
MIN_TIGHT_SAMPLES = 3
TIGHT_SHARE = 0.1
"""From ``MIN_TIGHT_SAMPLES`` on, times that all lie within ``TIGHT_SHARE`` of the shortest
(a timer's gaps: every 15 minutes, give or take a second) are learned without waiting for
``MIN_SAMPLES``: a function called every hour would otherwise be cold for its first 10 hours
on each node, and a pattern that breaks widens the spread at its first odd time, which sends
the function back to the default until ``MIN_SAMPLES``."""
MIN_PREWARM_S = 30.0
"""A shorter prewarm window is none: stopping an instance for less than half a minute saves
little memory-time and costs a start (a fork and the function's init) each time."""
MIN_KEEP_ALIVE_S = 60.0
"""The shortest keep-alive of an instance kept at all (from the end of its activity; the
paper's 1-minute bins give 66 s): the idle times seen bound the next one only loosely, and a
function called back to back while it was learned would otherwise be kept a fraction of a
second and be cold after its first pause; the price weighs the minute like any other window.
Also the shortest of an instance kept because its activity ended too close to an
arrival-anchored prewarm (``windows_for_idle_period``)."""
EXTRA_KEEP_ALIVE_FACTOR = 1.5
"""An instance other than its function's most recently used one (a peak's) is kept at most
this many times the function's ``keep_alive_s``, however long the learned window (and at least
``keep_alive_s``, however short). A learned keep-alive is priced on the function's next call,
not on how often a second instance is needed: uncapped, the instances peaks left held more
memory-time than the learned windows saved. 1.5 is the factor at which no simulated row, on 1
or 3 nodes and any of the three seeds, holds more memory than fixed 10 min + LRU while the
1-node rows keep their 40 % fewer cold starts (docs/benchmarks.md, Capacity)."""
DECAY_AT = 200.0
"""When the histogram holds this many idle times, every count is halved: it weighs about the
last 100-200, and a changed pattern takes over within a few hundred."""

Source = Literal["learned", "default"]
Anchor = Literal["end", "arrival"]

_FINE_BINS = int(BIN_S / FINE_BIN_S)
_MINUTES = int(RANGE_S / BIN_S)
_LOWER_EDGES: tuple[float, ...] = tuple(i * FINE_BIN_S for i in range(_FINE_BINS)) + tuple(
    m * BIN_S for m in range(1, _MINUTES)
)
_UPPER_EDGES: tuple[float, ...] = (*_LOWER_EDGES[1:], RANGE_S)


EDGES: tuple[tuple[float, ...], tuple[float, ...]] = (_LOWER_EDGES, _UPPER_EDGES)
"""The bins' (lower, upper) edges, to check a summary against (``idle_summary.decode``)."""


def decode_summary(data: bytes) -> idle_summary.IdleSummary:
    """A summary another node sent (``idle_summary.decode`` against these bins); raises
    ``idle_summary.BadSummary``."""
    return idle_summary.decode(data, EDGES)


def bin_of(idle_s: float) -> int | None:
    """The index of the bin ``idle_s`` falls in (None: out of bounds)."""
    if idle_s < BIN_S:
        return int(max(0.0, idle_s) / FINE_BIN_S)
    if idle_s < RANGE_S:
        return _FINE_BINS - 1 + int(idle_s / BIN_S)
    return None


class IdleHistogram:
    """The idle times of one function on this node: 1 s bins under a minute, 1-minute bins
    up to ``RANGE_S``, and a count of those past it. Counts are floats: they are halved at
    ``DECAY_AT``."""

    __slots__ = (
        "changes",
        "counts",
        "highest",
        "in_bounds",
        "lowest",
        "out_of_bounds",
        "totals",
    )

    def __init__(self) -> None:
        self.counts = [0.0] * len(_LOWER_EDGES)
        self.totals = [0.0] * len(_LOWER_EDGES)  # the idle times in each bin, summed
        # The shortest and longest idle time seen in each bin: a 1-minute bin's edges are up
        # to a minute from the idle times it holds.
        self.lowest = list(_UPPER_EDGES)
        self.highest = list(_LOWER_EDGES)
        self.in_bounds = 0.0
        self.out_of_bounds = 0.0
        self.changes = 0  # bumped by every add: whoever caches windows compares it

    @property
    def samples(self) -> float:
        """How many idle times it holds (after decay), out-of-bounds ones included."""
        return self.in_bounds + self.out_of_bounds

    def add(self, idle_s: float) -> None:
        """Records one idle time (seconds, not negative). On every call after a gap: kept to
        a few operations, ``bin_of`` inlined."""
        if idle_s < RANGE_S:
            index = int(idle_s) if idle_s < BIN_S else _FINE_BINS - 1 + int(idle_s / BIN_S)
            self.counts[index] += 1  # FINE_BIN_S is 1
            self.totals[index] += idle_s
            self.in_bounds += 1
            self.lowest[index] = min(self.lowest[index], idle_s)
            self.highest[index] = max(self.highest[index], idle_s)
        else:
            self.out_of_bounds += 1
        self.changes += 1
        if self.in_bounds + self.out_of_bounds >= DECAY_AT:
            self.counts = [count / 2 for count in self.counts]
            self.totals = [total / 2 for total in self.totals]
            self.in_bounds /= 2
            self.out_of_bounds /= 2

    def summary(self) -> idle_summary.HistogramSummary:
        """Its non-empty bins, to travel (``idle_summary.py``)."""
        bins = tuple(
            idle_summary.Bin(i, count, self.totals[i], self.lowest[i], self.highest[i])
            for i, count in enumerate(self.counts)
            if count > 0
        )
        return idle_summary.HistogramSummary(bins, self.out_of_bounds)

    def load(self, summary: idle_summary.HistogramSummary) -> None:
        """Replaces its idle times with ``summary``'s (``changes`` is bumped)."""
        self.counts = [0.0] * len(_LOWER_EDGES)
        self.totals = [0.0] * len(_LOWER_EDGES)
        self.lowest = list(_UPPER_EDGES)
        self.highest = list(_LOWER_EDGES)
        for b in summary.bins:
            self.counts[b.index] = b.count
            self.totals[b.index] = b.total
            self.lowest[b.index] = b.lowest
            self.highest[b.index] = b.highest
        self.in_bounds = math.fsum(self.counts)
        self.out_of_bounds = summary.out_of_bounds
        self.changes += 1

    def tight(self) -> bool:
        """Every time in bounds lies within ``TIGHT_SHARE`` of the shortest, and none past."""
        if self.out_of_bounds or self.in_bounds <= 0:
            return False
        held = [i for i, count in enumerate(self.counts) if count]
        shortest, longest = self.lowest[held[0]], self.highest[held[-1]]
        return longest - shortest <= TIGHT_SHARE * shortest

    def _percentile_index(self, share: float) -> int:
        wanted = share * self.in_bounds
        total = 0.0
        for index, count in enumerate(self.counts):
            total += count
            if count and total >= wanted * (1 - 1e-9):
                return index
        return len(self.counts) - 1

    def bins(self) -> pricing.Bins:
        """Its bins, for ``pricing.best_windows``."""
        return pricing.Bins(self.counts, self.totals, self.lowest, self.highest, self.out_of_bounds)

    def percentile_bin(self, share: float) -> tuple[float, float]:
        """(lower, upper) edges of the bin holding the ``share`` percentile of the idle times
        in bounds. Needs at least one in bounds."""
        index = self._percentile_index(share)
        return _LOWER_EDGES[index], _UPPER_EDGES[index]


@dataclass(frozen=True, slots=True)
class Windows:
    """What a function's instances on this node are kept for.

    ``prewarm_s`` 0: an instance is stopped ``keep_alive_s`` after its last call. Else the
    function's instances are stopped once its activity ends, one starts ``prewarm_s`` after
    that end (if none is there), and it is stopped ``keep_alive_s`` after it started unless a
    call came. ``reason``: why the fixed default applies, or what the learned windows were
    priced at (shown as ``keep_alive_reason``)."""

    keep_alive_s: float
    prewarm_s: float = 0.0
    source: Source = "default"
    reason: str = ""
    anchor: Anchor = "end"


def fixed_windows(keep_alive_s: float, reason: str = "fixed policy") -> Windows:
    """The fixed default: the function's ``keep_alive_s`` after each call, no prewarm."""
    return Windows(keep_alive_s=keep_alive_s, reason=reason)


def learned_windows(
    histogram: IdleHistogram,
    keep_alive_s: float,
    start_s: float | None = None,
    gaps: IdleHistogram | None = None,
    *,
    memory_mb: float,
    worth_mb_s: float,
) -> Windows:
    """The windows that buy the most cold starts avoided for the memory they hold, a cold
    start being worth ``worth_mb_s`` MB·s of an instance of ``memory_mb`` (``pricing.py``), or
    ``fixed_windows(keep_alive_s)`` while the history is too short (see the module's doc).
    ``start_s``: how long the function's last start here took (a prewarm starts that much
    earlier). ``gaps``: the times from the arrival that began each activity to the arrival
    that began the next; when a prewarm counted from the arrival is worth more than the
    windows counted from the end of the activity, the windows count from the arrival
    (``anchor="arrival"``, see the module's doc)."""
    options: list[tuple[pricing.Choice, Anchor]] = []
    # The shortest keep-alive never exceeds the function's own: a function that declares a
    # short one is released that soon unless the price keeps it longer.
    min_keep_s = min(MIN_KEEP_ALIVE_S, keep_alive_s)
    reason = _too_short(histogram)
    if not reason:
        options.append((_priced(histogram, memory_mb, worth_mb_s, start_s, min_keep_s), "end"))
    if gaps is not None and not _too_short(gaps):
        by_arrival = _priced(gaps, memory_mb, worth_mb_s, start_s, min_keep_s)
        if by_arrival.prewarm_s > 0:
            options.append((by_arrival, "arrival"))
    if not options:
        return fixed_windows(keep_alive_s, reason)
    # The end first: of two of equal value, the one that needs no arrival to count from.
    choice, anchor = max(options, key=lambda option: option[0].value)
    explained = (
        f"priced: catches {choice.caught:.0%} of idle periods, "
        f"holds {choice.held_mb_s:,.0f} MB·s each"
    )
    if choice.prewarm_s > 0:
        return Windows(
            keep_alive_s=choice.until_s - choice.prewarm_s,
            prewarm_s=choice.prewarm_s,
            source="learned",
            reason=explained,
            anchor=anchor,
        )
    return Windows(keep_alive_s=choice.until_s, source="learned", reason=explained)


def _too_short(histogram: IdleHistogram) -> str:
    """Why ``histogram``'s history is too short to price windows on (empty: it is not)."""
    samples = histogram.samples
    if samples < MIN_SAMPLES and not (samples >= MIN_TIGHT_SAMPLES and histogram.tight()):
        return f"{samples:.0f} idle times, fewer than {MIN_SAMPLES}"
    return ""


def _priced(
    histogram: IdleHistogram,
    memory_mb: float,
    worth_mb_s: float,
    start_s: float | None,
    min_keep_s: float,
) -> pricing.Choice:
    return pricing.best_windows(
        histogram.bins(),
        memory_mb,
        worth_mb_s,
        start_s=start_s or 0.0,
        keep_margin=KEEP_ALIVE_MARGIN,
        prewarm_margin=PREWARM_MARGIN,
        min_prewarm_s=MIN_PREWARM_S,
        min_keep_s=min_keep_s,
    )


def windows_for_idle_period(windows: Windows, began: float, ended: float) -> Windows:
    """The windows of one idle period, counted from its start ``ended`` (the end of the
    activity that an arrival at ``began`` opened): ``windows`` themselves unless they count
    from the arrival. Then the prewarm falls ``prewarm_s`` after ``began`` and the keep-alive
    ends ``keep_alive_s`` after that; an activity that ran so long that less than
    ``MIN_PREWARM_S`` remains before the prewarm keeps its instance instead, until the
    keep-alive ends (at least ``MIN_KEEP_ALIVE_S`` after ``ended``)."""
    if windows.anchor != "arrival":
        return windows
    prewarm = began + windows.prewarm_s - ended
    until = prewarm + windows.keep_alive_s
    if prewarm >= MIN_PREWARM_S:
        return Windows(keep_alive_s=windows.keep_alive_s, prewarm_s=prewarm, source="learned")
    return Windows(keep_alive_s=max(until, MIN_KEEP_ALIVE_S), source="learned")


def extra_windows(windows: Windows, keep_alive_s: float) -> Windows:
    """The windows of an idle instance other than its function's most recently used one (an
    instance a peak or ``concurrency`` added): the histogram sees only the gaps in the
    function's whole activity, not how often it needs a second instance, so a learned
    keep-alive without a prewarm applies to it only between the fixed default ``keep_alive_s``
    and ``EXTRA_KEEP_ALIVE_FACTOR`` times it; under memory pressure the eviction policy decides
    (FaasCache: keep-alive is caching). With a prewarm window every instance goes when the
    activity ends (``reap_due``)."""
    if windows.source != "learned" or windows.prewarm_s:
        return windows
    if windows.keep_alive_s <= keep_alive_s:
        return fixed_windows(keep_alive_s, "an extra instance: the fixed default")
    longest = EXTRA_KEEP_ALIVE_FACTOR * keep_alive_s
    if windows.keep_alive_s <= longest:
        return windows
    return Windows(
        keep_alive_s=longest,
        source="learned",
        reason=f"an extra instance: at most {EXTRA_KEEP_ALIVE_FACTOR:g} x the fixed default",
    )


def copy_windows(keep_alive_s: float) -> Windows:
    """The windows of a copy: an idle instance on a node that holds no history of its
    function (the fixed default would apply) while the function is warm on another node, the
    one that carries its history and learned windows. A call that lands here is forwarded to
    that instance, so the copy's idle time avoids a cold start only when that one is busy, and
    kept the fixed default it held memory beside a function whose learned windows stop its
    instance at the end of each activity (and it kept that node from prewarming it). So it is
    kept ``MIN_KEEP_ALIVE_S`` after its last call (or the function's ``keep_alive_s`` when
    shorter), as briefly as any kept instance; the function's last warm instance in the
    cluster keeps the default. It trades a few cold calls for the memory the copies held
    (docs/benchmarks.md, Capacity, "Copies beside the history")."""
    return Windows(
        keep_alive_s=min(MIN_KEEP_ALIVE_S, keep_alive_s),
        reason="a copy: the function is warm on another node",
    )


def reap_due(
    windows: Windows, *, now: float, last_used: float, served: bool, function_idle: bool
) -> bool:
    """Whether an idle instance is stopped now. ``last_used``: its last call's end, or its
    start; ``served``: it served a call since it started; ``function_idle``: no call of its
    function is in flight here. With a prewarm window, an instance that served goes as soon
    as the function's activity ends (the next call is not due before the prewarm); any other
    goes ``keep_alive_s`` after ``last_used`` (an extra instance beyond the first included:
    calls prefer the most recently used, so one no longer needed goes idle first)."""
    if windows.prewarm_s > 0 and served and function_idle:
        return True
    return policy.idle_expired(now, last_used, windows.keep_alive_s)


class IdleTracker:
    """Whether a function has calls in flight on this node, since when it has none, and the
    histograms of its idle times and of the gaps between the arrivals that begin its
    activities. The pool tells it of every call's arrival and end, and of the function going
    warm here (``went_warm``), after which it may adopt the cluster's history (``adopt``)."""

    __slots__ = (
        "active",
        "began",
        "gaps",
        "histogram",
        "idle_since",
        "warm_arrival",
        "warm_at",
    )

    def __init__(self) -> None:
        self.histogram = IdleHistogram()
        self.gaps = IdleHistogram()
        self.active = 0  # calls in flight (queued or running)
        self.idle_since: float | None = None  # None: no call ended here yet
        self.began: float | None = None  # the arrival that began the last activity
        # Since the function last went warm here, until a history is adopted: when it did
        # (None: no adoption pending), and the arrival of the activity that brought it here
        # (None: a prewarm or a pin, no call).
        self.warm_at: float | None = None
        self.warm_arrival: float | None = None

    def arrived(self, now: float) -> None:
        """A call arrived: after a time with none in flight, that idle time is recorded, and
        the gap since the arrival that began the activity before."""
        if self.active == 0:
            if self.idle_since is not None:
                if self.began is not None:
                    self.gaps.add(max(0.0, now - self.began))
                self.histogram.add(max(0.0, now - self.idle_since))
            self.began = now
        self.active += 1

    def ended(self, now: float) -> bool:
        """A call ended (answered or failed); true if it was the last in flight."""
        self.active -= 1
        if self.active:
            return False
        self.idle_since = now
        return True

    def went_warm(self, now: float) -> None:
        """The function's first instance here is starting: a history may be adopted for it
        until the next ``went_warm``."""
        self.warm_at = now
        self.warm_arrival = self.began if self.active else None

    def hand_off(self) -> None:
        """Its history left with the function's last instance here (``summary``): it now
        lives with the master, and comes back with the function's next registration here
        unless another node's takes it first. Forgetting it here keeps a copy of the function
        started here while it is warm elsewhere from keeping it on a stale history (the fixed
        default applies until it learns its own)."""
        changes = self.histogram.changes + 1  # whoever caches windows sees a change
        self.histogram = IdleHistogram()
        self.histogram.changes = changes
        self.gaps = IdleHistogram()
        self.idle_since = self.began = None

    def summary(self, now: float) -> idle_summary.IdleSummary:
        """Its history, to travel: the histograms, and how long before ``now`` the last
        activity here ended and began."""
        return idle_summary.IdleSummary(
            self.histogram.summary(),
            self.gaps.summary(),
            None if self.idle_since is None or self.active else max(0.0, now - self.idle_since),
            None if self.began is None else max(0.0, now - self.began),
        )

    def adopt(self, summary: idle_summary.IdleSummary, now: float) -> bool:
        """Takes over the history another node left (received at ``now``), once per time the
        function went warm here; false if none is pending. The histograms become the
        summary's; the call that brought the function here (if a call did) is recorded
        against the summary's last activity instead of this node's. With no call yet (a
        prewarm), the next one will be: its end and arrival become this tracker's."""
        if self.warm_at is None:
            return False
        ended = None if summary.ended_ago_s is None else now - summary.ended_ago_s
        began = None if summary.began_ago_s is None else now - summary.began_ago_s
        warm_at, arrival = self.warm_at, self.warm_arrival
        self.warm_at = self.warm_arrival = None
        self.histogram.load(summary.histogram)
        self.gaps.load(summary.gaps)
        if arrival is not None:
            # As ``arrived`` would have recorded it, had it known. An arrival before the end
            # (the function was still active elsewhere) is no idle time.
            if ended is not None and arrival >= ended:
                if began is not None:
                    self.gaps.add(max(0.0, arrival - began))
                self.histogram.add(arrival - ended)
        elif ended is not None and not self.active and (self.began is None or self.began < warm_at):
            # No call here since it went warm: the next one's idle time counts from the end.
            self.idle_since, self.began = ended, began
        return True
