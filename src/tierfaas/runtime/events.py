"""What the runtime reports about its instances, for the control plane and the metrics.

``FunctionWarm`` / ``FunctionCold`` mark a function gaining its first instance on this node and
losing its last: they become ``Register`` / ``Unregister`` calls to the master. The per-instance
events feed metrics and the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InstanceStarted:
    function: str
    instance_id: int
    pid: int
    start_s: float


@dataclass(frozen=True, slots=True)
class InstanceStopped:
    function: str
    instance_id: int
    reason: str  # "idle", "evicted", "crashed", "timeout", "out_of_memory", "shutdown"


@dataclass(frozen=True, slots=True)
class FunctionWarm:
    function: str


@dataclass(frozen=True, slots=True)
class FunctionCold:
    """``history``: the function's idle history here (``idle_summary.encode``; empty when
    the node does not learn windows), which the Unregister carries to the master so that the
    node that starts the function next adopts it."""

    function: str
    # Not part of the event's identity (tests compare events by function).
    history: bytes = field(default=b"", compare=False, repr=False)


RuntimeEvent = InstanceStarted | InstanceStopped | FunctionWarm | FunctionCold
EventListener = Callable[[RuntimeEvent], None]
