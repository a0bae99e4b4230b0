"""One publisher, many independent event subscriptions, none of which can grow without bound.

A subscriber that falls more than ``maxsize`` events behind loses its backlog and reads one
``Resync`` with the current members instead: the view it rebuilds is the same, and a stalled
consumer can never exhaust the node's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from tierfaas.membership.base import MemberInfo, MembershipEvent, Resync


class Subscription:
    """An async iterator of events for one consumer."""

    def __init__(self, owner: EventFanout) -> None:
        self._owner = owner
        self._items: deque[MembershipEvent] = deque()
        self._wakeup = asyncio.Event()
        self._lost = False
        self._closed = False

    def _push(self, event: MembershipEvent) -> None:
        if len(self._items) >= self._owner.maxsize:
            self._items.clear()
            self._lost = True
        else:
            self._items.append(event)
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    @property
    def pending(self) -> int:
        """Events queued for this consumer and not read yet."""
        return len(self._items) + (1 if self._lost else 0)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MembershipEvent:
        while True:
            if self._lost:
                self._lost = False
                return Resync(tuple(self._owner.snapshot()))
            if self._items:
                return self._items.popleft()
            if self._closed:
                self._owner.discard(self)
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        """Stops this subscription; the publisher forgets it."""
        self._close()
        self._owner.discard(self)


class EventFanout:
    """Delivers each published event to every current subscription, in order."""

    def __init__(self, snapshot: Callable[[], list[MemberInfo]], maxsize: int = 1024) -> None:
        self.snapshot = snapshot
        self.maxsize = maxsize
        self._subs: list[Subscription] = []
        self._closed = False

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        if self._closed:
            sub._close()
        else:
            self._subs.append(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: MembershipEvent) -> None:
        for sub in list(self._subs):
            sub._push(event)

    @property
    def pending(self) -> int:
        """Events not yet read, summed over subscribers (tests wait for it to reach 0)."""
        return sum(s.pending for s in self._subs)

    def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub._close()
