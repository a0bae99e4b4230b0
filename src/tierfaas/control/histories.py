"""``HistoryStore``: the master's idle history of each function warm nowhere it knows of.

Theory of operation. When a node's last instance of a function goes, its Unregister carries
the function's idle history on that node (``runtime/idle_summary.py``). The master keeps the
latest one per function, and the next Register of the function takes it: the answer carries
it to the node that starts the function, which adopts it (``keepalive.IdleTracker.adopt``).
Taking it in the same step as the registration is what makes it go to one node, the one that
starts the function first; a node that starts it while another holds it warm gets none, and
learns from the fixed default (it handed its own history off when its last instance went).
When two nodes had the function warm, the second Unregister's summary is merged with the one
held (``idle_summary.merge``): the richer histograms (the node that carried the history, not a
copy beside it) and the later end.

A summary holds durations (how long before it was sent the function's activity ended), never
a node's clock; the store ages them by the time it held the summary, on the master's clock,
when it hands one out. It checks every summary when it stores it (one that does not decode is
refused and counted, and the Unregister it came with is applied all the same) and bounds what
it holds (``MAX_HISTORIES``, ``MAX_HISTORIES_BYTES``: the least recently stored go first).

Soft state: the store lives with the master's table, and a failover or a demotion loses it.
The functions then learn their windows again from the calls their nodes serve, as they did
before histories travelled.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from tierfaas.clock import Clock
from tierfaas.control.constants import MAX_HISTORIES, MAX_HISTORIES_BYTES
from tierfaas.runtime import idle_summary, keepalive


@dataclass(frozen=True, slots=True)
class _Held:
    data: bytes
    received_at: float  # the master's clock


class HistoryStore:
    """function -> its latest idle summary, bounded (see the module's doc)."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_entries: int = MAX_HISTORIES,
        max_bytes: int = MAX_HISTORIES_BYTES,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.bytes = 0
        self.refused = 0  # summaries that did not decode
        self.dropped = 0  # summaries dropped to stay within the bounds

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, function: str) -> bool:
        return function in self._held

    def put(self, function: str, data: bytes) -> bool:
        """Keeps ``data`` as ``function``'s history (replacing any it held); false, and
        nothing changes, if it is not a valid summary."""
        try:
            summary = keepalive.decode_summary(data)
        except idle_summary.BadSummary:
            self.refused += 1
            return False
        now = self._clock()
        held = self._held.get(function)
        if held is not None:
            older = keepalive.decode_summary(held.data).aged(now - held.received_at)
            data = idle_summary.encode(idle_summary.merge(older, summary))
        self.drop(function)
        self._held[function] = _Held(bytes(data), now)
        self.bytes += len(data)
        while len(self._held) > self._max_entries or self.bytes > self._max_bytes:
            _, oldest = self._held.popitem(last=False)
            self.bytes -= len(oldest.data)
            self.dropped += 1
        return True

    def take(self, function: str) -> bytes | None:
        """``function``'s history, aged by the time it was held here, which the store no
        longer holds; None if it held none."""
        held = self._held.pop(function, None)
        if held is None:
            return None
        self.bytes -= len(held.data)
        summary = keepalive.decode_summary(held.data)
        return idle_summary.encode(summary.aged(self._clock() - held.received_at))

    def drop(self, function: str) -> None:
        """Forgets ``function``'s history (if it held one)."""
        held = self._held.pop(function, None)
        if held is not None:
            self.bytes -= len(held.data)
