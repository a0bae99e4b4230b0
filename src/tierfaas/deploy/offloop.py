"""Blocking calls off the event loop, each kind at most once in flight, each with a bound.

The registry is a folder, often a shared volume (NFS, a Kubernetes volume) whose reads can
stall for seconds. A read made on the event loop would stall the node with it: no request
answered, no gossip probe acknowledged, and the others would declare the master dead over a
slow disk (issue 17.5). So the master makes every registry call here, in a thread of a small
executor of its own (a stalled call never takes a thread another part of the node needs).

``timeout_s`` bounds the wait, not the call: a thread blocked in the kernel cannot be
interrupted, so a call that times out keeps its thread until the volume answers. While it
does, a new call of the same *kind* fails at once with ``Stalled`` instead of starting
another thread, so a stalled volume holds at most one thread per kind, never a pile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Stalled(Exception):
    """A blocking call did not finish within its bound, or one of its kind still hangs."""


class BoundedCalls:
    """``await run(kind, fn, *args)`` runs ``fn(*args)`` in a thread, bounded."""

    def __init__(self, timeout_s: float, *, max_threads: int = 8, name: str = "offloop") -> None:
        self.timeout_s = timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(max_threads, name)
        self._in_flight: dict[str, asyncio.Future[Any]] = {}
        self.stalls = 0  # calls that timed out or found their kind still in flight

    def in_flight(self, kind: str) -> bool:
        return kind in self._in_flight

    async def run(self, kind: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``'s result or exception; ``Stalled`` if it takes over ``timeout_s`` or
        a call of ``kind`` is still running."""
        if kind in self._in_flight:
            self.stalls += 1
            raise Stalled(f"{kind}: the previous call has not returned yet")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        self._in_flight[kind] = future

        def done(_: asyncio.Future[Any]) -> None:
            if self._in_flight.get(kind) is future:
                del self._in_flight[kind]

        future.add_done_callback(done)
        try:
            result: T = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            self.stalls += 1
            # The thread runs on; retrieve its outcome so none is reported as never retrieved.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise Stalled(f"{kind}: no answer within {self.timeout_s:g} s") from None
        return result

    def close(self) -> None:
        """Frees the executor without waiting for a call that hangs."""
        self._executor.shutdown(wait=False, cancel_futures=True)
