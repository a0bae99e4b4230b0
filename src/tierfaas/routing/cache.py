"""The local route cache: function -> warm nodes, bounded (LRU) and short-lived (TTL).

A hit costs no network; a miss asks the replica. Entries are hints, never truth: a stale one
costs a forward that the target refuses ("not warm"), after which the sender drops it. When
gossip says a node is dead or left, ``drop_node`` removes it from every entry at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from tierfaas.clock import Clock
from tierfaas.routing.decision import Candidate


@dataclass(frozen=True, slots=True)
class _Entry:
    candidates: tuple[Candidate, ...]
    expires: float


class RouteCache:
    def __init__(self, clock: Clock, size: int = 4096, ttl_s: float = 5.0) -> None:
        if size <= 0 or ttl_s <= 0:
            raise ValueError("route cache size and TTL must be positive")
        self.clock = clock
        self.size = size
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, function: str) -> tuple[Candidate, ...] | None:
        """The cached candidates, or None on a miss (absent or expired)."""
        entry = self._entries.get(function)
        if entry is None or entry.expires <= self.clock():
            if entry is not None:
                del self._entries[function]
            self.misses += 1
            return None
        self._entries.move_to_end(function)
        self.hits += 1
        return entry.candidates

    def put(
        self, function: str, candidates: tuple[Candidate, ...], ttl_s: float | None = None
    ) -> None:
        """Caches ``candidates`` for ``ttl_s`` (default: the cache's TTL). Callers cache an
        empty answer for less time, so a function that turns warm elsewhere is seen soon."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        self._entries[function] = _Entry(candidates, self.clock() + ttl)
        self._entries.move_to_end(function)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, function: str, node: str) -> None:
        """Forgets that ``node`` is warm for ``function`` (it said it is not)."""
        entry = self._entries.get(function)
        if entry is None:
            return
        kept = tuple(c for c in entry.candidates if c.node != node)
        self._entries[function] = replace(entry, candidates=kept)

    def note_load(self, function: str, node: str, load: float) -> None:
        """Records the load ``node`` reported in its last answer for ``function``."""
        entry = self._entries.get(function)
        if entry is None:
            return
        updated = tuple(Candidate(c.node, load) if c.node == node else c for c in entry.candidates)
        self._entries[function] = replace(entry, candidates=updated)

    def drop_node(self, node: str) -> None:
        """Removes a node that gossip says is dead or left from every entry."""
        for function in list(self._entries):
            self.drop(function, node)

    def __len__(self) -> int:
        return len(self._entries)
