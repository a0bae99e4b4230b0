"""What a handler receives beside the request body."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from tierfaas.names import is_valid_name


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
    secrets_dir: str = ""
    """Where the function's secrets are ("" when it lists none): ``/var/secrets`` in the
    sandbox, the node's private folder of the function under process isolation."""

    def remaining_s(self) -> float:
        """Seconds left before the node gives up on this call (and kills the instance)."""
        return max(0.0, self.deadline - time.time())

    def secret(self, name: str) -> bytes:
        """The newest value of secret ``name``, which the function lists in its manifest
        (``secrets = [...]``), read anew on each call: a version created while the instance
        runs is seen within the node's poll (``--secrets-poll-s``). Raises ``KeyError`` for a
        secret the function does not list (or that was removed)."""
        if not self.secrets_dir or not is_valid_name(name):
            raise KeyError(f"function {self.function!r} has no secret {name!r}")
        try:
            with open(os.path.join(self.secrets_dir, name), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise KeyError(f"function {self.function!r} has no secret {name!r}") from None
