"""What a holder takes over when a call's origin is gone, and what a restarted origin keeps.

Pure decisions over call ids (``ids``: each names its origin and holder):

- ``orphans``: when the ClusterManager reports the run of ``origin`` dead or left (never
  merely suspect), every unfinished copy this node holds for it becomes this node's own call,
  unless a newer run of the origin has claimed its calls back already (``claims``).
- ``claims_by_holder``: a node that restarts with its store asks each holder of its unfinished
  calls which ones it took over (``ClaimCalls``); those it drops, the holder's record being
  the call's record from then on. Calls this node itself took over earlier have no other
  holder and are simply run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tierfaas.calls import ids
from tierfaas.calls.model import Call


def orphans(
    copies: Iterable[Call], origin: str, epoch: int, claimed: Mapping[str, int]
) -> list[Call]:
    """The copies to take over now that run ``epoch`` of ``origin`` is gone: its unfinished
    copies, none if a run of ``origin`` newer than ``epoch`` claimed them back."""
    if claimed.get(origin, -1) > epoch:
        return []
    return [c for c in copies if not c.final and ids.parse(c.call_id).origin == origin]


def claims_by_holder(own: Iterable[Call], me: str) -> dict[str, list[str]]:
    """Per holder, the unfinished own calls to claim back (accepted here, copied there)."""
    claims: dict[str, list[str]] = {}
    for call in own:
        if call.final:
            continue
        parsed = ids.parse(call.call_id)
        if parsed.origin == me and parsed.holder != me:
            claims.setdefault(parsed.holder, []).append(call.call_id)
    return claims
