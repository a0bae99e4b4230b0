"""The local route cache: function -> warm nodes, bounded (LRU) and short-lived (TTL).

A hit costs no network; a miss asks the replica. Entries are hints, never truth: a stale one
costs a forward that the target refuses ("not warm"), after which the sender drops it. When
gossip says a node is suspect, dead or left, ``drop_node`` removes it from every entry at
once. An entry left empty by a drop (a refusal, a suspicion) expires as soon as an empty
answer would (``empty_ttl_s``): it says "warm nowhere" no more surely than such an answer, and
kept for the full TTL it would start the function here for seconds while it is warm elsewhere.
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


EMPTY_TTL_S = 0.05
"""Seconds an empty entry is trusted unless told otherwise (the router's ``NEGATIVE_TTL_S``)."""


class RouteCache:
    def __init__(
        self, clock: Clock, size: int = 4096, ttl_s: float = 5.0, empty_ttl_s: float = EMPTY_TTL_S
    ) -> None:
        if size <= 0 or ttl_s <= 0 or empty_ttl_s <= 0:
            raise ValueError("route cache size and TTLs must be positive")
        self.clock = clock
        self.size = size
        self.ttl_s = ttl_s
        self.empty_ttl_s = empty_ttl_s
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

    def peek(self, function: str) -> tuple[Candidate, ...] | None:
        """The cached candidates, or None when absent or expired, without counting a hit or a
        miss or refreshing the entry's place (the eviction order's read, not a route's)."""
        entry = self._entries.get(function)
        if entry is None or entry.expires <= self.clock():
            return None
        return entry.candidates

    def put(
        self, function: str, candidates: tuple[Candidate, ...], ttl_s: float | None = None
    ) -> None:
        """Caches ``candidates`` for ``ttl_s`` (default: the cache's TTL, or ``empty_ttl_s``
        for no candidates: a function that turns warm elsewhere is seen soon)."""
        default = self.ttl_s if candidates else self.empty_ttl_s
        ttl = default if ttl_s is None else ttl_s
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
        if len(kept) == len(entry.candidates):
            return
        expires = entry.expires
        if not kept:  # now an empty answer: trusted no longer than one
            expires = min(expires, self.clock() + self.empty_ttl_s)
        self._entries[function] = _Entry(kept, expires)

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
