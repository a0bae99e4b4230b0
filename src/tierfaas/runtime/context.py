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

    def remaining_s(self) -> float:
        """Seconds left before the node gives up on this call (and kills the instance)."""
        return max(0.0, self.deadline - time.time())
