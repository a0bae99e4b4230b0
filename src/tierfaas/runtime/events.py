"""What the runtime reports about its instances, for the control plane and the metrics.

``FunctionWarm`` / ``FunctionCold`` mark a function gaining its first instance on this node and
losing its last: they become ``Register`` / ``Unregister`` calls to the master. The per-instance
events feed metrics and the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
    function: str


RuntimeEvent = InstanceStarted | InstanceStopped | FunctionWarm | FunctionCold
EventListener = Callable[[RuntimeEvent], None]
