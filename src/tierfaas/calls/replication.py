"""Where a call's second copy goes (pure). How copies travel: ``lane.py``.

Holders are picked by rendezvous hashing (``ranked``): every node ranks the live members for
a key the same way, so the choice needs no coordination and moves only the keys of a node
that comes or goes. An unkeyed call's holder is the top choice for its id among the members
other than the origin. A keyed call (Idempotency-Key) has a *home*, the top choice for
``(function, key)`` over all live members, which accepts it (any other node forwards the
accept there), and its holder is the second choice: when the home dies, the second choice
becomes the new home and already holds the copy, so a repeat of the key still finds it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tierfaas.topology import hrw_weight


def ranked(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` by rendezvous weight for ``key``, best first (ties: by name)."""
    return sorted(set(nodes), key=lambda n: (hrw_weight(key, n), n), reverse=True)


def holders(call_id: str, origin: str, members: Iterable[str]) -> list[str]:
    """The nodes to try, in order, for the second copy of an unkeyed call."""
    others = [m for m in members if m != origin]
    return others if len(others) < 2 else ranked(call_id, others)


def keyed_key(function: str, key: str) -> str:
    return f"{function}\x00{key}"


def keyed_homes(function: str, key: str, members: Iterable[str]) -> list[str]:
    """Every live member ranked for a keyed call: the first is its home, the next its
    holder (then the fallbacks)."""
    return ranked(keyed_key(function, key), members)
