"""The cluster as one cache, in eviction (issue 19.4): duplicates go first.

When a node must evict an idle instance to make room, one whose function is also warm on
another node costs the cluster the least: the function's calls still find a warm instance,
one forward away. So among the candidates for eviction, in whatever order the node's policy
ranks them (least recently used, or by value), those whose function is warm elsewhere come
first, in that same order, and the others after them. Pure: the caller says where a function
is warm (``warm_elsewhere``: the router's cached routes, cheap and possibly stale; a wrong
answer costs one cold start somewhere, never a call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

WarmElsewhere = Callable[[str], bool]
"""Whether a function (by name) is warm on another node, as far as this node knows."""


def duplicates_first(
    ranked: Iterable[T], function_of: Callable[[T], str], warm_elsewhere: WarmElsewhere
) -> list[T]:
    """``ranked`` (eviction candidates, first to evict first) with the ones whose function is
    warm on another node moved to the front; a stable partition, so each part keeps the
    policy's order. ``warm_elsewhere`` is asked once per function."""
    answers: dict[str, bool] = {}
    duplicated: list[T] = []
    alone: list[T] = []
    for item in ranked:
        function = function_of(item)
        elsewhere = answers.get(function)
        if elsewhere is None:
            elsewhere = answers[function] = warm_elsewhere(function)
        (duplicated if elsewhere else alone).append(item)
    return duplicated + alone
