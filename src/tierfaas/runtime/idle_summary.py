"""A function's idle history in a form that travels between nodes: ``IdleSummary``.

Theory of operation. Each node learns a function's windows from the idle times it sees
(``keepalive.IdleTracker``). With cold starts where a call lands (SPEC 4.5), a function that
went cold everywhere starts again wherever its next call lands, often on a node that holds
little or none of its history, while the node that served it last holds all of it. So the
history travels with the control plane: the node whose last instance of a function goes sends
this summary with its ``Unregister``; the master keeps the latest one per function
(``control/histories.py``) and hands it, in its answer to the next ``Register`` of the
function, to the node that starts it; that node adopts it (``IdleTracker.adopt``). Each
adoption carries the whole chain of earlier ones, so one summary holds the function's history
in the cluster, not one node's share of it.

A summary holds the two histograms' non-empty bins as they are (counts, the idle times summed,
the shortest and longest in each bin) and how long ago the function's last activity ended and
the arrival that began it: *durations* measured on the sender's clock when it encoded them,
aged by the master while it holds them, and turned back into times on the receiver's clock.
No absolute time crosses a node, so clocks of different nodes never mix (the error is the
time a message takes in flight).

Decoding never trusts the sender: a summary of another version, over ``MAX_SUMMARY_BYTES``,
or with a value out of range raises ``BadSummary``, and the receiver ignores it. Encoding is
msgpack: ``[version, ended_ago, began_ago, histogram, gaps]``, each histogram ``[out of
bounds, [[bin, count, total, lowest, highest], ...]]``. A full summary (every bin of both
histograms used) is about 23 KiB; on a simulated day (3 nodes, 200 functions) the median sent
was 726 bytes and the largest 7.1 KiB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from tierfaas.errors import TierfaasError

VERSION = 1
"""The summary's format; a receiver ignores any other (a rollout of a changed format loses the
histories in flight, which are soft state)."""
MAX_SUMMARY_BYTES = 32 * 1024
"""The largest summary sent or accepted: above a full one (both histograms' 299 bins used)."""
_EDGE_SLACK = 1e-6


class BadSummary(TierfaasError, ValueError):
    """A peer sent bytes that are not a valid idle summary of this version."""


@dataclass(frozen=True, slots=True)
class Bin:
    index: int
    count: float
    total: float  # the idle times in the bin, summed
    lowest: float
    highest: float


@dataclass(frozen=True, slots=True)
class HistogramSummary:
    bins: tuple[Bin, ...]
    out_of_bounds: float


@dataclass(frozen=True, slots=True)
class IdleSummary:
    """``ended_ago_s``: how long before the summary's time the function's last activity ended
    (None: none ended yet); ``began_ago_s``: the arrival that began it, likewise."""

    histogram: HistogramSummary
    gaps: HistogramSummary
    ended_ago_s: float | None
    began_ago_s: float | None

    def aged(self, seconds: float) -> IdleSummary:
        """The same summary ``seconds`` later (the master held it that long)."""
        seconds = max(0.0, seconds)
        return IdleSummary(
            self.histogram,
            self.gaps,
            None if self.ended_ago_s is None else self.ended_ago_s + seconds,
            None if self.began_ago_s is None else self.began_ago_s + seconds,
        )


def merge(held: IdleSummary, new: IdleSummary) -> IdleSummary:
    """One summary of a function from two nodes' (``held`` aged to the time ``new`` was
    made): the histograms of the one that holds more idle times (the node that carried the
    function's history, not a copy that served it a while beside it), and the most recent end
    and arrival of either (the function's last activity in the cluster)."""
    richer = held if _samples(held) > _samples(new) else new
    return IdleSummary(
        richer.histogram,
        richer.gaps,
        _least(held.ended_ago_s, new.ended_ago_s),
        _least(held.began_ago_s, new.began_ago_s),
    )


def _samples(summary: IdleSummary) -> float:
    histogram = summary.histogram
    return math.fsum(b.count for b in histogram.bins) + histogram.out_of_bounds


def _least(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def encode(summary: IdleSummary) -> bytes:
    """The summary's bytes (at most ``MAX_SUMMARY_BYTES`` for any valid summary)."""
    data: bytes = msgpack.packb(
        [
            VERSION,
            summary.ended_ago_s,
            summary.began_ago_s,
            _histogram_out(summary.histogram),
            _histogram_out(summary.gaps),
        ],
        use_bin_type=True,
    )
    return data


def decode(data: bytes, edges: tuple[Sequence[float], Sequence[float]]) -> IdleSummary:
    """The summary ``data`` holds, checked against the histograms' bin ``edges`` (lower,
    upper); raises ``BadSummary`` on anything else."""
    if len(data) > MAX_SUMMARY_BYTES:
        raise BadSummary(f"{len(data)} bytes, over {MAX_SUMMARY_BYTES}")
    try:
        value = msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadSummary(f"not msgpack: {exc}") from None
    if not isinstance(value, list) or not value or value[0] != VERSION:
        head = value[0] if isinstance(value, list) and value else value
        raise BadSummary(f"not a version {VERSION} summary: {str(head)[:40]}")
    if len(value) != 5:
        raise BadSummary(f"{len(value)} fields, not 5")
    _, ended, began, histogram, gaps = value
    return IdleSummary(
        _histogram_in(histogram, edges, "histogram"),
        _histogram_in(gaps, edges, "gaps"),
        _duration(ended, "ended_ago"),
        _duration(began, "began_ago"),
    )


def _histogram_out(histogram: HistogramSummary) -> list[object]:
    bins = [[b.index, b.count, b.total, b.lowest, b.highest] for b in histogram.bins]
    return [histogram.out_of_bounds, bins]


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadSummary(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise BadSummary(f"{what} is {number}")
    return number


def _duration(value: object, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _histogram_in(
    value: object, edges: tuple[Sequence[float], Sequence[float]], what: str
) -> HistogramSummary:
    lower, upper = edges
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], list):
        raise BadSummary(f"{what} is not [out_of_bounds, bins]")
    out_of_bounds = _number(value[0], f"{what} out of bounds")
    if len(value[1]) > len(lower):
        raise BadSummary(f"{what} has {len(value[1])} bins, over {len(lower)}")
    bins: list[Bin] = []
    seen: set[int] = set()
    for raw in value[1]:
        if not isinstance(raw, list) or len(raw) != 5:
            raise BadSummary(f"a bin of {what} is not [index, count, total, lowest, highest]")
        index = raw[0]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(lower):
            raise BadSummary(f"{what} has a bin index out of range")
        if index in seen:
            raise BadSummary(f"{what} has bin {index} twice")
        seen.add(index)
        count, total, lowest, highest = (_number(x, f"{what} bin {index}") for x in raw[1:])
        low, high = lower[index] - _EDGE_SLACK, upper[index] + _EDGE_SLACK
        if not (count > 0 and low <= lowest <= highest <= high):
            raise BadSummary(f"{what} bin {index} holds values outside it")
        if not count * low * (1 - 1e-9) - 1e-9 <= total <= count * high * (1 + 1e-9) + 1e-9:
            raise BadSummary(f"{what} bin {index}: its total is not of its idle times")
        bins.append(Bin(index, count, total, lowest, highest))
    return HistogramSummary(tuple(bins), out_of_bounds)
