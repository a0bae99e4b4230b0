"""What a handler receives beside the request body."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Context:
    """The call's facts. ``deadline`` is Unix time: the node kills the instance past it."""

    function: str
    request_id: str
    method: str = "POST"
    query: str = ""
    path: str = "/"
    """What followed ``/function/NAME`` in the URL ("/" when nothing did)."""
    headers: dict[str, str] = field(default_factory=dict)
    deadline: float = 0.0
    call_id: str | None = None
    """The async call this is (``POST /async-function/``), None for a synchronous call: an
    async call runs at least once, so effects keyed by it can be made idempotent."""
    attempt: int = 0
    """The async call's attempt, from 1; 0 for a synchronous call."""

    def remaining_s(self) -> float:
        """Seconds left before the node gives up on this call (and kills the instance)."""
        return max(0.0, self.deadline - time.time())
