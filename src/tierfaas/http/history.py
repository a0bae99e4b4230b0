"""The dashboard's recent rates, kept server-side so a page opened now draws curves at once.

Each point is one sample of the cluster as the dashboard computes it (rates over the interval
since its previous sample): the cluster's totals, each node's and each function's. The ring
keeps the points of the last ``window_s`` seconds of the serving node's monotonic clock, and
at most one point per ``spacing_s``: several pages watching one node poll it each second, and
their samples must not crowd the curve (nor grow the ring past ``window_s / spacing_s``).

Points carry a sequence number: a page asks for the points after the last one it has
(``since``), which a wall-clock step can not confuse; a ``since`` the ring does not know (the
node restarted, or the page is older than the window) gets every point, marked ``full``, so
the page replaces its copy. The dashboard samples while it is viewed and for a window after
(``dashboard.LINGER_S``): a longer time nobody watched is a gap in the curve, not a line drawn
across it. Pure: times are given.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

WINDOW_S = 900.0
"""How far back the dashboard's curves reach (15 minutes): 900 points of a few hundred
bytes each at most, held by the node that serves the page."""
SPACING_S = 0.9
"""The least time between two points: just under the pages' one-second poll, so a page's
points are about a second apart however the polls of several pages interleave."""


@dataclass(frozen=True, slots=True)
class Point:
    seq: int
    at: float
    """Seconds of the serving node's monotonic clock: what the window is measured on."""
    values: dict[str, Any]
    """What the page draws: ``t`` (Unix time, to label the axis) and the rates."""

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.values}


class History:
    """A bounded ring of the dashboard's samples (see the module's docstring)."""

    def __init__(self, window_s: float = WINDOW_S, spacing_s: float = SPACING_S) -> None:
        self.window_s = window_s
        self.spacing_s = spacing_s
        self.points: deque[Point] = deque()
        self.last_seq = 0

    def add(self, at: float, values: dict[str, Any]) -> bool:
        """Keeps ``values`` as the point of time ``at`` (monotonic seconds) unless the last
        point is less than ``spacing_s`` older; drops the points older than ``window_s``.
        Returns whether it was kept."""
        if self.points and at - self.points[-1].at < self.spacing_s:
            if at >= self.points[-1].at:
                return False
            self.points.clear()  # the clock went back: not the clock these points are on
        self.last_seq += 1
        self.points.append(Point(self.last_seq, at, values))
        while self.points[0].at < at - self.window_s:
            self.points.popleft()
        return True

    def since(self, seq: int | None) -> tuple[bool, list[dict[str, Any]]]:
        """(full, points): the points after ``seq``, oldest first, or every point with
        ``full`` set when ``seq`` is None or not a point of this ring's run."""
        points = self.points
        if seq is None or seq > self.last_seq or (points and seq < points[0].seq - 1):
            return True, [p.to_json() for p in points]
        return False, [p.to_json() for p in points if p.seq > seq]

    def to_json(self, seq: int | None = None) -> dict[str, Any]:
        """The part of ``/v1/dashboard`` that holds the curves (``since``: see ``since``)."""
        full, points = self.since(seq)
        return {"window_s": self.window_s, "full": full, "points": points}


def parse_since(query: bytes) -> int | None:
    """The ``since`` (a point's sequence number) of ``GET /v1/dashboard?since=N``; None when
    absent or not a whole number (the page then gets every point, which is always right)."""
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"since" and value.isdigit() and len(value) <= 18:
            return int(value)
    return None
