"""Where a call's second copy goes, and how copies and outcomes travel in batches.

Holders are picked by rendezvous hashing (``ranked``): every node ranks the live members for
a key the same way, so the choice needs no coordination and moves only the keys of a node
that comes or goes. An unkeyed call's holder is the top choice for its id among the members
other than the origin. A keyed call (Idempotency-Key) has a *home*, the top choice for
``(function, key)`` over all live members, which accepts it (any other node forwards the
accept there), and its holder is the second choice: when the home dies, the second choice
becomes the new home and already holds the copy, so a repeat of the key still finds it.

``Batcher``: sends to one peer go one RPC at a time; whatever is submitted while an RPC is in
flight goes together in the next one (bounded in items and bytes), like the store's group
commit. No timer on the accept's path: a lone copy leaves at once, a burst shares round
trips. While other accepts are in flight, a copy that would start a batch waits a
millisecond for their company (a Python gRPC round trip costs ~1 ms of CPU over the two
nodes unbatched, ~0.1 ms a call in a batch of 32: measured); outcomes, which nobody waits
for, linger 50 ms before every batch, so that they share round trips at any load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tierfaas.topology import hrw_weight

log = logging.getLogger("tierfaas.calls")

T = TypeVar("T")
# A batch stays under the control API's limit for one message (2 x 4 MiB, see
# control/constants.py) with room for the framing.
MAX_BATCH_BYTES = 7 * 1024 * 1024
MAX_BATCH_ITEMS = 512


def ranked(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` by rendezvous weight for ``key``, best first (ties: by name)."""
    return sorted(set(nodes), key=lambda n: (hrw_weight(key, n), n), reverse=True)


def holders(call_id: str, origin: str, members: Iterable[str]) -> list[str]:
    """The nodes to try, in order, for the second copy of an unkeyed call."""
    return ranked(call_id, (m for m in members if m != origin))


def keyed_key(function: str, key: str) -> str:
    return f"{function}\x00{key}"


def keyed_homes(function: str, key: str, members: Iterable[str]) -> list[str]:
    """Every live member ranked for a keyed call: the first is its home, the next its
    holder (then the fallbacks)."""
    return ranked(keyed_key(function, key), members)


@dataclass(slots=True)
class _Lane(Generic[T]):
    pending: list[tuple[T, int, asyncio.Future[None]]] = field(default_factory=list)
    busy: bool = False


class Batcher(Generic[T]):
    """``await submit(peer, item)`` returns once a batch holding ``item`` reached ``peer``
    (``send`` returned), or raises what ``send`` raised for it."""

    def __init__(
        self,
        send: Callable[[str, list[T]], Awaitable[None]],
        size: Callable[[T], int],
        *,
        max_items: int = MAX_BATCH_ITEMS,
        max_bytes: int = MAX_BATCH_BYTES,
        linger_s: float = 0.0,
        company_linger_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``linger_s``: how long each batch waits for company before it leaves (0: at once;
        for what nobody waits on, like outcomes, a short linger saves round trips).
        ``company_linger_s``: the same, for a batch whose first item was submitted saying
        more are coming (other accepts in flight: under load, where a round trip costs
        more CPU than the wait costs latency; a lone accept's copy still leaves at once)."""
        self._send = send
        self._size = size
        self.linger_s = linger_s
        self.company_linger_s = company_linger_s
        self._sleep = sleep
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lanes: dict[str, _Lane[T]] = {}
        self.batches = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, peer: str, item: T, *, company: bool = False) -> asyncio.Future[None]:
        """``company``: more items are about to come (see ``company_linger_s``)."""
        lane = self._lanes.setdefault(peer, _Lane())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.pending.append((item, self._size(item), future))
        if not lane.busy:
            lane.busy = True
            linger = self.linger_s or (self.company_linger_s if company else 0.0)
            task = asyncio.get_running_loop().create_task(self._drain(peer, lane, linger))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _take(self, lane: _Lane[T]) -> list[tuple[T, int, asyncio.Future[None]]]:
        taken, total = 0, 0
        for _, size, _ in lane.pending:
            if taken and (taken >= self.max_items or total + size > self.max_bytes):
                break
            taken += 1
            total += size
        batch = lane.pending[:taken]
        del lane.pending[:taken]
        return batch

    async def _drain(self, peer: str, lane: _Lane[T], linger_s: float) -> None:
        try:
            if linger_s > 0:
                await self._sleep(linger_s)
            while lane.pending:
                if self.linger_s > 0 and linger_s == 0:
                    # Every batch lingers, not only a lane's first: under load the next one
                    # would otherwise leave as soon as the last returns, a round trip per few
                    # items (profiled: outcomes cost the origin more RPCs than copies did).
                    await self._sleep(self.linger_s)
                linger_s = 0
                batch = self._take(lane)
                error: BaseException | None = None
                try:
                    await self._send(peer, [item for item, _, _ in batch])
                    self.batches += 1
                except Exception as exc:
                    error = exc
                for _, _, future in batch:
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
        finally:
            lane.busy = False
            if not lane.pending:
                self._lanes.pop(peer, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
