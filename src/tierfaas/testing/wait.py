"""Waiting for real processes, sockets or a cluster to reach a state, with a bound.

For integration and end-to-end tests only: a unit test drives a ``FakeClock`` instead, and
never waits. One helper for threads (``eventually``) and its twin for a running event loop
(``eventually_async``), so no test module keeps its own polling loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

# What a check may raise while the cluster is still getting there (a node not answering yet,
# a view without the expected key, a partial assertion): retried, not fatal.
RETRIED = (OSError, RuntimeError, KeyError, AssertionError, ValueError)


def _attempt(check: Callable[[], T], retried: tuple[type[BaseException], ...]) -> tuple[bool, Any]:
    """One try of ``check``: (True, its value) when truthy, else (False, the value or the
    retried error)."""
    try:
        value = check()
    except retried as exc:
        return False, exc
    return bool(value), value


def eventually(
    check: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    *,
    what: str | None = None,
    describe: Callable[[], object] | None = None,
    retried: tuple[type[BaseException], ...] = RETRIED,
) -> T:
    """Returns ``check()`` once it is truthy without raising one of ``retried``;
    ``AssertionError`` after ``timeout`` seconds, naming ``what`` was awaited and, from
    ``describe()`` or else the last value or error, why it never came."""
    deadline = time.monotonic() + timeout
    while True:
        done, last = _attempt(check, retried)
        if done:
            return cast(T, last)
        if time.monotonic() > deadline:
            detail = describe() if describe is not None else f"last: {last!r}"
            raise AssertionError(f"not true within {timeout} s: {what or 'the check'}; {detail}")
        time.sleep(interval)


async def eventually_async(check: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """``eventually`` inside a running event loop: checks between ``interval`` sleeps, so the
    loop's other tasks (servers, gossip) run meanwhile. The check itself must not block."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done, last = _attempt(check, RETRIED)
        if done:
            return cast(T, last)
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout} s; last: {last!r}")
        await asyncio.sleep(interval)
