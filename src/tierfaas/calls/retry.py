"""When an asynchronous call is tried again: the retry decision, pure and deterministic.

A call is retried only when trying again can help: on a 5xx answer (the function raised or
crashed, 500/502; it ran past its timeout, 504; the node or cluster could not run it now,
502/503). A 2xx is done and a 4xx is the caller's fault, the same on every attempt, so
neither is retried. The delay before the next attempt is exponential with *full jitter*
(a uniform draw in ``[0, min(cap, base * 2**(attempt-1)))``, as in the AWS architecture
blog's "Exponential Backoff And Jitter"): retries of many calls that failed together spread
out instead of hammering a recovering function in waves. The random number is injected, so
the decision is a pure function and tests pin it down.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RETRIES_RANGE = (0, 20)
"""The manifest's ``max_retries`` bounds: 0 (one attempt) to 20 (21 attempts)."""


def retryable(status: int) -> bool:
    """Whether an attempt that ended with HTTP ``status`` is worth another: 5xx (500, and
    the node-level 502/503/504 among them), never 2xx/3xx/4xx."""
    return 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a call is tried again. ``max_retries`` retries follow the first
    attempt (``max_retries + 1`` attempts in all); ``base_s`` and ``cap_s`` bound the
    exponential backoff, in seconds."""

    max_retries: int = 2
    base_s: float = 1.0
    cap_s: float = 300.0

    def __post_init__(self) -> None:
        low, high = MAX_RETRIES_RANGE
        if not low <= self.max_retries <= high:
            raise ValueError(f"max_retries {self.max_retries} is outside {low}..{high}")
        if not 0.0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s ({self.base_s}) <= cap_s ({self.cap_s})")

    @property
    def max_attempts(self) -> int:
        """Attempts in all, the first included."""
        return self.max_retries + 1

    def ceiling_s(self, attempt: int) -> float:
        """The backoff bound after attempt ``attempt`` (1-based): ``min(cap, base *
        2**(attempt-1))``; the delay is drawn below it."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        # 2**(attempt-1) grows past any cap in a few dozen steps: stop doubling there.
        doublings = min(attempt - 1, 64)
        return min(self.cap_s, self.base_s * float(2**doublings))

    def delay_s(self, attempt: int, status: int, draw: float) -> float | None:
        """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) ended
        with HTTP ``status``; None: no retry (a 2xx/4xx, or the last attempt). ``draw`` in
        [0, 1) is the jitter's random number (injected: tests are deterministic)."""
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"draw {draw!r} is outside [0, 1)")
        ceiling = self.ceiling_s(attempt)
        if not retryable(status) or attempt >= self.max_attempts:
            return None
        return draw * ceiling
