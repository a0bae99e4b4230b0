"""The holder's side of asynchronous calls, and the origin's side of the restart claim.

A holder keeps the second copies other nodes send it (``take_copies``) and marks them as
their origin records them (``take_outcomes``). When the ClusterManager reports an origin's
run dead or left, the holder turns that origin's unfinished copies into its own calls
(``take_over``; ``takeover.orphans`` decides which), unless a newer run of the origin is live
or has claimed them back (``claim``). A node that restarts with unfinished calls asks their
holders which they took over (``claim_back``) and drops those.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from tierfaas.calls import ids, takeover
from tierfaas.calls.logstore import Store
from tierfaas.calls.model import Call, as_copy
from tierfaas.calls.ports import Peers
from tierfaas.clock import Clock

log = logging.getLogger("tierfaas.calls")

ORPHAN_GRACE_S = 30.0
"""How long after its start a holder waits before it takes over the copies of origins its
view does not hold (time for a restarting origin to come back and claim them)."""
ORPHAN_EPOCH = 2**63 - 1
"""Takes over past any claim: the origin is in no run of this node's view."""
CLAIM_WAIT_S = 10.0
"""How long a restarted node waits for a holder to appear in its view before it runs the
calls that holder might have taken over (at least once: they may then run twice)."""


class Holding:
    """``adopt(call)`` makes a taken-over call one of the node's own queued calls (already
    written as such)."""

    def __init__(
        self,
        *,
        node: str,
        store: Store,
        peers: Peers | None,
        wall: Clock,
        clock: Clock,
        adopt: Callable[[Call], None],
    ) -> None:
        self.node = node
        self.store = store
        self.peers = peers
        self.wall = wall
        self.clock = clock
        self.adopt = adopt
        self.claimed: dict[str, int] = {}
        """Origin -> the newest run that claimed its calls back from this node."""

    # -- the holder's side (RPCs from origins) -------------------------------------------------

    def take_copies(self, origin: str, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Keeps the second copies ``origin`` sent; resolves to how many were new once
        committed. A future, not a coroutine: the lane answers each frame from its done
        callback, without a task per frame."""
        copies = [call if call.role == "copy" else as_copy(call) for call in calls]
        return self.store.insert(copies)

    def take_outcomes(self, origin: str, calls: Sequence[Call]) -> asyncio.Future[int]:
        """Marks this node's copies as their origin recorded them (a final state once; a
        ``queued`` one is an operator's retry of a final call), committed before the answer:
        an origin that drains waits for it before it leaves, and its leave must not make
        this node take over a call already finished. One UPDATE per batch, no read first
        (profiled: reading each copy took a quarter of a holder's loop under load); resolves
        to the copies changed."""
        return self.store.record_outcomes(calls)

    async def claim(self, origin: str, epoch: int, call_ids: Sequence[str]) -> list[str]:
        """``ClaimCalls``: which of ``call_ids`` this node took over. Those it did not are
        given back: a late notice of the old run's end no longer takes them over."""
        self.claimed[origin] = max(epoch, self.claimed.get(origin, -1))
        taken = []
        for call_id in call_ids:
            kept = self.store.get(call_id)
            if kept is not None and kept.role == "own":
                taken.append(call_id)
        return taken

    async def take_over(self, origin: str, epoch: int) -> int:
        """Runs ``origin``'s unfinished copies as this node's own calls (its run ``epoch``
        is gone); returns how many."""
        if self.peers is not None and self.peers.newer_run(origin, epoch):
            return 0  # it is back: it claims its calls itself
        orphans = takeover.orphans(self.store.unfinished("copy"), origin, epoch, self.claimed)
        now = self.wall()
        for copy in orphans:
            own = replace(copy, role="own", node=self.node, state="queued", due_at=now)
            await self.store.update(own)
            self.adopt(own)
        if orphans:
            log.warning(
                "took over %d calls of %s (its run %d is gone)", len(orphans), origin, epoch
            )
        return len(orphans)

    # -- after a restart -----------------------------------------------------------------------

    async def adopt_orphans(self) -> None:
        """Copies whose origin died while this node was away were never announced gone to
        it: after ``ORPHAN_GRACE_S`` (time for a restarting origin to come back and claim
        them), those of an origin this node's view does not hold are taken over."""
        await asyncio.sleep(ORPHAN_GRACE_S)
        assert self.peers is not None
        origins = {ids.parse(c.call_id).origin for c in self.store.unfinished("copy")}
        for origin in sorted(origins):
            if origin != self.node and not self.peers.knows(origin):
                await self.take_over(origin, ORPHAN_EPOCH)

    async def claim_back(self, own: list[Call]) -> set[str]:
        """Asks each holder of ``own`` which calls it took over; drops those here. A holder
        that does not answer within ``CLAIM_WAIT_S``: its calls stay (logged)."""
        assert self.peers is not None
        peers = self.peers
        deadline = self.clock() + CLAIM_WAIT_S
        dropped: set[str] = set()
        for holder, call_ids in takeover.claims_by_holder(own, self.node).items():
            taken: list[str] | None = None
            while taken is None and self.clock() < deadline:
                if holder in peers.members():
                    try:
                        taken = await peers.claim(holder, self.node, peers.epoch(), call_ids)
                        break
                    except Exception as exc:
                        log.debug("claim from %s failed: %s", holder, exc)
                await asyncio.sleep(0.2)
            if taken is None:
                log.warning(
                    "holder %s did not answer the claim of %d calls: running them here "
                    "(it may run them too: at least once)",
                    holder,
                    len(call_ids),
                )
                continue
            asked = set(call_ids)
            gone = [call_id for call_id in taken if call_id in asked]
            if gone:
                await self.store.delete(gone)
                dropped.update(gone)
                log.info(
                    "%s took over %d of this node's calls while it was away", holder, len(gone)
                )
        return dropped
