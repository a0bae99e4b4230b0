"""Waiting for a real cluster to reach a state, with a bound (for end-to-end tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# What a check may raise while the cluster is still getting there (a node not answering yet,
# a view without the expected key, a partial assertion): retried, not fatal.
RETRIED = (OSError, RuntimeError, KeyError, AssertionError, ValueError)


def eventually(check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Returns ``check()`` once it is truthy without raising; ``AssertionError`` after
    ``timeout`` seconds, with the last value or error in the message."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except RETRIED as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s; last: {last!r}")
        time.sleep(interval)
